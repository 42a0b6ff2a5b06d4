using ZMagic.Core.Guidance;
using ZMagic.Models.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.StableDiffusion;

/// <summary>
/// FreeDoM's Stable Diffusion step size: <c>rho = scale * rms(CFG correction) / rms(g)</c>, where the CFG correction is
/// <c>s * (eps_c - eps_u)</c> of the denoiser's call at x_t (FreeDoM SD_style uses scale 0.2). The guidance step is
/// thereby as large as a fixed fraction of the text guidance's own push, whatever the energy's magnitude.
/// </summary>
/// <remarks>
/// The correction arrives as an argument, <see cref="StepSizeContext.CfgCorrection"/>, which the strategies fill from
/// the forward at x_t of an <see cref="Core.Diffusion.IClassifierFreeDenoiser"/> such as
/// <see cref="ClassifierFreeDenoiser"/> (not from whichever call came last: Z-Magic's forward at the proposal does not
/// count). Both RMS values are taken per batch item (FreeDoM takes them over the whole batch), so an image does not
/// depend on its batch mates. At batch 1 the numbers are those of the whole-tensor form.
/// </remarks>
/// <param name="Scale">The fraction.</param>
public sealed record CfgRelativeStepSize(double Scale) : IStepSizeRule
{
    /// <summary>The step size from the whole context (one item, or the whole batch with whole-batch RMS values).</summary>
    /// <exception cref="InvalidOperationException">The context carries no CFG correction (the denoiser is not classifier-free).</exception>
    public double StepSize(in StepSizeContext context)
    {
        double rmsG = Math.Sqrt(context.Gradient.to(ScalarType.Float64).square().mean().item<double>());
        double rmsC = Math.Sqrt(Correction(context).to(ScalarType.Float64).square().mean().item<double>());
        return rmsG > 0 ? Scale * rmsC / rmsG : 0.0;
    }

    /// <inheritdoc />
    public double[] StepSizes(in StepSizeContext context)
    {
        int b = StepSizeRules.Items(context);
        if (b == 1) return new[] { StepSize(context) };
        // Per-item slices, reduced like a batch of one, so that an item's RMS values do not depend on the batch.
        var gradientSquares = MeanSquares(context.Gradient, b);
        var correctionSquares = MeanSquares(Correction(context), b);
        var rho = new double[b];
        for (int i = 0; i < b; i++)
        {
            double rmsC = Math.Sqrt(correctionSquares[i]), rmsG = Math.Sqrt(gradientSquares[i]);
            rho[i] = rmsG > 0 ? Scale * rmsC / rmsG : 0.0;
        }
        return rho;
    }

    private static Tensor Correction(in StepSizeContext context) => context.CfgCorrection
        ?? throw new InvalidOperationException("CfgRelativeStepSize needs the CFG correction at x_t (StepSizeContext.CfgCorrection); the denoiser is not an IClassifierFreeDenoiser.");

    private static double[] MeanSquares(Tensor t, int items)
    {
        var squares = t.to(ScalarType.Float64).square();
        return stack(Enumerable.Range(0, items).Select(i => squares.narrow(0, i, 1).mean()).ToArray()).data<double>().ToArray();
    }
}

/// <summary>
/// Decodes latent x0 estimates with the VAE once per estimate, shared by every image-space condition of a step.
/// </summary>
/// <remarks>The cache holds the last (x0, image) pair by reference; the engine passes the same x0 tensor to each
/// condition, so n conditions cost one decode (and one backward through the decoder) instead of n.</remarks>
public sealed class VaeDecodeCache
{
    private readonly AutoencoderKL _vae;
    private Tensor? _lastLatent;
    private Tensor? _lastImage;

    /// <summary>Creates the cache.</summary>
    public VaeDecodeCache(AutoencoderKL vae) => _vae = vae ?? throw new ArgumentNullException(nameof(vae));

    /// <summary>Number of actual decoder calls (for traces and tests).</summary>
    public int Decodes { get; private set; }

    /// <summary>The image [B, 3, H, W] in about [-1, 1] of the scaled latent x0 estimate.</summary>
    public Tensor Decode(Tensor latentX0)
    {
        if (ReferenceEquals(latentX0, _lastLatent) && _lastImage is not null && !_lastImage.IsInvalid) return _lastImage;
        Decodes++;
        _lastImage = _vae.Decode(latentX0 / _vae.Config.ScalingFactor);
        _lastLatent = latentX0;
        return _lastImage;
    }
}

/// <summary>
/// An image-space condition (style, content, text, faces, ...) applied to a latent diffusion model: its energy is
/// computed on the VAE-decoded Tweedie estimate, so its gradient flows through the decoder and the UNet.
/// </summary>
public sealed class DecodedImageCondition : IGuidanceCondition
{
    private readonly IGuidanceCondition _inner;
    private readonly VaeDecodeCache _decoder;

    /// <summary>Wraps <paramref name="inner"/>; <paramref name="schedule"/> replaces its schedule when given.</summary>
    public DecodedImageCondition(IGuidanceCondition inner, VaeDecodeCache decoder, GuidanceSchedule? schedule = null)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        _decoder = decoder ?? throw new ArgumentNullException(nameof(decoder));
        Schedule = schedule ?? inner.Schedule;
    }

    /// <inheritdoc />
    public string Name => _inner.Name;

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <summary>The image-space condition.</summary>
    public IGuidanceCondition Inner => _inner;

    /// <inheritdoc />
    public Tensor Energy(Tensor x0) => _inner.Energy(_decoder.Decode(x0));
}
