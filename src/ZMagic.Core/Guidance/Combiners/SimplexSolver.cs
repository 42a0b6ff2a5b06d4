namespace ZMagic.Core.Guidance;

/// <summary>
/// Minimises the CAGrad dual <c>f(w) = w . b + coef * sqrt(w^T G w + eps)</c> over the probability simplex for any
/// number of tasks K, with accelerated projected gradient (FISTA with backtracking and adaptive restart). f is
/// convex (G is a Gram matrix), so this converges to the global optimum; it works on K x K numbers only.
/// </summary>
internal static class SimplexSolver
{
    /// <summary>The minimiser on the simplex and the objective there.</summary>
    public static (double[] W, double Fun, int Iterations) Minimize(double[,] gram, double[] b, double coef, double eps, int maxIterations = 20000, double tolerance = 1e-15)
    {
        int k = b.Length;
        var w = new double[k];
        Array.Fill(w, 1.0 / k);
        if (k == 1) return (w, Objective(gram, b, coef, eps, w), 0);

        double diagMax = 0;
        for (int i = 0; i < k; i++) diagMax = Math.Max(diagMax, Math.Abs(gram[i, i]));
        double s0 = Math.Sqrt(Math.Max(Quad(gram, w), 0) + eps);
        double step = 1.0 / (diagMax * (1 + (s0 > 0 ? coef / s0 : 0)) + 1e-300);

        var y = (double[])w.Clone();
        double fw = Objective(gram, b, coef, eps, w);
        double theta = 1;
        int it = 0, quiet = 0;
        var z = new double[k];
        var trial = new double[k];
        for (; it < maxIterations; it++)
        {
            double fy = Objective(gram, b, coef, eps, y);
            var gy = Gradient(gram, b, coef, eps, y);
            double fz;
            while (true)
            {
                for (int i = 0; i < k; i++) trial[i] = y[i] - step * gy[i];
                ProjectToSimplex(trial, z);
                fz = Objective(gram, b, coef, eps, z);
                double lin = 0, sq = 0;
                for (int i = 0; i < k; i++) { double d = z[i] - y[i]; lin += gy[i] * d; sq += d * d; }
                if (fz <= fy + lin + sq / (2 * step) + 1e-15 * Math.Abs(fy) || step < 1e-300) break;
                step *= 0.5;
            }
            if (fz > fw)
            {
                // Adaptive restart: momentum overshot; continue from the best point without it.
                theta = 1;
                Array.Copy(w, y, k);
                if (++quiet > 50) break;
                continue;
            }
            double change = 0;
            for (int i = 0; i < k; i++) change = Math.Max(change, Math.Abs(z[i] - w[i]));
            double thetaNext = (1 + Math.Sqrt(1 + 4 * theta * theta)) / 2;
            double mom = (theta - 1) / thetaNext;
            for (int i = 0; i < k; i++) y[i] = z[i] + mom * (z[i] - w[i]);
            Array.Copy(z, w, k);
            fw = fz;
            theta = thetaNext;
            step *= 1.2;
            quiet = change <= tolerance ? quiet + 1 : 0;
            if (quiet > 20) break;
        }
        return (w, fw, it);
    }

    /// <summary><c>w . b + coef * sqrt(w^T G w + eps)</c>.</summary>
    public static double Objective(double[,] gram, double[] b, double coef, double eps, double[] w)
    {
        double lin = 0;
        for (int i = 0; i < w.Length; i++) lin += w[i] * b[i];
        return lin + coef * Math.Sqrt(Math.Max(Quad(gram, w), 0) + eps);
    }

    /// <summary><c>w^T G w</c>.</summary>
    public static double Quad(double[,] gram, double[] w)
    {
        double q = 0;
        for (int i = 0; i < w.Length; i++)
            for (int j = 0; j < w.Length; j++)
                q += w[i] * gram[i, j] * w[j];
        return q;
    }

    private static double[] Gradient(double[,] gram, double[] b, double coef, double eps, double[] w)
    {
        int k = w.Length;
        double s = Math.Sqrt(Math.Max(Quad(gram, w), 0) + eps);
        var g = new double[k];
        for (int i = 0; i < k; i++)
        {
            double gw = 0;
            for (int j = 0; j < k; j++) gw += gram[i, j] * w[j];
            g[i] = b[i] + (s > 1e-300 ? coef * gw / s : 0);
        }
        return g;
    }

    /// <summary>Euclidean projection of <paramref name="v"/> onto the probability simplex (sort-based).</summary>
    public static void ProjectToSimplex(double[] v, double[] result)
    {
        int k = v.Length;
        var u = (double[])v.Clone();
        Array.Sort(u);
        Array.Reverse(u);
        double cumulative = 0, tau = 0;
        for (int i = 0; i < k; i++)
        {
            cumulative += u[i];
            double t = (cumulative - 1) / (i + 1);
            if (u[i] - t > 0) tau = t;
        }
        for (int i = 0; i < k; i++) result[i] = Math.Max(v[i] - tau, 0);
    }
}
