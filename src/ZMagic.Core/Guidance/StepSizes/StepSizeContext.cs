using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// What a step-size rule may look at when it computes rho for one condition at one step. <see cref="Epsilon"/> and
/// <see cref="Gradient"/> cover the whole batch [B, ...] when passed to <see cref="IStepSizeRule.StepSizes"/>, and one
/// item [1, ...] when its default implementation passes them on to <see cref="IStepSizeRule.StepSize"/>.
/// </summary>
/// <param name="T">Current timestep.</param>
/// <param name="Next">Target timestep.</param>
/// <param name="AlphaBar">abar_t.</param>
/// <param name="AlphaBarNext">abar_t'.</param>
/// <param name="Epsilon">The noise prediction at x_t (detached).</param>
/// <param name="Gradient">
/// The condition's task gradient (detached): g_k with respect to x_t, or Z-Magic's pulled-back d_k. Rules whose
/// <see cref="IStepSizeRule.UsesGradient"/> is false may receive an empty tensor here (the strategy then never
/// computes per-condition gradients just for the rule).
/// </param>
public readonly record struct StepSizeContext(int T, int Next, double AlphaBar, double AlphaBarNext, Tensor Epsilon, Tensor Gradient)
{
    /// <summary>
    /// The classifier-free guidance correction <c>s (out_c - out_u)</c> of the denoiser's call at x_t (detached, shaped
    /// like <see cref="Epsilon"/>), when the denoiser is an <see cref="Diffusion.IClassifierFreeDenoiser"/>; null
    /// otherwise. It belongs to the same call as <see cref="Epsilon"/>, whatever calls the strategy made since.
    /// </summary>
    public Tensor? CfgCorrection { get; init; }
}
