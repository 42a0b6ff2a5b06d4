using static TorchSharp.torch;

namespace ZMagic.Core.Diffusion;

/// <summary>
/// The base (unguided) transition x_t -> x_t' of a sampler, given the Tweedie estimate and the noise prediction.
/// Guidance strategies add their updates on top of it.
/// </summary>
public interface ISamplerStep
{
    /// <summary>A short name for traces and reports.</summary>
    string Name { get; }

    /// <summary>True when <see cref="Step"/> consumes a fresh standard-normal draw.</summary>
    bool UsesNoise { get; }

    /// <summary>Computes x_t'. <paramref name="noise"/> is required when <see cref="UsesNoise"/> is true.</summary>
    Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise);
}

/// <summary>
/// FreeDoM's face-code step (eta = 0.5 there): <c>x' = sqrt(abar') x0 + eta sqrt(1 - abar') z + sqrt(1 - abar') sqrt(1 - eta^2) eps</c>.
/// Not the DDIM sigma(eta) parametrisation.
/// </summary>
public sealed class FreeDoMEtaStep : ISamplerStep
{
    /// <summary>Creates the step with the given eta in [0, 1].</summary>
    public FreeDoMEtaStep(double eta = 0.5)
    {
        if (!(eta >= 0 && eta <= 1)) throw new ArgumentOutOfRangeException(nameof(eta), eta, "eta must be in [0, 1].");
        Eta = eta;
    }

    /// <summary>The noise share.</summary>
    public double Eta { get; }

    /// <inheritdoc />
    public string Name => $"freedom-eta({Eta})";

    /// <inheritdoc />
    public bool UsesNoise => Eta > 0;

    /// <summary>Coefficient of the fresh noise z, <c>c1 = sqrt(1 - abar') * eta</c> (FreeDoM's <c>c1</c>).</summary>
    public double NoiseCoefficient(double alphaBarNext) => Math.Sqrt(1 - alphaBarNext) * Eta;

    /// <summary>Coefficient of eps in the step, <c>c2 = sqrt(1 - abar') * sqrt(1 - eta^2)</c> (FreeDoM's <c>c2</c>).</summary>
    public double EpsilonCoefficient(double alphaBarNext) => Math.Sqrt(1 - alphaBarNext) * Math.Sqrt(1 - Eta * Eta);

    /// <inheritdoc />
    /// <remarks>
    /// Evaluated in the reference's order, <c>(sqrt(abar') x0 + c1 z) + c2 eps</c>, so float64 results match FreeDoM's
    /// to the last bit. At the end of the chain (abar' = 1) the step returns x0.
    /// </remarks>
    public Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise)
    {
        SamplerStepChecks.AlphaBars(alphaBar, alphaBarNext);
        var result = x0 * Math.Sqrt(alphaBarNext);
        if (UsesNoise)
        {
            if (noise is null) throw new ArgumentNullException(nameof(noise), $"{Name} draws noise at every step; pass the step's standard-normal draw.");
            result = result + noise * NoiseCoefficient(alphaBarNext);
        }
        return result + eps * EpsilonCoefficient(alphaBarNext);
    }
}

/// <summary>
/// Standard DDIM (Song et al.): <c>sigma = eta sqrt((1 - abar') / (1 - abar)) sqrt(1 - abar / abar')</c>,
/// <c>x' = sqrt(abar') x0 + sqrt(1 - abar' - sigma^2) eps + sigma z</c>. eta = 0 is deterministic.
/// </summary>
public sealed class DdimStep : ISamplerStep
{
    /// <summary>Creates the step with the given eta in [0, 1].</summary>
    public DdimStep(double eta = 0.0)
    {
        if (!(eta >= 0 && eta <= 1)) throw new ArgumentOutOfRangeException(nameof(eta), eta, "eta must be in [0, 1].");
        Eta = eta;
    }

    /// <summary>The stochasticity (0 = deterministic DDIM, 1 = DDPM-like variance).</summary>
    public double Eta { get; }

    /// <inheritdoc />
    public string Name => $"ddim({Eta})";

    /// <inheritdoc />
    public bool UsesNoise => Eta > 0;

    /// <summary>The noise standard deviation sigma of the step.</summary>
    public double Sigma(double alphaBar, double alphaBarNext)
        => Eta * Math.Sqrt((1 - alphaBarNext) / (1 - alphaBar)) * Math.Sqrt(1 - alphaBar / alphaBarNext);

    /// <inheritdoc />
    /// <remarks>At the end of the chain (abar' = 1) sigma and the eps coefficient are 0 and the step returns x0.</remarks>
    public Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise)
    {
        SamplerStepChecks.AlphaBars(alphaBar, alphaBarNext);
        double sigma = Sigma(alphaBar, alphaBarNext);
        double epsCoef = Math.Sqrt(Math.Max(1 - alphaBarNext - sigma * sigma, 0));
        var result = x0 * Math.Sqrt(alphaBarNext) + eps * epsCoef;
        if (UsesNoise && sigma > 0)
        {
            if (noise is null) throw new ArgumentNullException(nameof(noise), $"{Name} with eta > 0 needs the step's standard-normal draw.");
            result = result + noise * sigma;
        }
        return result;
    }
}

/// <summary>
/// The DDPM posterior (ancestral) step over a possibly skipped interval:
/// <c>x' = C1 x0 + C2 x_t + C3 z</c> with <c>C1 = sqrt(abar')(1 - abar/abar')/(1 - abar)</c>,
/// <c>C2 = sqrt(abar/abar')(1 - abar')/(1 - abar)</c>, <c>C3 = sqrt((1 - abar')(1 - abar/abar')/(1 - abar))</c>
/// (FreeDoM's clip_ddim step).
/// </summary>
public sealed class DdpmPosteriorStep : ISamplerStep
{
    /// <inheritdoc />
    public string Name => "ddpm-posterior";

    /// <inheritdoc />
    public bool UsesNoise => true;

    /// <summary>
    /// The three coefficients (C1 on x0, C2 on x_t, C3 on z), computed as FreeDoM's <c>clip_ddim</c> does:
    /// <c>C3 = exp(0.5 log((1 - abar')(1 - abar/abar')/(1 - abar)))</c>, which is 0 (not NaN) at abar' = 1.
    /// </summary>
    public static (double C1, double C2, double C3) Coefficients(double alphaBar, double alphaBarNext)
    {
        SamplerStepChecks.AlphaBars(alphaBar, alphaBarNext);
        double ratio = alphaBar / alphaBarNext;
        double c1 = Math.Sqrt(alphaBarNext) * (1 - ratio) / (1 - alphaBar);
        double c2 = Math.Sqrt(ratio) * (1 - alphaBarNext) / (1 - alphaBar);
        // log(0) = -inf and exp(-inf) = 0, so the last step (abar' = 1) has C3 = 0 exactly, as in the reference.
        double c3 = Math.Exp(Math.Log((1 - alphaBarNext) * (1 - ratio) / (1 - alphaBar)) * 0.5);
        return (c1, c2, c3);
    }

    /// <inheritdoc />
    /// <remarks>Evaluated in the reference's order, <c>(C1 x0 + C2 x_t) + C3 z</c>. At abar' = 1 it returns C1 x0 = x0.</remarks>
    public Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise)
    {
        var (c1, c2, c3) = Coefficients(alphaBar, alphaBarNext);
        var result = x0 * c1 + xt * c2;
        if (noise is not null) return result + noise * c3;
        if (c3 > 0) throw new ArgumentNullException(nameof(noise), $"{Name} needs the step's standard-normal draw.");
        return result;
    }
}

/// <summary>Argument checks shared by the sampler steps.</summary>
internal static class SamplerStepChecks
{
    /// <summary>A step goes from abar_t to a larger abar_t' (toward the clean end), both in (0, 1].</summary>
    public static void AlphaBars(double alphaBar, double alphaBarNext)
    {
        if (!(alphaBar > 0 && alphaBar < 1))
            throw new ArgumentOutOfRangeException(nameof(alphaBar), alphaBar, "abar_t must be in (0, 1).");
        if (!(alphaBarNext > alphaBar && alphaBarNext <= 1))
            throw new ArgumentOutOfRangeException(nameof(alphaBarNext), alphaBarNext, $"abar_t' must be in (abar_t = {alphaBar}, 1]: a step moves toward the clean end.");
    }
}
