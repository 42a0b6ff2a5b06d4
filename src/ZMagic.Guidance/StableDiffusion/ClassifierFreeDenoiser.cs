using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Models.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.StableDiffusion;

/// <summary>
/// The SD UNet with classifier-free guidance as an <see cref="IDenoiser"/> in latent space:
/// <c>eps = eps(z, t, uncond) + s * (eps(z, t, cond) - eps(z, t, uncond))</c>, both halves in one batched call.
/// </summary>
/// <remarks>
/// The text embeddings are fixed at construction (encoded once). As an <see cref="IClassifierFreeDenoiser"/> it returns
/// each call's CFG correction <c>s * (eps_c - eps_u)</c> with the prediction; the guidance strategies hand the
/// correction at x_t to <see cref="CfgRelativeStepSize"/>. The denoiser keeps no state between calls.
/// </remarks>
public sealed class ClassifierFreeDenoiser : IClassifierFreeDenoiser
{
    private readonly UNet2DConditionModel _unet;
    private readonly Tensor _cond;
    private readonly Tensor? _uncond;

    /// <summary>Creates the denoiser.</summary>
    /// <param name="unet">The UNet.</param>
    /// <param name="schedule">The training schedule (from the scheduler config).</param>
    /// <param name="prediction">Epsilon or v prediction.</param>
    /// <param name="conditional">Text hidden states of the prompt [1, 77, D].</param>
    /// <param name="unconditional">Text hidden states of the empty prompt [1, 77, D]; null disables CFG.</param>
    /// <param name="guidanceScale">CFG scale s (SD default 7.5; FreeDoM SD style uses 5).</param>
    public ClassifierFreeDenoiser(UNet2DConditionModel unet, NoiseSchedule schedule, PredictionType prediction, Tensor conditional, Tensor? unconditional, double guidanceScale)
    {
        _unet = unet ?? throw new ArgumentNullException(nameof(unet));
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        ArgumentNullException.ThrowIfNull(conditional);
        if (conditional.dim() != 3 || conditional.shape[0] != 1)
            throw new ArgumentException($"Conditional text states must be [1, N, D]; got [{string.Join(", ", conditional.shape)}].", nameof(conditional));
        if (unconditional is not null && !unconditional.shape.SequenceEqual(conditional.shape))
            throw new ArgumentException($"Unconditional text states [{string.Join(", ", unconditional.shape)}] differ from conditional [{string.Join(", ", conditional.shape)}].", nameof(unconditional));
        if (!double.IsFinite(guidanceScale)) throw new ArgumentOutOfRangeException(nameof(guidanceScale), guidanceScale, "The CFG scale must be finite.");
        _cond = conditional.detach();
        _uncond = unconditional?.detach();
        Prediction = prediction;
        GuidanceScale = guidanceScale;
    }

    /// <inheritdoc />
    public NoiseSchedule Schedule { get; }

    /// <inheritdoc />
    public PredictionType Prediction { get; }

    /// <inheritdoc />
    public int Channels => _unet.Config.InChannels;

    /// <inheritdoc />
    public int SampleSize => _unet.Config.SampleSize;

    /// <inheritdoc />
    public bool LearnedSigma => false;

    /// <summary>The CFG scale.</summary>
    public double GuidanceScale { get; }

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t) => Forward(x, t, out _);

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t, out Tensor cfgCorrection)
    {
        long b = x.shape[0];
        if (_uncond is null || GuidanceScale == 1.0)
        {
            var plain = _unet.forward(x, t.to(ScalarType.Int64), _cond.to(x.dtype).expand(b, -1, -1));
            cfgCorrection = torch.zeros_like(plain);
            return plain;
        }
        var states = torch.cat(new[] { _uncond.to(x.dtype).expand(b, -1, -1), _cond.to(x.dtype).expand(b, -1, -1) }, 0);
        var both = _unet.forward(torch.cat(new[] { x, x }, 0), torch.cat(new[] { t, t }, 0).to(ScalarType.Int64), states);
        var parts = both.chunk(2, 0);
        var correction = (parts[1] - parts[0]) * GuidanceScale;
        cfgCorrection = correction.detach();
        return parts[0] + correction;
    }
}
