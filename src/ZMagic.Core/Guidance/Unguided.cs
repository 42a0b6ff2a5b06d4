using System.Diagnostics;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>Plain sampling: one denoiser forward, no gradients, conditions ignored.</summary>
public sealed class UnguidedStrategy : IGuidanceStrategy
{
    /// <summary>The shared instance.</summary>
    public static UnguidedStrategy Instance { get; } = new();

    /// <inheritdoc />
    public string Name => "unguided";

    /// <inheritdoc />
    public Tensor Step(GuidedStep step)
    {
        ArgumentNullException.ThrowIfNull(step);
        using var _ = no_grad();
        var sw = Stopwatch.StartNew();
        var eps = step.Denoiser.PredictEpsilon(step.X, step.TimestepTensor, step.AlphaBar);
        step.Trace.Timings.ForwardMs += sw.Elapsed.TotalMilliseconds;
        step.Trace.Passes.DenoiserForwards++;
        step.Trace.Passes.DenoiserForwardItems += (int)step.X.shape[0];
        var x0 = Tweedie.X0(step.X, eps, step.AlphaBar);
        return step.Sampler.Step(step.X, x0, eps, step.AlphaBar, step.AlphaBarNext, step.Noise);
    }
}

/// <summary>The plain sum of task gradients (FreeDoM / TFG).</summary>
public sealed class SumCombiner : IGradientCombiner
{
    /// <summary>The shared instance.</summary>
    public static SumCombiner Instance { get; } = new();

    /// <inheritdoc />
    public string Name => "sum";

    /// <inheritdoc />
    public bool IsElementwise => true;

    /// <inheritdoc />
    public bool IsLinear => true;

    /// <inheritdoc />
    public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
    {
        ArgumentNullException.ThrowIfNull(taskGradients);
        if (taskGradients.Count == 0) throw new ArgumentException("No task gradients to combine.", nameof(taskGradients));
        var sum = taskGradients[0].clone();
        for (int i = 1; i < taskGradients.Count; i++) sum.add_(taskGradients[i]);
        return sum;
    }
}
