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
/// The text embeddings are fixed at construction (encoded once). <see cref="LastCorrectionRms"/> keeps the RMS of the
/// CFG correction <c>s * (eps_c - eps_u)</c> of the most recent call (and <see cref="LastCorrectionMeanSquares"/> per
/// item), for <see cref="CfgRelativeStepSize"/>.
/// </remarks>
public sealed class ClassifierFreeDenoiser : IDenoiser
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

    /// <summary>RMS of <c>s * (eps_c - eps_u)</c> over the whole batch of the most recent call (0 without CFG).</summary>
    public double LastCorrectionRms { get; private set; }

    /// <summary>
    /// Mean square of <c>s * (eps_c - eps_u)</c> per batch item of the most recent call (zeros without CFG), so that
    /// <see cref="CfgRelativeStepSize"/> can give each item a step size of its own.
    /// </summary>
    public IReadOnlyList<double> LastCorrectionMeanSquares { get; private set; } = Array.Empty<double>();

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t)
    {
        long b = x.shape[0];
        if (_uncond is null || GuidanceScale == 1.0)
        {
            LastCorrectionRms = 0;
            LastCorrectionMeanSquares = new double[b];
            return _unet.forward(x, t.to(ScalarType.Int64), _cond.to(x.dtype).expand(b, -1, -1));
        }
        var states = torch.cat(new[] { _uncond.to(x.dtype).expand(b, -1, -1), _cond.to(x.dtype).expand(b, -1, -1) }, 0);
        var both = _unet.forward(torch.cat(new[] { x, x }, 0), torch.cat(new[] { t, t }, 0).to(ScalarType.Int64), states);
        var parts = both.chunk(2, 0);
        var correction = (parts[1] - parts[0]) * GuidanceScale;
        using (torch.no_grad())
        {
            var squares = correction.detach().to(ScalarType.Float64).square();
            LastCorrectionRms = Math.Sqrt(squares.mean().item<double>());
            // Each item's mean over its own slice: the same reduction as the whole-tensor mean of that item alone.
            LastCorrectionMeanSquares = b == 1
                ? new[] { LastCorrectionRms * LastCorrectionRms }
                : torch.stack(Enumerable.Range(0, (int)b).Select(i => squares.narrow(0, i, 1).mean()).ToArray()).data<double>().ToArray();
        }
        return parts[0] + correction;
    }
}
