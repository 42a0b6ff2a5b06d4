using static TorchSharp.torch;

namespace ZMagic.Core.Diffusion;

/// <summary>
/// DDPM's <c>clip_denoised</c> as a denoiser wrapper: the Tweedie estimate is clamped to the data range and the noise
/// prediction re-derived from it, <c>eps' = (x_t - sqrt(abar) clamp(x0)) / sqrt(1 - abar)</c>. Any sampler step and
/// guidance strategy then see bounded x0 estimates. Useful for small or briefly trained priors whose unclipped
/// trajectories drift out of range; gradients still flow where the estimate is inside the range.
/// </summary>
/// <remarks>All items of a batch must share one timestep (as in <see cref="Sampling.ConditionalSampler"/>).</remarks>
public sealed class X0ClippingDenoiser : IDenoiser, IDisposable
{
    private readonly IDenoiser _inner;

    /// <summary>Wraps <paramref name="inner"/> (epsilon prediction, no learned sigma).</summary>
    public X0ClippingDenoiser(IDenoiser inner)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        if (inner.Prediction != PredictionType.Epsilon || inner.LearnedSigma)
            throw new ArgumentException("X0ClippingDenoiser wraps epsilon-prediction denoisers without learned sigma.", nameof(inner));
    }

    /// <summary>The wrapped denoiser.</summary>
    public IDenoiser Inner => _inner;

    /// <inheritdoc />
    public NoiseSchedule Schedule => _inner.Schedule;

    /// <inheritdoc />
    public PredictionType Prediction => PredictionType.Epsilon;

    /// <inheritdoc />
    public int Channels => _inner.Channels;

    /// <inheritdoc />
    public int SampleSize => _inner.SampleSize;

    /// <inheritdoc />
    public bool LearnedSigma => false;

    /// <inheritdoc />
    public (double Min, double Max) DataRange => _inner.DataRange;

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        var eps = _inner.Forward(x, t);
        double a = Schedule.AlphaBar((int)Math.Round(t.flatten()[0].item<float>()));
        var (lo, hi) = _inner.DataRange;
        var x0 = ((x - eps * Math.Sqrt(1 - a)) / Math.Sqrt(a)).clamp(lo, hi);
        return (x - x0 * Math.Sqrt(a)) / Math.Sqrt(1 - a);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_inner is IDisposable d) d.Dispose();
    }
}
