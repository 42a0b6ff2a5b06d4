using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// The step's conditions: which are active, their validated energies and step sizes, and the non-finite policy. It
/// remembers which conditions the policy dropped this step (the trace only reports it).
/// </summary>
internal sealed class ConditionEvaluator
{
    private readonly GuidedStep _s;
    private readonly StepRecorder _recorder;
    private readonly bool[] _skipped;

    public ConditionEvaluator(GuidedStep step, StepRecorder recorder, IReadOnlyList<bool> active)
    {
        _s = step;
        _recorder = recorder;
        _skipped = new bool[step.Conditions.Count];
        Active = Enumerable.Range(0, active.Count).Where(k => active[k]).ToList();
    }

    /// <summary>Indices of the conditions whose window is open at this step, in the user's order.</summary>
    public IReadOnlyList<int> Active { get; }

    private int T => _s.Timesteps.T;

    public string Name(int k) => _s.Conditions[k].Name;

    /// <summary>Whether condition k's step-size rule ignores the gradient.</summary>
    public bool GradientFree(int k) => !_s.Conditions[k].Schedule.StepSize.UsesGradient;

    /// <summary>Whether the non-finite policy dropped condition k this step.</summary>
    public bool IsSkipped(int k) => _skipped[k];

    /// <summary>
    /// Condition k's per-item energy of <paramref name="x0"/> (a floating tensor [B], recorded), or null when it is not
    /// finite and the policy skips the condition.
    /// </summary>
    public Tensor? Energy(int k, Tensor x0)
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
        _recorder.Encoder(sw.Elapsed.TotalMilliseconds, call: true);
        long b = x0.shape[0];
        if (e is null || e.dim() != 1 || e.shape[0] != b)
            throw new GuidanceException(
                $"Condition '{c.Name}' returned an energy of shape [{(e is null ? "null" : string.Join(", ", e.shape))}] at timestep {T}; expected one energy per batch item, shape [{b}].",
                c.Name, T);
        if (!torch.is_floating_point(e))
            throw new GuidanceException($"Condition '{c.Name}' returned an energy of dtype {e.dtype}; expected a floating-point tensor.", c.Name, T);
        _recorder.Energy(k, e);
        return Finite(k, e.detach(), "energy") ? e : null;
    }

    /// <summary>
    /// Applies the non-finite policy to <paramref name="value"/> of condition k: true when it is finite, false when the
    /// condition is skipped this step; throws under <see cref="NonFinitePolicy.Fail"/>.
    /// </summary>
    public bool Finite(int k, Tensor value, string what)
    {
        if (torch.isfinite(value).all().item<bool>()) return true;
        if (_s.NonFinitePolicy == NonFinitePolicy.Fail)
            throw new GuidanceException($"Condition '{Name(k)}' produced a non-finite {what} at timestep {T} (step {_s.Trace.Index}).{KernelHint()}", Name(k), T);
        Skip(k);
        return false;
    }

    /// <summary>
    /// Condition k's per-item step sizes [B] (see <see cref="IStepSizeRule.StepSizes"/>), recorded; null when one is not
    /// finite and the policy skips the condition. <paramref name="gradient"/> is null for gradient-free rules.
    /// </summary>
    public double[]? StepSizes(int k, XtEstimate at, Tensor? gradient)
    {
        var name = Name(k);
        var g = gradient ?? torch.empty(0, at.Eps.dtype, at.Eps.device);
        var context = new StepSizeContext(T, _s.Timesteps.Next, _s.AlphaBar, _s.AlphaBarNext, at.Eps, g) { CfgCorrection = at.CfgCorrection };
        double[] rho = _s.Conditions[k].Schedule.StepSize.StepSizes(context);
        long b = at.Eps.shape[0];
        if (rho is null || rho.Length != b)
            throw new GuidanceException($"The step-size rule of condition '{name}' returned {(rho is null ? "null" : rho.Length + " values")} for a batch of {b} at timestep {T}; expected one per item.", name, T);
        rho = (double[])rho.Clone();
        var bad = rho.FirstOrDefault(v => !double.IsFinite(v), 0.0);
        if (!double.IsFinite(bad) && _s.NonFinitePolicy == NonFinitePolicy.Fail)
            throw new GuidanceException($"Condition '{name}' got a non-finite step size {bad} at timestep {T}.{KernelHint()}", name, T);
        _recorder.StepSizes(k, rho);
        if (double.IsFinite(bad)) return rho;
        Skip(k);
        return null;
    }

    /// <summary>A gradient through the encoders only (no denoiser in the graph), timed as encoder work.</summary>
    public Tensor EncoderGradient(Tensor scalar, Tensor input, bool retainGraph)
    {
        var sw = Stopwatch.StartNew();
        var g = SafeGrad.Grad(scalar, input, retainGraph, false, "encoder gradient");
        _recorder.Encoder(sw.Elapsed.TotalMilliseconds, call: false);
        return g;
    }

    private void Skip(int k)
    {
        _skipped[k] = true;
        _recorder.Skipped(k);
    }

    /// <summary>What a non-finite message adds about the CPU kernels: checked and fine, checked and worked around, or
    /// not checked (a caller that drives strategies without the sampler's check).</summary>
    private static string KernelHint() => Native.NumericsSelfCheck.LastHealthyReport switch
    {
        null => " If the condition is sound, check libtorch's kernels on this CPU: NumericsSelfCheck.EnsureHealthy() or `zmagic doctor` (docs/reliability.md).",
        { Workarounds.Count: > 0 } r => $" libtorch's kernels were checked at start: {r.Workarounds[0]}.",
        _ => " libtorch's kernels passed the numerics self-check, so the condition, its weights or its scale are the likely cause.",
    };
}
