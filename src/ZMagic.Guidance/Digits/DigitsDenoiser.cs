using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Digits;

/// <summary>
/// The digits prior as seen by the sampler: 1 channel at 32x32. Inside, the DDPM UNet runs on the 2x2
/// space-to-depth rearrangement (4 channels at 16x16), which costs a quarter of a 32x32 UNet of the same width
/// while keeping every pixel: what made CPU training in minutes possible. The rearrangement is a fixed permutation,
/// so gradients pass through it exactly.
/// </summary>
public sealed class DigitsDenoiser : IDenoiser, IDisposable
{
    private readonly IDenoiser _inner;

    /// <summary>Wraps a 4-channel 16x16 epsilon denoiser.</summary>
    public DigitsDenoiser(IDenoiser inner)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        if (inner.Channels != 4 || inner.SampleSize != MnistData.Size / 2)
            throw new ArgumentException($"The digits prior wraps a 4-channel {MnistData.Size / 2}x{MnistData.Size / 2} network; got {inner.Channels} channels at {inner.SampleSize}.", nameof(inner));
    }

    /// <summary>The wrapped network.</summary>
    public IDenoiser Inner => _inner;

    /// <inheritdoc />
    public NoiseSchedule Schedule => _inner.Schedule;

    /// <inheritdoc />
    public PredictionType Prediction => _inner.Prediction;

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
        var output = _inner.Forward(SpaceToDepth(x), t);
        if (_inner.LearnedSigma) output = output.narrow(1, 0, _inner.Channels);
        return DepthToSpace(output);
    }

    /// <summary>Disposes the wrapped network when it is disposable.</summary>
    public void Dispose()
    {
        if (_inner is IDisposable d) d.Dispose();
    }

    /// <summary>[B, 1, 2H, 2W] -> [B, 4, H, W]; channel index = 2 * dy + dx.</summary>
    public static Tensor SpaceToDepth(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4 || x.shape[1] != 1 || x.shape[2] % 2 != 0 || x.shape[3] % 2 != 0)
            throw new ArgumentException($"Expected [B, 1, even H, even W]; got [{string.Join(", ", x.shape)}].", nameof(x));
        long b = x.shape[0], h = x.shape[2] / 2, w = x.shape[3] / 2;
        return x.reshape(b, h, 2, w, 2).permute(0, 2, 4, 1, 3).reshape(b, 4, h, w);
    }

    /// <summary>The inverse of <see cref="SpaceToDepth"/>: [B, 4, H, W] -> [B, 1, 2H, 2W].</summary>
    public static Tensor DepthToSpace(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4 || x.shape[1] != 4)
            throw new ArgumentException($"Expected [B, 4, H, W]; got [{string.Join(", ", x.shape)}].", nameof(x));
        long b = x.shape[0], h = x.shape[2], w = x.shape[3];
        return x.reshape(b, 2, 2, h, w).permute(0, 3, 1, 4, 2).reshape(b, 1, 2 * h, 2 * w);
    }
}
