using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// What the denoiser said about x_t, detached: the noise prediction, the Tweedie estimate x0 and, from a
/// classifier-free denoiser, the CFG correction of that call (of one copy when x_t was replicated). The base sampler
/// step and every step-size rule read these.
/// </summary>
internal sealed record XtEstimate(Tensor Eps, Tensor X0, Tensor? CfgCorrection);
