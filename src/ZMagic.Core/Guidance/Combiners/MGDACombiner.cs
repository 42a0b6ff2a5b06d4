using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// MGDA (Désidéri 2012; Sener and Koltun, NeurIPS 2018): the minimum-norm point of the convex hull of the task
/// gradients, a common descent direction for all tasks. Solved on the K x K Gram matrix by Frank-Wolfe (exactly for
/// two tasks). The output is multiplied by K so that it equals the plain sum when all tasks agree.
/// </summary>
public sealed class MGDACombiner : IGradientCombiner
{
    /// <summary>Creates the combiner.</summary>
    public MGDACombiner(bool perChannel = false, int maxIterations = 250)
    {
        if (maxIterations < 1) throw new ArgumentOutOfRangeException(nameof(maxIterations), maxIterations, "At least one iteration is needed.");
        PerChannel = perChannel;
        MaxIterations = maxIterations;
    }

    /// <summary>One problem per channel instead of one for the whole tensor.</summary>
    public bool PerChannel { get; }

    /// <summary>Frank-Wolfe iterations for three or more tasks.</summary>
    public int MaxIterations { get; }

    /// <inheritdoc />
    public string Name => PerChannel ? "mgda(per-channel)" : "mgda";

    /// <inheritdoc />
    public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
    {
        TaskGram.Validate(taskGradients, PerChannel, Name);
        int k = taskGradients.Count;
        var grams = TaskGram.Compute(taskGradients, PerChannel);
        return TaskGram.WeightedSum(taskGradients, grams.Select(g => MinNormWeights(g, MaxIterations).Select(w => w * k).ToArray()).ToArray(), PerChannel);
    }

    /// <summary>Weights w on the simplex minimising <c>||sum_i w_i g_i||^2 = w^T G w</c>.</summary>
    public static double[] MinNormWeights(double[,] gram, int maxIterations = 250)
    {
        ArgumentNullException.ThrowIfNull(gram);
        int k = gram.GetLength(0);
        var w = new double[k];
        if (k == 1) { w[0] = 1; return w; }
        if (k == 2)
        {
            double g11 = gram[0, 0], g12 = gram[0, 1], g22 = gram[1, 1];
            double denom = g11 + g22 - 2 * g12;
            double x = denom > 0 ? Math.Clamp((g22 - g12) / denom, 0, 1) : 0.5;
            w[0] = x; w[1] = 1 - x;
            return w;
        }
        Array.Fill(w, 1.0 / k);
        var gw = new double[k];
        for (int it = 0; it < maxIterations; it++)
        {
            for (int i = 0; i < k; i++) { double s = 0; for (int j = 0; j < k; j++) s += gram[i, j] * w[j]; gw[i] = s; }
            int t = 0;
            for (int i = 1; i < k; i++) if (gw[i] < gw[t]) t = i;
            // Exact line search between v = G w (current point) and the vertex g_t.
            double vv = 0; for (int i = 0; i < k; i++) vv += w[i] * gw[i];
            double vt = gw[t], tt = gram[t, t];
            double denom = vv + tt - 2 * vt;
            if (denom <= 1e-300) break;
            double gamma = Math.Clamp((vv - vt) / denom, 0, 1);
            if (gamma < 1e-12) break;
            for (int i = 0; i < k; i++) w[i] *= 1 - gamma;
            w[t] += gamma;
        }
        return w;
    }
}
