using System.Diagnostics;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// The shared pieces of a guided step: timed and counted denoiser calls, validated energies, non-finite handling,
/// the trace entries and the cosine matrix. Internal: strategies are the public surface.
/// </summary>
internal sealed class StepKit
{
    private readonly GuidedStep _s;

    public StepKit(GuidedStep step)
    {
        _s = step;
        Traces = new ConditionTrace[step.Conditions.Count];
        for (int k = 0; k < Traces.Length; k++)
        {
            var c = step.Conditions[k];
            Traces[k] = new ConditionTrace { Name = c.Name, Active = c.Schedule.EffectiveWindow.IsActive(step.Timesteps.T) };
            step.Trace.Conditions.Add(Traces[k]);
        }
    }

    public ConditionTrace[] Traces { get; }

    public int T => _s.Timesteps.T;

    /// <summary>Indices of the conditions whose window is open, in the user's order.</summary>
    public List<int> Active() => Enumerable.Range(0, Traces.Length).Where(k => Traces[k].Active).ToList();

    /// <summary>eps(x, t) with timing and pass counting.</summary>
    public Tensor Forward(Tensor x) => Forward(x, _s.TimestepTensor);

    /// <summary>
    /// eps of a sample replicated along the batch dimension (<see cref="Replicate"/>): the step's timestep tensor is
    /// repeated to match, and the call counts as one forward of that many items.
    /// </summary>
    public Tensor ForwardReplicated(Tensor replicated, int copies) =>
        Forward(replicated, copies == 1 ? _s.TimestepTensor : _s.TimestepTensor.repeat(copies));

    private Tensor Forward(Tensor x, Tensor t)
    {
        var sw = Stopwatch.StartNew();
        var eps = _s.Denoiser.PredictEpsilon(x, t, _s.AlphaBar);
        _s.Trace.Timings.ForwardMs += sw.Elapsed.TotalMilliseconds;
        _s.Trace.Passes.DenoiserForwards++;
        _s.Trace.Passes.DenoiserForwardItems += (int)x.shape[0];
        if (!eps.shape.SequenceEqual(x.shape))
            throw new GuidanceException($"The denoiser returned eps of shape [{string.Join(", ", eps.shape)}] for a sample of shape [{string.Join(", ", x.shape)}].", null, T);
        return eps;
    }

    /// <summary>Condition k's per-item energy of <paramref name="x0"/>, validated to be a floating tensor [B].</summary>
    public Tensor Energy(int k, Tensor x0)
    {
        var c = _s.Conditions[k];
        var sw = Stopwatch.StartNew();
        Tensor e;
        try
        {
            e = c.Energy(x0);
        }
        catch (Exception ex) when (ex is not GuidanceException and not OperationCanceledException)
        {
            throw new GuidanceException($"Condition '{c.Name}' failed at timestep {T} (step {_s.Trace.Index}): {ex.Message}", c.Name, T, ex);
        }
        _s.Trace.Timings.EncoderMs += sw.Elapsed.TotalMilliseconds;
        _s.Trace.Passes.EncoderCalls++;
        long b = x0.shape[0];
        if (e is null || e.dim() != 1 || e.shape[0] != b)
            throw new GuidanceException(
                $"Condition '{c.Name}' returned an energy of shape [{(e is null ? "null" : string.Join(", ", e.shape))}] at timestep {T}; expected one energy per batch item, shape [{b}].",
                c.Name, T);
        if (!torch.is_floating_point(e))
            throw new GuidanceException($"Condition '{c.Name}' returned an energy of dtype {e.dtype}; expected a floating-point tensor.", c.Name, T);
        return e;
    }

    /// <summary>
    /// Applies the non-finite policy to <paramref name="value"/> of condition k. Returns true when the value is finite;
    /// false when the condition is skipped this step; throws under <see cref="NonFinitePolicy.Fail"/>.
    /// </summary>
    public bool CheckFinite(int k, Tensor value, string what)
    {
        if (torch.isfinite(value).all().item<bool>()) return true;
        var name = _s.Conditions[k].Name;
        if (_s.NonFinitePolicy == NonFinitePolicy.Fail)
            throw new GuidanceException($"Condition '{name}' produced a non-finite {what} at timestep {T} (step {_s.Trace.Index}).{KernelHint()}", name, T);
        Traces[k].Skipped = true;
        return false;
    }

    /// <summary>What a non-finite message adds about the CPU kernels: checked and fine, checked and worked around, or
    /// not checked (a caller that drives strategies without the sampler's check).</summary>
    private static string KernelHint() => Native.NumericsSelfCheck.LastHealthyReport switch
    {
        null => " If the condition is sound, check libtorch's kernels on this CPU: NumericsSelfCheck.EnsureHealthy() or `zmagic doctor` (docs/reliability.md).",
        { Workarounds.Count: > 0 } r => $" libtorch's kernels were checked at start: {r.Workarounds[0]}.",
        _ => " libtorch's kernels passed the numerics self-check, so the condition, its weights or its scale are the likely cause.",
    };

    /// <summary>
    /// The per-item step sizes [B] of condition k (see <see cref="IStepSizeRule.StepSizes"/>), recorded in the trace
    /// (<see cref="ConditionTrace.StepSizes"/> per item, <see cref="ConditionTrace.StepSize"/> their mean).
    /// </summary>
    public double[] StepSize(int k, Tensor eps, Tensor? gradient)
    {
        var rule = _s.Conditions[k].Schedule.StepSize;
        var name = _s.Conditions[k].Name;
        var g = gradient ?? torch.empty(0, eps.dtype, eps.device);
        double[] rho = rule.StepSizes(new StepSizeContext(T, _s.Timesteps.Next, _s.AlphaBar, _s.AlphaBarNext, eps, g));
        long b = eps.shape[0];
        if (rho is null || rho.Length != b)
            throw new GuidanceException($"The step-size rule of condition '{name}' returned {(rho is null ? "null" : rho.Length + " values")} for a batch of {b} at timestep {T}; expected one per item.", name, T);
        rho = (double[])rho.Clone();
        var bad = rho.FirstOrDefault(v => !double.IsFinite(v), 0.0);
        if (!double.IsFinite(bad))
        {
            if (_s.NonFinitePolicy == NonFinitePolicy.Fail)
                throw new GuidanceException($"Condition '{name}' got a non-finite step size {bad} at timestep {T}.{KernelHint()}", name, T);
            Traces[k].Skipped = true;
        }
        Traces[k].StepSize = rho.Length == 1 ? rho[0] : rho.Average();
        Traces[k].StepSizes = rho;
        return rho;
    }

    /// <summary>Whether every item has the same step size (then a plain scalar multiplication is used).</summary>
    private static bool Uniform(double[] rho) => rho.All(v => v.Equals(rho[0]));

    /// <summary>
    /// <paramref name="rho"/> [B] (or one value) as a tensor shaped to broadcast over <paramref name="like"/>'s item
    /// dims ([B, 1, ...]), in the dtype a scalar multiplication would compute in (float for half types).
    /// </summary>
    private static Tensor PerItem(double[] rho, Tensor like, int dims)
    {
        var shape = new long[Math.Max(dims, 1)];
        Array.Fill(shape, 1L);
        shape[0] = rho.Length;
        var dtype = like.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? ScalarType.Float32 : like.dtype;
        return torch.tensor(rho, ScalarType.Float64).to(dtype, like.device).reshape(shape);
    }

    /// <summary>
    /// <paramref name="t"/> [B, ...] times item i's step size on item i. Equal step sizes use a scalar multiplication;
    /// unequal ones a [B, 1, ...] tensor in the scalar path's compute type, which rounds each element identically.
    /// </summary>
    public static Tensor Times(Tensor t, double[] rho)
    {
        if (Uniform(rho)) return t * rho[0];
        if (t.shape[0] != rho.Length)
            throw new ArgumentException($"{rho.Length} step sizes for a batch of {t.shape[0]}.", nameof(rho));
        var r = PerItem(rho, t, (int)t.dim());
        return r.dtype == t.dtype ? t * r : (t.to(r.dtype) * r).to(t.dtype);
    }

    /// <summary><c>sum_i rho_i E_i</c> of per-item energies [B] (a scalar to differentiate: item i's gradient is rho_i grad E_i).</summary>
    public static Tensor WeightedEnergy(Tensor energy, double[] rho)
    {
        if (Uniform(rho)) return energy.sum() * rho[0];
        var r = PerItem(rho, energy, 1);
        return r.dtype == energy.dtype ? (energy * r).sum() : (energy.to(r.dtype) * r).sum();
    }

    /// <summary>Whether any item's step size is non-zero.</summary>
    public static bool AnyNonZero(double[] rho) => rho.Any(v => v != 0);

    /// <summary>One backward pass (gradient of a scalar), timed and counted.</summary>
    public Tensor Backward(Tensor scalar, Tensor input, bool retainGraph, bool createGraph = false, string what = "gradient")
    {
        var sw = Stopwatch.StartNew();
        var g = SafeGrad.Grad(scalar, input, retainGraph, createGraph, what);
        _s.Trace.Timings.BackwardMs += sw.Elapsed.TotalMilliseconds;
        _s.Trace.Passes.DenoiserBackwards++;
        _s.Trace.Passes.BackwardItems += (int)input.shape[0];
        return g;
    }

    /// <summary>An encoder-only gradient (no denoiser in the graph): timed as backward, counted nowhere but here.</summary>
    public Tensor EncoderBackward(Tensor scalar, Tensor input, bool retainGraph)
    {
        var sw = Stopwatch.StartNew();
        var g = SafeGrad.Grad(scalar, input, retainGraph, false, "encoder gradient");
        _s.Trace.Timings.EncoderMs += sw.Elapsed.TotalMilliseconds;
        return g;
    }

    /// <summary>One vector-Jacobian product, timed and counted.</summary>
    public Tensor Vjp(Tensor output, Tensor input, Tensor v, bool retainGraph)
    {
        var sw = Stopwatch.StartNew();
        var d = SafeGrad.Vjp(output, input, v, retainGraph, false, "vector-Jacobian product");
        _s.Trace.Timings.VjpMs += sw.Elapsed.TotalMilliseconds;
        _s.Trace.Passes.Vjps++;
        _s.Trace.Passes.BackwardItems += (int)input.shape[0];
        return d;
    }

    /// <summary>
    /// <paramref name="x"/> [B, ...] repeated <paramref name="copies"/> times along the batch dimension, detached, as a
    /// new leaf that requires grad: [copies * B, ...], copy j holding items j*B .. j*B + B - 1.
    /// </summary>
    public static Tensor Replicate(Tensor x, int copies)
    {
        var reps = new long[x.dim()];
        Array.Fill(reps, 1L);
        reps[0] = copies;
        return x.detach().repeat(reps).requires_grad_(true);
    }

    /// <summary>Copy <paramref name="j"/> (batch <paramref name="batch"/>) of a replicated tensor.</summary>
    public static Tensor Chunk(Tensor replicated, int j, long batch) => replicated.narrow(0, j * batch, batch);

    /// <summary>Whether condition k's step-size rule ignores the gradient.</summary>
    public bool GradientFreeStepSize(int k) => !_s.Conditions[k].Schedule.StepSize.UsesGradient;

    /// <summary>
    /// Runs the combiner, timed: once for the whole batch when it is elementwise (the sum), else once per batch item on
    /// the items' slices [1, ...], so that a conflict combiner's Gram matrix and weights belong to one sample.
    /// </summary>
    public Tensor Combine(IReadOnlyList<Tensor> tasks)
    {
        var sw = Stopwatch.StartNew();
        var combiner = _s.Combiner;
        long b = tasks[0].dim() == 0 ? 1 : tasks[0].shape[0];
        Tensor u;
        if (b == 1 || combiner.IsElementwise)
        {
            u = combiner.Combine(tasks);
        }
        else
        {
            var parts = new Tensor[b];
            for (int i = 0; i < b; i++)
            {
                int item = i;
                parts[i] = combiner.Combine(tasks.Select(t => t.narrow(0, item, 1)).ToList());
                if (parts[i].dim() == 0 || parts[i].shape[0] != 1)
                    throw new GuidanceException($"Combiner '{combiner.Name}' returned shape [{string.Join(", ", parts[i].shape)}] for one batch item; expected [1, ...].", null, T);
            }
            u = torch.cat(parts, 0);
        }
        _s.Trace.Timings.CombinerMs += sw.Elapsed.TotalMilliseconds;
        if (!u.shape.SequenceEqual(tasks[0].shape))
            throw new GuidanceException($"Combiner '{combiner.Name}' returned shape [{string.Join(", ", u.shape)}]; expected [{string.Join(", ", tasks[0].shape)}].", null, T);
        return u;
    }

    /// <summary>Records the energy (summed over the batch) of condition k.</summary>
    public void RecordEnergy(int k, Tensor energy) => Traces[k].Energy = energy.detach().sum().to(ScalarType.Float64).item<double>();

    /// <summary>
    /// Records condition k's gradient norm from the fused gradient <c>rho_i g_i</c> of a single condition: the whole
    /// batch's <c>||g||</c> (left NaN when an item's step size is zero, since its g cannot be recovered).
    /// </summary>
    public void RecordFusedNorm(int k, Tensor fused, double[] rho)
    {
        if (rho.Any(v => v == 0)) return;
        Traces[k].GradientNorm = Uniform(rho)
            ? fused.to(ScalarType.Float64).norm().item<double>() / Math.Abs(rho[0])
            : Times(fused.to(ScalarType.Float64), rho.Select(v => 1 / Math.Abs(v)).ToArray()).norm().item<double>();
    }

    /// <summary>Records the L2 norm of condition k's task gradient (before the step size), taken over the whole batch.</summary>
    public void RecordNorm(int k, Tensor gradient) => Traces[k].GradientNorm = gradient.detach().to(ScalarType.Float64).norm().item<double>();

    /// <summary>
    /// The pairwise cosine matrix over all conditions (NaN where a condition has no gradient this step), from one
    /// Gram matrix of the given per-condition gradients over the whole batch (a trace summary only: the combiners
    /// work per item).
    /// </summary>
    public void RecordCosines(IReadOnlyList<int> indices, IReadOnlyList<Tensor> gradients)
    {
        if (indices.Count < 2) return;
        int n = Traces.Length;
        var cos = new double[n][];
        for (int i = 0; i < n; i++) { cos[i] = new double[n]; Array.Fill(cos[i], double.NaN); }
        using (torch.NewDisposeScope())
        {
            var gram = TaskGram.Compute(gradients, perChannel: false)[0];
            for (int a = 0; a < indices.Count; a++)
                for (int b = 0; b < indices.Count; b++)
                {
                    double den = Math.Sqrt(gram[a, a] * gram[b, b]);
                    cos[indices[a]][indices[b]] = den > 0 ? gram[a, b] / den : double.NaN;
                }
        }
        _s.Trace.GradientCosines = cos;
    }

    /// <summary>Passes a detached view of an intermediate to the step's probe, if any.</summary>
    public void Inspect(string name, Tensor value)
    {
        if (_s.Inspect is { } probe) probe(name, value.detach());
    }

    /// <summary>The plain sampler step, without gradients (one forward).</summary>
    public Tensor Unguided()
    {
        using var _ = torch.no_grad();
        var eps = Forward(_s.X);
        var x0 = Tweedie.X0(_s.X, eps, _s.AlphaBar);
        Inspect("eps", eps);
        Inspect("x0", x0);
        var next = _s.Sampler.Step(_s.X, x0, eps, _s.AlphaBar, _s.AlphaBarNext, _s.Noise);
        Inspect("base", next);
        return next;
    }
}
