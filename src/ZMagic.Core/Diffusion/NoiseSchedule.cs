namespace ZMagic.Core.Diffusion;

/// <summary>
/// A discrete forward-process noise schedule: betas over the training timesteps and their cumulative
/// products <c>abar_t = prod_{s=0..t} (1 - beta_s)</c>, held in float64 on the host.
/// </summary>
/// <remarks>
/// Timestep -1 is the clean end of the chain (<c>abar_{-1} = 1</c>), as FreeDoM's <c>compute_alpha</c> defines it,
/// so the last sampler step of a trajectory may target t' = -1.
/// </remarks>
public sealed class NoiseSchedule
{
    private readonly double[] _betas;
    private readonly double[] _alphaBars;

    /// <summary>Builds a schedule from explicit betas, each in (0, 1).</summary>
    /// <exception cref="ArgumentException">The list is empty or a beta is outside (0, 1) or not finite.</exception>
    public NoiseSchedule(IReadOnlyList<double> betas)
    {
        ArgumentNullException.ThrowIfNull(betas);
        if (betas.Count == 0) throw new ArgumentException("A noise schedule needs at least one beta; got an empty list.", nameof(betas));
        _betas = new double[betas.Count];
        _alphaBars = new double[betas.Count];
        double prod = 1.0;
        for (int i = 0; i < betas.Count; i++)
        {
            double b = betas[i];
            if (!double.IsFinite(b) || b <= 0 || b >= 1)
                throw new ArgumentException($"beta[{i}] = {b} is outside the open interval (0, 1).", nameof(betas));
            _betas[i] = b;
            prod *= 1.0 - b;
            _alphaBars[i] = prod;
        }
    }

    /// <summary>Number of training timesteps (T); valid timesteps are 0..T-1.</summary>
    public int TrainSteps => _betas.Length;

    /// <summary>The betas, in float64.</summary>
    public IReadOnlyList<double> Betas => _betas;

    /// <summary>The cumulative products abar_t for t = 0..T-1.</summary>
    public IReadOnlyList<double> AlphaBars => _alphaBars;

    /// <summary>
    /// abar used for the step past t = 0 (t = -1): 1 by default (FreeDoM, DDPM); Stable Diffusion 1.x's scheduler
    /// uses abar_0 instead (<c>set_alpha_to_one = false</c>).
    /// </summary>
    public double FinalAlphaBar { get; init; } = 1.0;

    /// <summary>abar_t, with abar_{-1} = <see cref="FinalAlphaBar"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">t is below -1 or at least <see cref="TrainSteps"/>.</exception>
    public double AlphaBar(int t)
    {
        if (t == -1) return FinalAlphaBar;
        if (t < -1 || t >= _betas.Length)
            throw new ArgumentOutOfRangeException(nameof(t), t, $"Timestep must be in [-1, {_betas.Length - 1}] for this {_betas.Length}-step schedule.");
        return _alphaBars[t];
    }

    /// <summary>The DDPM linear schedule: betas evenly spaced from <paramref name="start"/> to <paramref name="end"/> (numpy linspace).</summary>
    public static NoiseSchedule Linear(int trainSteps = 1000, double start = 1e-4, double end = 0.02)
    {
        ValidateCount(trainSteps);
        return new NoiseSchedule(Linspace(start, end, trainSteps));
    }

    /// <summary>
    /// The Stable Diffusion "scaled_linear" schedule: betas = linspace(sqrt(start), sqrt(end), T)^2.
    /// </summary>
    /// <remarks>
    /// Computed in float64. diffusers computes the same formula in float32 (its betas and cumulative products differ
    /// from these by up to about 5e-7 relative).
    /// </remarks>
    public static NoiseSchedule ScaledLinear(int trainSteps = 1000, double start = 0.00085, double end = 0.012)
    {
        ValidateCount(trainSteps);
        var root = Linspace(Math.Sqrt(start), Math.Sqrt(end), trainSteps);
        for (int i = 0; i < root.Length; i++) root[i] *= root[i];
        return new NoiseSchedule(root);
    }

    /// <summary>
    /// The cosine schedule of Nichol and Dhariwal (improved DDPM, guided-diffusion):
    /// <c>abar(t) = cos^2(((t/T) + s) / (1 + s) * pi / 2)</c>, betas clipped at <paramref name="maxBeta"/>.
    /// </summary>
    public static NoiseSchedule Cosine(int trainSteps = 1000, double s = 0.008, double maxBeta = 0.999)
    {
        ValidateCount(trainSteps);
        static double F(double u, double s) => Math.Pow(Math.Cos((u + s) / (1 + s) * Math.PI / 2), 2);
        var betas = new double[trainSteps];
        for (int i = 0; i < trainSteps; i++)
        {
            double t1 = (double)i / trainSteps, t2 = (double)(i + 1) / trainSteps;
            betas[i] = Math.Min(1 - F(t2, s) / F(t1, s), maxBeta);
        }
        return new NoiseSchedule(betas);
    }

    private static void ValidateCount(int trainSteps)
    {
        if (trainSteps < 1) throw new ArgumentOutOfRangeException(nameof(trainSteps), trainSteps, "A schedule needs at least one training timestep.");
    }

    /// <summary>numpy.linspace(start, end, n) in float64 (the last value is exactly <paramref name="end"/>).</summary>
    internal static double[] Linspace(double start, double end, int n)
    {
        var v = new double[n];
        if (n == 1) { v[0] = start; return v; }
        double step = (end - start) / (n - 1);
        for (int i = 0; i < n; i++) v[i] = start + i * step;
        v[n - 1] = end;
        return v;
    }
}
