using static TorchSharp.torch;

namespace ZMagic.Core.Diffusion;

/// <summary>The Tweedie (posterior-mean) estimate of the clean sample.</summary>
public static class Tweedie
{
    /// <summary><c>x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)</c>.</summary>
    public static Tensor X0(Tensor xt, Tensor eps, double alphaBar)
    {
        if (!(alphaBar > 0 && alphaBar <= 1))
            throw new ArgumentOutOfRangeException(nameof(alphaBar), alphaBar, "abar_t must be in (0, 1].");
        return (xt - eps * Math.Sqrt(1 - alphaBar)) / Math.Sqrt(alphaBar);
    }
}
