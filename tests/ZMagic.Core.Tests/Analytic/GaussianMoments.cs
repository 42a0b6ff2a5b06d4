using ZMagic.Core.Diffusion;
using ZMagic.Core.Sampling;

namespace ZMagic.Core.Tests.Analytic;

/// <summary>
/// The exact mean and variance, per element, of what a sampler produces from the exact Gaussian denoiser.
/// </summary>
/// <remarks>
/// With the optimal eps, every step is affine in x_t plus independent noise: eps = r x + u, x0 = p x + q, and each
/// sampler writes x' = alpha x0 + beta eps + gamma x + sigma z. Starting from x_T ~ N(0, 1), the moments follow
/// m' = k m + k0, v' = k^2 v + sigma^2 with k = alpha p + beta r + gamma, k0 = alpha q + beta u. Time travel maps
/// (m, v) to (sqrt(b) m, b v + 1 - b) with b = abar_t / abar_t'. The coefficients are written here from the
/// reference formulas (shared/reference/zmagic-algorithm.md and FreeDoM's denoising.py), independently of the sampler code.
/// Finite step counts do not reproduce the data exactly (discretisation and the x_T prior mismatch), so the
/// statistical tests compare the samples with these exact predictions, and separately bound the prediction's
/// distance from the data.
/// </remarks>
public static class GaussianMoments
{
    /// <summary>Predicted (mean, variance) of one element with data N(mu, s2).</summary>
    public static (double Mean, double Var) Predict(ISamplerStep step, NoiseSchedule schedule, IReadOnlyList<TimestepPair> pairs,
        TimeTravel? timeTravel, double mu, double s2)
    {
        double m = 0, v = 1;
        foreach (var (t, tn) in pairs)
        {
            int repeats = timeTravel?.RepeatsAt(t) ?? 1;
            for (int rep = 0; rep < repeats; rep++)
            {
                double a = schedule.AlphaBar(t), an = schedule.AlphaBar(tn);
                double varXt = a * s2 + 1 - a;
                double r = Math.Sqrt(1 - a) / varXt, u = -r * Math.Sqrt(a) * mu;
                double p = (1 - Math.Sqrt(1 - a) * r) / Math.Sqrt(a), q = -Math.Sqrt(1 - a) * u / Math.Sqrt(a);
                var (alpha, beta, gamma, sigma) = Coefficients(step, a, an);
                double k = alpha * p + beta * r + gamma, k0 = alpha * q + beta * u;
                m = k * m + k0;
                v = k * k * v + sigma * sigma;
                if (rep + 1 < repeats)
                {
                    double b = a / an;
                    m = Math.Sqrt(b) * m;
                    v = b * v + (1 - b);
                }
            }
        }
        return (m, v);
    }

    private static (double Alpha, double Beta, double Gamma, double Sigma) Coefficients(ISamplerStep step, double a, double an)
    {
        switch (step)
        {
            case FreeDoMEtaStep f:
                // x' = sqrt(a') x0 + eta sqrt(1-a') z + sqrt(1-a') sqrt(1-eta^2) eps
                return (Math.Sqrt(an), Math.Sqrt(1 - an) * Math.Sqrt(1 - f.Eta * f.Eta), 0, f.Eta * Math.Sqrt(1 - an));
            case DdimStep d:
            {
                // Song et al. (12)/(16): sigma^2 = eta^2 (1-a')/(1-a) (1 - a/a'); x' = sqrt(a') x0 + sqrt(1-a'-sigma^2) eps + sigma z
                double s2 = d.Eta * d.Eta * (1 - an) / (1 - a) * (1 - a / an);
                return (Math.Sqrt(an), Math.Sqrt(Math.Max(1 - an - s2, 0)), 0, Math.Sqrt(s2));
            }
            case DdpmPosteriorStep:
            {
                // q(x_t' | x_t, x0) over the interval: beta' = 1 - a/a', mean = sqrt(a') beta'/(1-a) x0 + sqrt(a/a') (1-a')/(1-a) x_t,
                // variance (1-a')/(1-a) beta'
                double betaInterval = 1 - a / an;
                return (Math.Sqrt(an) * betaInterval / (1 - a), 0, Math.Sqrt(a / an) * (1 - an) / (1 - a), Math.Sqrt((1 - an) / (1 - a) * betaInterval));
            }
            default:
                throw new NotSupportedException(step.GetType().Name);
        }
    }
}
