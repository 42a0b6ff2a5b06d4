using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Diffusion;

/// <summary>What a denoiser's network output means.</summary>
public enum PredictionType
{
    /// <summary>The network predicts the added noise epsilon (DDPM, guided-diffusion, SD 1.x).</summary>
    Epsilon,
    /// <summary>The network predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (SD 2.x "v_prediction").</summary>
    VPrediction,
    /// <summary>The network predicts the clean sample x0 directly.</summary>
    Sample,
}

/// <summary>
/// A pretrained diffusion backbone: a network of (x_t, t) plus everything the sampler must know about it.
/// </summary>
/// <remarks>
/// Implementations keep PyTorch parameter names so public checkpoints load unchanged. <see cref="Forward"/> must be
/// differentiable with respect to <c>x</c>: guidance backpropagates through it.
/// </remarks>
public interface IDenoiser
{
    /// <summary>The training noise schedule the network was trained with.</summary>
    NoiseSchedule Schedule { get; }

    /// <summary>What <see cref="Forward"/> predicts.</summary>
    PredictionType Prediction { get; }

    /// <summary>Channels of the sample (3 for RGB pixels, 4 for SD latents, 1 for the digits prior).</summary>
    int Channels { get; }

    /// <summary>Spatial size the network was trained at (height = width).</summary>
    int SampleSize { get; }

    /// <summary>
    /// True when the output carries 2 x <see cref="Channels"/> channels, the second half being learned variance
    /// (guided-diffusion's learn_sigma). Samplers here use the first half and ignore the rest.
    /// </summary>
    bool LearnedSigma { get; }

    /// <summary>Range of the sample values the network expects, usually [-1, 1].</summary>
    (double Min, double Max) DataRange => (-1.0, 1.0);

    /// <summary>Raw network output for a batch <paramref name="x"/> [B, C, H, W] at float timesteps <paramref name="t"/> [B].</summary>
    Tensor Forward(Tensor x, Tensor t);
}

/// <summary>Conversions every sampler needs on top of <see cref="IDenoiser.Forward"/>.</summary>
public static class DenoiserExtensions
{
    /// <summary>
    /// The noise prediction eps(x_t, t): drops learned-variance channels and converts v or x0 predictions.
    /// </summary>
    /// <param name="denoiser">The backbone.</param>
    /// <param name="x">Noisy sample [B, C, H, W].</param>
    /// <param name="t">Timesteps [B] (float).</param>
    /// <param name="alphaBar">abar_t of those timesteps (one scalar; all items share t), in (0, 1).</param>
    /// <exception cref="InvalidOperationException">The network's output does not have the input's shape (with
    /// 2 x <see cref="IDenoiser.Channels"/> channels when <see cref="IDenoiser.LearnedSigma"/>).</exception>
    public static Tensor PredictEpsilon(this IDenoiser denoiser, Tensor x, Tensor t, double alphaBar) => PredictEpsilon(denoiser, x, t, alphaBar, out _);

    /// <summary>
    /// <see cref="PredictEpsilon(IDenoiser, Tensor, Tensor, double)"/>, and the CFG correction of the call when the
    /// denoiser is an <see cref="IClassifierFreeDenoiser"/> (else null).
    /// </summary>
    internal static Tensor PredictEpsilon(this IDenoiser denoiser, Tensor x, Tensor t, double alphaBar, out Tensor? cfgCorrection)
    {
        ArgumentNullException.ThrowIfNull(denoiser);
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        if (!(alphaBar > 0 && alphaBar < 1))
            throw new ArgumentOutOfRangeException(nameof(alphaBar), alphaBar, "abar_t of a noisy sample must be in (0, 1).");
        cfgCorrection = null;
        var output = denoiser is IClassifierFreeDenoiser cfg ? cfg.Forward(x, t, out cfgCorrection) : denoiser.Forward(x, t);
        CheckOutputShape(denoiser, x, output);
        if (denoiser.LearnedSigma) output = output.narrow(1, 0, denoiser.Channels);
        return denoiser.Prediction switch
        {
            PredictionType.Epsilon => output,
            // v = sqrt(a) eps - sqrt(1-a) x0 and x = sqrt(a) x0 + sqrt(1-a) eps  =>  eps = sqrt(1-a) x + sqrt(a) v
            PredictionType.VPrediction => x * Math.Sqrt(1 - alphaBar) + output * Math.Sqrt(alphaBar),
            PredictionType.Sample => (x - output * Math.Sqrt(alphaBar)) / Math.Sqrt(1 - alphaBar),
            _ => throw new InvalidOperationException($"Unknown prediction type {denoiser.Prediction}."),
        };
    }

    private static void CheckOutputShape(IDenoiser denoiser, Tensor x, Tensor output)
    {
        long channels = denoiser.LearnedSigma ? 2L * denoiser.Channels : denoiser.Channels;
        var expected = x.shape.ToArray();
        if (expected.Length == 4) expected[1] = channels;
        if (!output.shape.SequenceEqual(expected))
            throw new InvalidOperationException(
                $"{denoiser.GetType().Name}.Forward returned shape [{string.Join(", ", output.shape)}] for input [{string.Join(", ", x.shape)}]; " +
                $"expected [{string.Join(", ", expected)}] ({channels} channels{(denoiser.LearnedSigma ? ": eps then learned variance" : "")}).");
    }
}
