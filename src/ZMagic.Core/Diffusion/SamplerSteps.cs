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

    /// <summary>Coefficient of eps in the step, <c>sqrt(1 - abar') sqrt(1 - eta^2)</c>.</summary>
    public double EpsilonCoefficient(double alphaBarNext) => Math.Sqrt(1 - alphaBarNext) * Math.Sqrt(1 - Eta * Eta);

    /// <inheritdoc />
    public Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise)
    {
        var result = x0 * Math.Sqrt(alphaBarNext) + eps * EpsilonCoefficient(alphaBarNext);
        if (UsesNoise)
        {
            ArgumentNullException.ThrowIfNull(noise);
            result = result + noise * (Eta * Math.Sqrt(1 - alphaBarNext));
        }
        return result;
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
    public Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise)
    {
        double sigma = Sigma(alphaBar, alphaBarNext);
        double epsCoef = Math.Sqrt(Math.Max(1 - alphaBarNext - sigma * sigma, 0));
        var result = x0 * Math.Sqrt(alphaBarNext) + eps * epsCoef;
        if (UsesNoise && sigma > 0)
        {
            ArgumentNullException.ThrowIfNull(noise);
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

    /// <summary>The three coefficients (C1 on x0, C2 on x_t, C3 on z).</summary>
    public static (double C1, double C2, double C3) Coefficients(double alphaBar, double alphaBarNext)
    {
        double ratio = alphaBar / alphaBarNext;
        double c1 = Math.Sqrt(alphaBarNext) * (1 - ratio) / (1 - alphaBar);
        double c2 = Math.Sqrt(ratio) * (1 - alphaBarNext) / (1 - alphaBar);
        double c3 = Math.Sqrt(Math.Max((1 - alphaBarNext) * (1 - ratio) / (1 - alphaBar), 0));
        return (c1, c2, c3);
    }

    /// <inheritdoc />
    public Tensor Step(Tensor xt, Tensor x0, Tensor eps, double alphaBar, double alphaBarNext, Tensor? noise)
    {
        var (c1, c2, c3) = Coefficients(alphaBar, alphaBarNext);
        var result = x0 * c1 + xt * c2;
        if (c3 > 0)
        {
            ArgumentNullException.ThrowIfNull(noise);
            result = result + noise * c3;
        }
        return result;
    }
}
