using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Z-Magic's pull-back <c>d = J^T gh</c> of a gradient at the proposal to x_t, J being d output / d x_t: the base step
/// (research code), the whole proposal (with the first energy's Hessian), or the identity (first order).
/// </summary>
internal sealed class PullBack(TimedDenoiser denoiser, Tensor xt, Tensor? output)
{
    public Tensor Apply(Tensor gh, bool retainGraph) => output is null ? gh : denoiser.Vjp(output, xt, gh, retainGraph);
}
