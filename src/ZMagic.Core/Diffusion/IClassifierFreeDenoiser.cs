using static TorchSharp.torch;

namespace ZMagic.Core.Diffusion;

/// <summary>
/// A denoiser whose output contains classifier-free guidance, <c>out = out_u + s (out_c - out_u)</c>, and which
/// returns the CFG correction <c>s (out_c - out_u)</c> of each call with the output. The guidance strategies pass
/// the correction at x_t to the step-size rules (<see cref="Guidance.StepSizeContext.CfgCorrection"/>), as Stable
/// Diffusion's CFG-relative step size needs.
/// </summary>
public interface IClassifierFreeDenoiser : IDenoiser
{
    /// <summary>
    /// <see cref="IDenoiser.Forward"/>'s output, and the CFG correction of this very call: <c>s (out_c - out_u)</c>
    /// [B, ...] in the output's space, detached (zeros when the call applied no guidance).
    /// </summary>
    Tensor Forward(Tensor x, Tensor t, out Tensor cfgCorrection);
}
