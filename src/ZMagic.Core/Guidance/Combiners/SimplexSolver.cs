namespace ZMagic.Core.Guidance;

/// <summary>
/// Minimises the CAGrad dual <c>f(w) = w . b + coef * sqrt(w^T G w + eps)</c> over the probability simplex for any
/// number of tasks K, exactly. f is convex (G is a Gram matrix). On the simplex <c>eps = eps (1^T w)^2</c>, so f equals
/// <c>w . b + coef ||w||_H</c> with <c>H = G + eps 11^T</c>, and on the affine hull of one face S the stationary point
/// has a closed form (a quadratic in the face's multiplier, <see cref="FaceStationaryPoint"/>). The solver:
/// <list type="number">
/// <item>accelerated projected gradient (FISTA) for a feasible start and a first guess of the support;</item>
/// <item>a primal active-set method over faces with that closed-form face solve: move towards the face's stationary
/// point, dropping coordinates that hit zero, and adding the coordinate with the most negative KKT multiplier, until
/// the KKT conditions hold (a certificate of global optimality for a convex problem);</item>
/// <item>if the active set does not certify (singular faces from identical or rank-deficient tasks, or an optimum at
/// the norm's kink <c>g_w = 0</c>, where zero lies in the tasks' convex hull), every face is enumerated
/// (K &lt;= <see cref="EnumerationLimit"/>; always for K &lt;= <see cref="AlwaysEnumerate"/>) and the best feasible
/// stationary or kink point is kept.</item>
/// </list>
/// The best of all candidates is polished by exact pairwise line searches and returned. Only K x K numbers are touched.
/// </summary>
internal static class SimplexSolver
{
    /// <summary>Largest K for which every face (2^K - 1) is enumerated when the active set does not certify.</summary>
    public const int EnumerationLimit = 12;

    /// <summary>
    /// Up to this K every face is enumerated even after a KKT certificate (at most 255 faces of K x K work): near the
    /// kink g_w = 0 the certificate's gradient is ill-conditioned, and enumeration includes the kink points.
    /// </summary>
    public const int AlwaysEnumerate = 8;

    /// <summary>The minimiser on the simplex and the objective there.</summary>
    public static (double[] W, double Fun, int Iterations) Minimize(double[,] gram, double[] b, double coef, double eps, int maxIterations = 20000, double tolerance = 1e-15)
    {
        int k = b.Length;
        if (k == 1) return (new[] { 1.0 }, Objective(gram, b, coef, eps, new[] { 1.0 }), 0);
        if (coef <= 0)
        {
            // Linear objective: the best vertex.
            int best = 0;
            for (int i = 1; i < k; i++) if (b[i] < b[best]) best = i;
            var v = new double[k];
            v[best] = 1;
            return (v, Objective(gram, b, coef, eps, v), 0);
        }
        var h = new double[k, k];
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) h[i, j] = gram[i, j] + eps;

        var (w, fw, it) = Fista(gram, b, coef, eps, maxIterations, tolerance);
        var (wa, certified, rounds) = ActiveSet(h, b, coef, w);
        it += rounds;
        double fa = OnSimplex(wa) ? Objective(gram, b, coef, eps, wa) : double.NaN;
        if (fa <= fw) (w, fw) = (wa, fa);
        if ((!certified && k <= EnumerationLimit) || k <= AlwaysEnumerate)
        {
            var we = Enumerate(gram, h, b, coef, eps);
            double fe = OnSimplex(we) ? Objective(gram, b, coef, eps, we) : double.NaN;
            if (fe < fw) (w, fw) = (we, fe);
        }
        Normalize(w);                                   // FISTA's projection can leave the sum a few 1e-10 off
        fw = PairwisePolish(gram, b, coef, eps, w, Objective(gram, b, coef, eps, w));
        return (w, fw, it);
    }

    /// <summary>
    /// The stationary point of <c>w . b + coef ||w||_H</c> on the affine hull <c>{w : w_j = 0 (j not in S), sum w = 1}</c>,
    /// or null when H restricted to S is (numerically) singular or the face has no stationary point (f unbounded below
    /// on the hull). With <c>a = H_S^-1 1, c = H_S^-1 b_S</c>, <c>A = 1.a, C = 1.c, B = b_S.c</c>: stationarity
    /// <c>b_S + coef H_S w / ||w||_H = nu 1</c> and <c>sum w = 1</c> give <c>coef^2 = nu^2 A - 2 nu C + B</c>, and
    /// <c>w = (nu a - c) / sqrt(D)</c> with <c>D = C^2 - A B + A coef^2 &gt; 0</c>.
    /// </summary>
    public static double[]? FaceStationaryPoint(double[,] h, double[] b, double coef, int[] face)
    {
        int m = face.Length, k = b.Length;
        var result = new double[k];
        if (m == 1) { result[face[0]] = 1; return result; }
        var mat = new double[m, m];
        var rhs = new double[m, 2];
        double diagMax = 0;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < m; j++) mat[i, j] = h[face[i], face[j]];
            diagMax = Math.Max(diagMax, Math.Abs(mat[i, i]));
            rhs[i, 0] = 1;
            rhs[i, 1] = b[face[i]];
        }
        if (!(diagMax > 0) || !SolveInPlace(mat, rhs, 1e-15 * diagMax)) return null;
        double aSum = 0, cSum = 0, bDot = 0;
        for (int i = 0; i < m; i++) { aSum += rhs[i, 0]; cSum += rhs[i, 1]; bDot += b[face[i]] * rhs[i, 1]; }
        double d = cSum * cSum - aSum * bDot + aSum * coef * coef;
        if (!(aSum > 0) || !(d > 0)) return null;
        double sd = Math.Sqrt(d);
        double nu = (cSum + sd) / aSum;
        for (int i = 0; i < m; i++) result[face[i]] = (nu * rhs[i, 0] - rhs[i, 1]) / sd;
        return result;
    }

    /// <summary>
    /// Where the face's tasks affinely span zero (G_S singular with a null vector d, sum d != 0, d / sum d &gt;= 0),
    /// <c>w = d / sum d</c> has <c>g_w = 0</c>: f is not differentiable there (the norm's kink), so no stationary point
    /// describes it, yet it is the minimiser whenever <c>coef &gt;= ||g0||</c> and zero lies in the tasks' hull. Returns
    /// that point, or null.
    /// </summary>
    public static double[]? FaceKinkPoint(double[,] gram, int[] face)
    {
        int m = face.Length, k = gram.GetLength(0);
        if (m < 2) return null;
        var a = new double[m, m];
        double diagMax = 0;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < m; j++) a[i, j] = gram[face[i], face[j]];
            diagMax = Math.Max(diagMax, Math.Abs(a[i, i]));
        }
        if (!(diagMax > 0)) return null;
        // Row echelon form with partial pivoting; exactly one free column gives the null vector.
        double tol = 1e-10 * diagMax;
        var pivotCols = new List<int>();
        int row = 0, free = -1;
        for (int col = 0; col < m; col++)
        {
            int p = row;
            for (int i = row + 1; i < m; i++) if (Math.Abs(a[i, col]) > Math.Abs(a[p, col])) p = i;
            if (row >= m || !(Math.Abs(a[p, col]) > tol))
            {
                if (free >= 0) return null;
                free = col;
                continue;
            }
            for (int j = 0; j < m; j++) (a[p, j], a[row, j]) = (a[row, j], a[p, j]);
            for (int i = row + 1; i < m; i++)
            {
                double f = a[i, col] / a[row, col];
                for (int j = col; j < m; j++) a[i, j] -= f * a[row, j];
            }
            pivotCols.Add(col);
            row++;
        }
        if (free < 0) return null;
        var d = new double[m];
        d[free] = 1;
        for (int r = pivotCols.Count - 1; r >= 0; r--)
        {
            int col = pivotCols[r];
            double s = 0;
            for (int j = col + 1; j < m; j++) s += a[r, j] * d[j];
            d[col] = -s / a[r, col];
        }
        double sum = d.Sum();
        if (!(Math.Abs(sum) > 1e-12 * d.Max(Math.Abs))) return null;
        var w = new double[k];
        for (int i = 0; i < m; i++)
        {
            double v = d[i] / sum;
            if (v < -1e-12) return null;
            w[face[i]] = Math.Max(v, 0);
        }
        Normalize(w);
        return Quad(gram, w) <= 1e-20 * diagMax ? w : null;
    }

    /// <summary>Gaussian elimination with partial pivoting; false when a pivot falls below <paramref name="pivotTol"/>.</summary>
    private static bool SolveInPlace(double[,] a, double[,] rhs, double pivotTol)
    {
        int n = a.GetLength(0), r = rhs.GetLength(1);
        for (int col = 0; col < n; col++)
        {
            int p = col;
            for (int i = col + 1; i < n; i++) if (Math.Abs(a[i, col]) > Math.Abs(a[p, col])) p = i;
            if (!(Math.Abs(a[p, col]) > pivotTol)) return false;
            if (p != col)
            {
                for (int j = 0; j < n; j++) (a[p, j], a[col, j]) = (a[col, j], a[p, j]);
                for (int j = 0; j < r; j++) (rhs[p, j], rhs[col, j]) = (rhs[col, j], rhs[p, j]);
            }
            for (int i = col + 1; i < n; i++)
            {
                double f = a[i, col] / a[col, col];
                if (f == 0) continue;
                for (int j = col; j < n; j++) a[i, j] -= f * a[col, j];
                for (int j = 0; j < r; j++) rhs[i, j] -= f * rhs[col, j];
            }
        }
        for (int col = n - 1; col >= 0; col--)
            for (int j = 0; j < r; j++)
            {
                double s = rhs[col, j];
                for (int q = col + 1; q < n; q++) s -= a[col, q] * rhs[q, j];
                rhs[col, j] = s / a[col, col];
            }
        return true;
    }

    /// <summary>
    /// Primal active-set method from the feasible point <paramref name="start"/>. Returns the final point and whether
    /// it satisfies the KKT conditions (then it is the global minimiser).
    /// </summary>
    private static (double[] W, bool Certified, int Rounds) ActiveSet(double[,] h, double[] b, double coef, double[] start)
    {
        int k = b.Length;
        var w = (double[])start.Clone();
        var inFace = new bool[k];
        for (int i = 0; i < k; i++) inFace[i] = w[i] > 0;
        int rounds = 0;
        for (; rounds < 4 * k + 20; rounds++)
        {
            var face = Enumerable.Range(0, k).Where(i => inFace[i]).ToArray();
            var target = FaceStationaryPoint(h, b, coef, face);
            if (target is null) return (w, false, rounds);
            double alpha = 1;
            int blocking = -1;
            foreach (var i in face)
                if (target[i] < 0)
                {
                    double a = w[i] / (w[i] - target[i]);
                    if (a < alpha) { alpha = a; blocking = i; }
                }
            if (blocking >= 0)
            {
                // Convexity: f decreases along the segment towards the face's minimiser; stop where a weight hits zero.
                for (int i = 0; i < k; i++) w[i] += alpha * (target[i] - w[i]);
                w[blocking] = 0;
                foreach (var i in face) if (w[i] <= 0) { w[i] = 0; inFace[i] = false; }
                Normalize(w);
                continue;
            }
            w = target;
            Normalize(w);
            // KKT: grad_j >= nu for every j outside the face (nu = the face's common gradient value).
            var g = HGradient(h, b, coef, w);
            double nu = face.Average(i => g[i]), scale = g.Max(Math.Abs) + 1e-300;
            int entering = -1;
            double worst = -1e-12 * scale;
            for (int j = 0; j < k; j++)
                if (!inFace[j] && g[j] - nu < worst) { worst = g[j] - nu; entering = j; }
            if (entering < 0) return (w, true, rounds);
            inFace[entering] = true;
        }
        return (w, false, rounds);
    }

    /// <summary>The best feasible face stationary point over every face (and every vertex).</summary>
    private static double[] Enumerate(double[,] gram, double[,] h, double[] b, double coef, double eps)
    {
        int k = b.Length;
        double[]? best = null;
        double bestF = double.PositiveInfinity;
        for (int mask = 1; mask < 1 << k; mask++)
        {
            var face = Enumerable.Range(0, k).Where(i => (mask >> i & 1) != 0).ToArray();
            foreach (var w in new[] { FaceStationaryPoint(h, b, coef, face), FaceKinkPoint(gram, face) })
            {
                if (w is null || w.Any(v => v < -1e-12)) continue;
                Normalize(w);
                // Ranked by f itself: in H = G + eps 11^T the small eps is rounded against large Gram entries.
                double f = Objective(gram, b, coef, eps, w);
                if (f < bestF) (best, bestF) = (w, f);
            }
        }
        return best!;
    }

    /// <summary>
    /// Final polish: exact 1-D minimisations along <c>e_i - e_j</c> (moving weight between two tasks, which keeps the
    /// point on the simplex), swept over all pairs until none improves f. Where the closed forms lose digits (faces
    /// that are nearly singular, optima next to the kink g_w = 0), this recovers them from f itself.
    /// </summary>
    private static double PairwisePolish(double[,] gram, double[] b, double coef, double eps, double[] w, double fw)
    {
        int k = w.Length;
        var trial = new double[k];
        for (int sweep = 0; sweep < 20; sweep++)
        {
            bool improved = false;
            for (int i = 0; i < k; i++)
                for (int j = i + 1; j < k; j++)
                {
                    double lo = -w[i], hi = w[j];
                    if (!(hi - lo > 0)) continue;
                    double F(double t)
                    {
                        Array.Copy(w, trial, k);
                        trial[i] = Math.Clamp(w[i] + t, 0, w[i] + w[j]);
                        trial[j] = w[i] + w[j] - trial[i];
                        return Objective(gram, b, coef, eps, trial);
                    }
                    var r = ScalarMinimizers.BoundedBrent(F, lo, hi, xatol: 1e-15 * (hi - lo) + 1e-300, maxiter: 200);
                    double best = r.X, fBest = F(r.X);
                    foreach (double edge in new[] { lo, hi })
                    {
                        double fe = F(edge);
                        if (fe < fBest) (best, fBest) = (edge, fe);
                    }
                    if (fBest < fw)
                    {
                        improved |= fBest < fw - 1e-15 * Math.Abs(fw);
                        double pair = w[i] + w[j];
                        w[i] = Math.Clamp(w[i] + best, 0, pair);
                        w[j] = pair - w[i];
                        fw = Objective(gram, b, coef, eps, w);
                    }
                }
            if (!improved) break;
        }
        return fw;
    }

    private static bool OnSimplex(double[] w) => w.All(v => v >= 0 && double.IsFinite(v)) && Math.Abs(w.Sum() - 1) < 1e-9;

    private static void Normalize(double[] w)
    {
        double s = 0;
        for (int i = 0; i < w.Length; i++) { if (w[i] < 0) w[i] = 0; s += w[i]; }
        for (int i = 0; i < w.Length; i++) w[i] /= s;
    }

    private static double HObjective(double[,] h, double[] b, double coef, double[] w)
    {
        double lin = 0;
        for (int i = 0; i < w.Length; i++) lin += w[i] * b[i];
        return lin + coef * Math.Sqrt(Math.Max(Quad(h, w), 0));
    }

    private static double[] HGradient(double[,] h, double[] b, double coef, double[] w)
    {
        int k = w.Length;
        double s = Math.Sqrt(Math.Max(Quad(h, w), 0));
        var g = new double[k];
        for (int i = 0; i < k; i++)
        {
            double hw = 0;
            for (int j = 0; j < k; j++) hw += h[i, j] * w[j];
            g[i] = b[i] + (s > 1e-300 ? coef * hw / s : 0);
        }
        return g;
    }

    /// <summary>Accelerated projected gradient with backtracking and adaptive restart (the warm start).</summary>
    private static (double[] W, double Fun, int Iterations) Fista(double[,] gram, double[] b, double coef, double eps, int maxIterations, double tolerance)
    {
        int k = b.Length;
        var w = new double[k];
        Array.Fill(w, 1.0 / k);
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

    /// <summary>
    /// The row means of a Gram matrix, <c>G 1/K</c> = <c>g_i . g0</c> with g0 the tasks' mean: the linear term b of the
    /// dual for every CAGrad form that measures conflict against the mean gradient.
    /// </summary>
    public static double[] RowMeans(double[,] gram)
    {
        int k = gram.GetLength(0);
        var b = new double[k];
        for (int i = 0; i < k; i++) { double s = 0; for (int j = 0; j < k; j++) s += gram[i, j]; b[i] = s / k; }
        return b;
    }

    /// <summary>The sum of every entry; for a Gram matrix <c>K^2 ||g0||^2</c>.</summary>
    public static double Sum(double[,] m) { double s = 0; foreach (var v in m) s += v; return s; }

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
