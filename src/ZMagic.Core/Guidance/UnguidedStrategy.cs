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
