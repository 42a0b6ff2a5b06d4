using ZMagic.Core.Diffusion;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>
/// The digits prior as seen by the sampler: 1 channel at 32x32. Inside, the DDPM UNet runs on the 4x4
/// space-to-depth rearrangement (16 channels at 8x8), which costs about a sixteenth of a 32x32 UNet of the same
/// width while keeping every pixel: what made CPU training in minutes possible (the ermongroup UNet's GroupNorm(32)
/// sets a floor of 32 channels per level, so narrowing it further is not an option). The rearrangement is a fixed
/// permutation, so gradients pass through it exactly.
/// </summary>
public sealed class DigitsDenoiser : IDenoiser, IDisposable
{
    private readonly IDenoiser _inner;
    private readonly PredictionType _networkOutput;
    private readonly Tensor _alphaBars;

    /// <summary>Side of the square pixel blocks folded into channels.</summary>
    public const int Factor = 4;

    /// <summary>Wraps a 16-channel 8x8 network.</summary>
    /// <param name="inner">The network on the space-to-depth view.</param>
    /// <param name="networkOutput">
    /// What the network was trained to predict: <see cref="PredictionType.Epsilon"/> or
    /// <see cref="PredictionType.VPrediction"/> (v = sqrt(abar) eps - sqrt(1 - abar) x0). This wrapper always returns
    /// epsilon; from v it is eps = sqrt(abar) v + sqrt(1 - abar) x_t, which keeps the noise estimate exact where the
    /// sample is almost pure noise (an epsilon network must copy its input there, and its small copying errors,
    /// multiplied by 1 / sqrt(abar) in the clean estimate, wreck few-step sampling).
    /// </param>
    public DigitsDenoiser(IDenoiser inner, PredictionType networkOutput = PredictionType.Epsilon)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        if (inner.Channels != Factor * Factor || inner.SampleSize != MnistData.Size / Factor)
            throw new ArgumentException($"The digits prior wraps a {Factor * Factor}-channel {MnistData.Size / Factor}x{MnistData.Size / Factor} network; got {inner.Channels} channels at {inner.SampleSize}.", nameof(inner));
        if (networkOutput is not (PredictionType.Epsilon or PredictionType.VPrediction))
            throw new ArgumentException($"The digits prior's network predicts epsilon or v; got {networkOutput}.", nameof(networkOutput));
        if (inner.Prediction != PredictionType.Epsilon)
            throw new ArgumentException($"Wrap the raw network (its Prediction is read as {networkOutput} here); got a denoiser that reports {inner.Prediction}.", nameof(inner));
        _networkOutput = networkOutput;
        _alphaBars = torch.tensor(inner.Schedule.AlphaBars.ToArray(), ScalarType.Float32);
    }

    /// <summary>What the wrapped network predicts (this wrapper returns epsilon either way).</summary>
    public PredictionType NetworkOutput => _networkOutput;

    /// <summary>The wrapped network.</summary>
    public IDenoiser Inner => _inner;

    /// <inheritdoc />
    public NoiseSchedule Schedule => _inner.Schedule;

    /// <inheritdoc />
    public PredictionType Prediction => PredictionType.Epsilon;

    /// <inheritdoc />
    public int Channels => 1;

    /// <inheritdoc />
    public int SampleSize => MnistData.Size;

    /// <inheritdoc />
    public bool LearnedSigma => false;

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        var folded = SpaceToDepth(x);
        var output = _inner.Forward(folded, t);
        if (_inner.LearnedSigma) output = output.narrow(1, 0, _inner.Channels);
        if (_networkOutput == PredictionType.VPrediction)
        {
            using var scope = torch.NewDisposeScope();
            var index = t.detach().flatten().round().to(ScalarType.Int64).clamp(0, _alphaBars.shape[0] - 1).cpu();
            var ab = _alphaBars.index_select(0, index).to(x.device).to(output.dtype);
            if (ab.shape[0] == 1 && x.shape[0] > 1) ab = ab.expand(x.shape[0]);
            ab = ab.view(-1, 1, 1, 1);
            output = (ab.sqrt() * output + (1 - ab).sqrt() * folded).MoveToOuterDisposeScope();
        }
        return DepthToSpace(output);
    }

    /// <summary>Disposes the wrapped network when it is disposable.</summary>
    public void Dispose()
    {
        _alphaBars.Dispose();
        if (_inner is IDisposable d) d.Dispose();
    }

    /// <summary>[B, 1, F*H, F*W] -> [B, F*F, H, W] (F = <see cref="Factor"/>); channel index = F * dy + dx.</summary>
    public static Tensor SpaceToDepth(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        const int f = Factor;
        if (x.dim() != 4 || x.shape[1] != 1 || x.shape[2] % f != 0 || x.shape[3] % f != 0)
            throw new ArgumentException($"Expected [B, 1, H, W] with H and W multiples of {f}; got [{string.Join(", ", x.shape)}].", nameof(x));
        long b = x.shape[0], h = x.shape[2] / f, w = x.shape[3] / f;
        return x.reshape(b, h, f, w, f).permute(0, 2, 4, 1, 3).reshape(b, f * f, h, w);
    }

    /// <summary>The inverse of <see cref="SpaceToDepth"/>: [B, F*F, H, W] -> [B, 1, F*H, F*W].</summary>
    public static Tensor DepthToSpace(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        const int f = Factor;
        if (x.dim() != 4 || x.shape[1] != f * f)
            throw new ArgumentException($"Expected [B, {f * f}, H, W]; got [{string.Join(", ", x.shape)}].", nameof(x));
        long b = x.shape[0], h = x.shape[2], w = x.shape[3];
        return x.reshape(b, f, f, h, w).permute(0, 3, 1, 4, 2).reshape(b, 1, f * h, f * w);
    }
}
