using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Writes one step's <see cref="StepTrace"/> (per-condition entries, pass counts, timings, cosines) and feeds the
/// step's probe. Write-only: no decision of a strategy reads the trace back.
/// </summary>
internal sealed class StepRecorder
{
    private readonly StepTrace _trace;
    private readonly Action<string, Tensor>? _probe;
    private readonly ConditionTrace[] _conditions;

    public StepRecorder(GuidedStep step, IReadOnlyList<bool> active)
    {
        _trace = step.Trace;
        _probe = step.Inspect;
        _conditions = new ConditionTrace[step.Conditions.Count];
        for (int k = 0; k < _conditions.Length; k++)
        {
            _conditions[k] = new ConditionTrace { Name = step.Conditions[k].Name, Active = active[k] };
            _trace.Conditions.Add(_conditions[k]);
        }
    }

    /// <summary>A denoiser forward of <paramref name="items"/> sample items.</summary>
    public void Forward(double ms, long items)
    {
        _trace.Timings.ForwardMs += ms;
        _trace.Passes.DenoiserForwards++;
        _trace.Passes.DenoiserForwardItems += (int)items;
    }

    /// <summary>A backward pass through the denoiser of <paramref name="items"/> sample items.</summary>
    public void Backward(double ms, long items)
    {
        _trace.Timings.BackwardMs += ms;
        _trace.Passes.DenoiserBackwards++;
        _trace.Passes.BackwardItems += (int)items;
    }

    /// <summary>A vector-Jacobian product of <paramref name="items"/> sample items.</summary>
    public void Vjp(double ms, long items)
    {
        _trace.Timings.VjpMs += ms;
        _trace.Passes.Vjps++;
        _trace.Passes.BackwardItems += (int)items;
    }

    /// <summary>Encoder time: an energy evaluation (<paramref name="call"/>) or an encoder-only gradient.</summary>
    public void Encoder(double ms, bool call)
    {
        _trace.Timings.EncoderMs += ms;
        if (call) _trace.Passes.EncoderCalls++;
    }

    /// <summary>Combiner time.</summary>
    public void Combiner(double ms) => _trace.Timings.CombinerMs += ms;

    /// <summary>Condition k's energy, summed over the batch.</summary>
    public void Energy(int k, Tensor energy) => _conditions[k].Energy = energy.detach().sum().to(ScalarType.Float64).item<double>();

    /// <summary>The L2 norm of condition k's task gradient (before the step size) over the whole batch.</summary>
    public void GradientNorm(int k, Tensor gradient) => _conditions[k].GradientNorm = gradient.detach().to(ScalarType.Float64).norm().item<double>();

    /// <summary>
    /// Condition k's gradient norm from the fused gradient <c>rho_i g_i</c> of a single condition: the whole batch's
    /// <c>||g||</c> (left NaN when an item's step size is zero, since its g cannot be recovered).
    /// </summary>
    public void FusedGradientNorm(int k, Tensor fused, double[] rho)
    {
        if (rho.Any(v => v == 0)) return;
        _conditions[k].GradientNorm = PerItem.IsUniform(rho)
            ? fused.to(ScalarType.Float64).norm().item<double>() / Math.Abs(rho[0])
            : PerItem.Times(fused.to(ScalarType.Float64), rho.Select(v => 1 / Math.Abs(v)).ToArray()).norm().item<double>();
    }

    /// <summary>Condition k's per-item step sizes (and their mean).</summary>
    public void StepSizes(int k, double[] rho)
    {
        _conditions[k].StepSize = rho.Length == 1 ? rho[0] : rho.Average();
        _conditions[k].StepSizes = rho;
    }

    /// <summary>Condition k was dropped by the non-finite policy.</summary>
    public void Skipped(int k) => _conditions[k].Skipped = true;

    /// <summary>
    /// The pairwise cosine matrix over all conditions (NaN where a condition has no gradient this step), from one Gram
    /// matrix of the task gradients over the whole batch (a summary only: the combiners work per item).
    /// </summary>
    public void Cosines(TaskList tasks)
    {
        var indices = tasks.Conditions;
        if (indices.Count < 2) return;
        int n = _conditions.Length;
        var cos = new double[n][];
        for (int i = 0; i < n; i++) { cos[i] = new double[n]; Array.Fill(cos[i], double.NaN); }
        using (NewDisposeScope())
        {
            var gram = TaskGram.Compute(tasks.Gradients, perChannel: false)[0];
            for (int a = 0; a < indices.Count; a++)
                for (int b = 0; b < indices.Count; b++)
                {
                    double den = Math.Sqrt(gram[a, a] * gram[b, b]);
                    cos[indices[a]][indices[b]] = den > 0 ? gram[a, b] / den : double.NaN;
                }
        }
        _trace.GradientCosines = cos;
    }

    /// <summary>Passes a detached view of an intermediate to the step's probe, if any.</summary>
    public void Inspect(string name, Tensor value)
    {
        if (_probe is { } probe) probe(name, value.detach());
    }
}
