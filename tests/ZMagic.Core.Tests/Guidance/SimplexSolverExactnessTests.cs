using Xunit.Abstractions;
using ZMagic.Core.Guidance;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>
/// The K-task CAGrad dual solver must reach the optimum: over many random and adversarial problems (conflicting,
/// near-identical, scaled over six decades, rank-deficient, duplicated and zero tasks) with K = 3..6, its objective
/// may exceed an independent float64 reference by at most 1e-9 relative. The reference enumerates every face of the
/// simplex, solves each face's stationarity conditions in closed form (Cholesky, not the solver's elimination), keeps
/// the best feasible point, and is itself checked with the KKT conditions (a certificate of global optimality).
/// </summary>
public class SimplexSolverExactnessTests
{
    private readonly ITestOutputHelper _out;

    public SimplexSolverExactnessTests(ITestOutputHelper output) => _out = output;

    private const double RelBound = 1e-9;

    private static double Normal(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());

    private static double[][] Vectors(Random r, int k, int d, Func<int, int, double> entry)
    {
        var g = new double[k][];
        for (int i = 0; i < k; i++) { g[i] = new double[d]; for (int j = 0; j < d; j++) g[i][j] = entry(i, j); }
        return g;
    }

    /// <summary>Task gradients [K][d] of one kind.</summary>
    private static double[][] Problem(string kind, int k, int d, Random r)
    {
        switch (kind)
        {
            case "random":
                return Vectors(r, k, d, (_, _) => Normal(r));
            case "conflicting":
            {
                // Centred random directions (negative mean pairwise cosine) plus a weak common part.
                var v = Vectors(r, k, d, (_, _) => Normal(r));
                var u = Enumerable.Range(0, d).Select(_ => Normal(r)).ToArray();
                var mean = Enumerable.Range(0, d).Select(j => v.Average(x => x[j])).ToArray();
                double common = 0.05 * r.NextDouble();
                return v.Select(x => x.Select((e, j) => e - mean[j] + common * u[j]).ToArray()).ToArray();
            }
            case "near_identical":
            {
                var u = Enumerable.Range(0, d).Select(_ => Normal(r)).ToArray();
                double spread = Math.Pow(10, -2 - 6 * r.NextDouble());
                return Vectors(r, k, d, (_, j) => u[j] + spread * Normal(r));
            }
            case "scaled":
            {
                var s = Enumerable.Range(0, k).Select(_ => Math.Pow(10, 6 * r.NextDouble() - 3)).ToArray();
                return Vectors(r, k, d, (i, _) => s[i] * Normal(r));
            }
            case "rank_deficient":
            {
                // Rank 1 or 2 spans (K tasks in a 1- or 2-dimensional subspace), sometimes a duplicate and a zero task.
                int rank = 1 + r.Next(2);
                var basis = Vectors(r, rank, d, (_, _) => Normal(r));
                var g = Vectors(r, k, d, (i, j) => 0);
                for (int i = 0; i < k; i++)
                {
                    var a = Enumerable.Range(0, rank).Select(_ => Normal(r)).ToArray();
                    for (int j = 0; j < d; j++) for (int q = 0; q < rank; q++) g[i][j] += a[q] * basis[q][j];
                }
                if (r.Next(2) == 0) g[k - 1] = (double[])g[0].Clone();
                if (r.Next(3) == 0) g[1] = new double[d];
                return g;
            }
            case "duplicated":
            {
                var g = Vectors(r, k, d, (_, _) => Normal(r));
                for (int i = 1; i < k; i += 2) g[i] = g[i - 1].Select(e => e * (r.Next(2) == 0 ? 1 : 3)).ToArray();
                return g;
            }
            default: throw new ArgumentException(kind);
        }
    }

    private static double[,] Gram(double[][] g)
    {
        int k = g.Length;
        var m = new double[k, k];
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) m[i, j] = g[i].Zip(g[j], (a, b) => a * b).Sum();
        return m;
    }

    private static double Objective(double[,] gram, double[] b, double coef, double eps, double[] w)
    {
        int k = w.Length;
        double lin = 0, q = 0;
        for (int i = 0; i < k; i++) { lin += w[i] * b[i]; for (int j = 0; j < k; j++) q += w[i] * gram[i, j] * w[j]; }
        return lin + coef * Math.Sqrt(Math.Max(q, 0) + eps);
    }

    /// <summary>Cholesky solve of S x = rhs; null when S is not numerically positive definite.</summary>
    private static double[]? Cholesky(double[,] s, double[] rhs)
    {
        int n = rhs.Length;
        var l = new double[n, n];
        double diag = 0;
        for (int i = 0; i < n; i++) diag = Math.Max(diag, s[i, i]);
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = s[i, j];
                for (int q = 0; q < j; q++) sum -= l[i, q] * l[j, q];
                if (i == j)
                {
                    if (!(sum > 1e-14 * diag)) return null;
                    l[i, i] = Math.Sqrt(sum);
                }
                else l[i, j] = sum / l[j, j];
            }
        var y = new double[n];
        for (int i = 0; i < n; i++) { double sum = rhs[i]; for (int q = 0; q < i; q++) sum -= l[i, q] * y[q]; y[i] = sum / l[i, i]; }
        var x = new double[n];
        for (int i = n - 1; i >= 0; i--) { double sum = y[i]; for (int q = i + 1; q < n; q++) sum -= l[q, i] * x[q]; x[i] = sum / l[i, i]; }
        return x;
    }

    /// <summary>
    /// Exhaustive reference: on the simplex eps = eps (sum w)^2, so f = b.w + coef sqrt(w^T (G + eps 11^T) w); on each
    /// face's affine hull the stationary point solves b + coef H w / ||w||_H = nu 1, sum w = 1 (a quadratic in nu).
    /// </summary>
    private static (double[] W, bool Kink) Reference(double[,] gram, double[] b, double coef, double eps)
    {
        int k = b.Length;
        double[]? best = null;
        double bestF = double.PositiveInfinity;
        bool bestKink = false;
        for (int mask = 1; mask < 1 << k; mask++)
        {
            var face = Enumerable.Range(0, k).Where(i => (mask >> i & 1) != 0).ToArray();
            int m = face.Length;
            var w = new double[k];
            if (m == 1) w[face[0]] = 1;
            else
            {
                if (coef <= 0) continue;
                var h = new double[m, m];
                for (int i = 0; i < m; i++) for (int j = 0; j < m; j++) h[i, j] = gram[face[i], face[j]] + eps;
                var a = Cholesky(h, Enumerable.Repeat(1.0, m).ToArray());
                var c = Cholesky(h, face.Select(i => b[i]).ToArray());
                if (a is null || c is null) continue;
                double aa = a.Sum(), cc = c.Sum(), bb = face.Select((i, q) => b[i] * c[q]).Sum();
                double disc = cc * cc - aa * bb + aa * coef * coef;
                if (!(aa > 0) || !(disc > 0)) continue;
                double nu = (cc + Math.Sqrt(disc)) / aa;
                for (int q = 0; q < m; q++) w[face[q]] = (nu * a[q] - c[q]) / Math.Sqrt(disc);
                if (w.Any(v => v < -1e-12)) continue;
                for (int i = 0; i < k; i++) w[i] = Math.Max(w[i], 0);
                double s = w.Sum();
                for (int i = 0; i < k; i++) w[i] /= s;
            }
            double f = Objective(gram, b, coef, eps, w);
            if (f < bestF) (best, bestF, bestKink) = (w, f, false);
        }
        // Kink candidates: faces whose tasks affinely span zero (g_w = 0, where f is not differentiable). On a face of
        // m tasks, fix the last weight's null-vector entry to 1 and solve the leading (m-1) block by Cholesky.
        for (int mask = 1; mask < 1 << k; mask++)
        {
            var face = Enumerable.Range(0, k).Where(i => (mask >> i & 1) != 0).ToArray();
            int m = face.Length;
            if (m < 2) continue;
            var lead = new double[m - 1, m - 1];
            for (int i = 0; i < m - 1; i++) for (int j = 0; j < m - 1; j++) lead[i, j] = gram[face[i], face[j]];
            var x = Cholesky(lead, Enumerable.Range(0, m - 1).Select(i => -gram[face[i], face[m - 1]]).ToArray());
            if (x is null) continue;
            var d = x.Append(1.0).ToArray();
            double sum = d.Sum();
            if (Math.Abs(sum) < 1e-9 || d.Any(v => v / sum < -1e-12)) continue;
            var w = new double[k];
            for (int q = 0; q < m; q++) w[face[q]] = Math.Max(d[q] / sum, 0);
            double s = w.Sum();
            for (int i = 0; i < k; i++) w[i] /= s;
            // Keep it only where g_w really vanishes (relative to the tasks' scale).
            double q2 = 0, diag = 0;
            for (int i = 0; i < k; i++) { diag = Math.Max(diag, gram[i, i]); for (int j = 0; j < k; j++) q2 += w[i] * gram[i, j] * w[j]; }
            if (q2 > 1e-20 * diag) continue;
            double f = Objective(gram, b, coef, eps, w);
            if (f < bestF) (best, bestF, bestKink) = (w, f, true);
        }
        return (best!, bestKink);
    }

    /// <summary>KKT at w: for j outside the support, grad_j >= nu (the support's common gradient), within tolerance.</summary>
    private static double KktViolation(double[,] gram, double[] b, double coef, double eps, double[] w)
    {
        int k = w.Length;
        double q = 0;
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) q += w[i] * gram[i, j] * w[j];
        double s = Math.Sqrt(Math.Max(q, 0) + eps);
        var g = new double[k];
        for (int i = 0; i < k; i++)
        {
            double gw = 0;
            for (int j = 0; j < k; j++) gw += gram[i, j] * w[j];
            g[i] = b[i] + (s > 0 ? coef * gw / s : 0);
        }
        var support = Enumerable.Range(0, k).Where(i => w[i] > 1e-9).ToArray();
        double nu = support.Min(i => g[i]);
        double scale = g.Max(Math.Abs) + 1e-300;
        double spread = support.Max(i => g[i]) - nu;                 // stationarity on the support
        double dual = Enumerable.Range(0, k).Where(i => w[i] <= 1e-9).Select(i => Math.Max(nu - g[i], 0)).DefaultIfEmpty(0).Max();
        return Math.Max(spread, dual) / scale;
    }

    /// <summary>
    /// The float64 rounding floor of evaluating f itself (about 100 ulps of its two terms' magnitudes): where the
    /// optimum is near zero (zero in the tasks' hull, f* = 0 or coef sqrt(eps)), 1e-9 of f* is below what any
    /// evaluation of <c>w . b</c> can resolve.
    /// </summary>
    private static double Floor(double[,] gram, double[] b, double coef, double eps)
    {
        double diag = 0;
        for (int i = 0; i < b.Length; i++) diag = Math.Max(diag, gram[i, i]);
        return 100 * 2.2e-16 * (b.Max(Math.Abs) + coef * Math.Sqrt(diag + eps));
    }

    private static double MaxDiag(double[,] gram)
    {
        double diag = 0;
        for (int i = 0; i < gram.GetLength(0); i++) diag = Math.Max(diag, gram[i, i]);
        return diag;
    }

    private static double NormOfGw(double[,] gram, double eps, double[] w)
    {
        double q = 0;
        for (int i = 0; i < w.Length; i++) for (int j = 0; j < w.Length; j++) q += w[i] * gram[i, j] * w[j];
        return Math.Sqrt(Math.Max(q, 0) + eps);
    }

    public static TheoryData<string, bool> Kinds()
    {
        var data = new TheoryData<string, bool>();
        foreach (var kind in new[] { "random", "conflicting", "near_identical", "scaled", "rank_deficient", "duplicated" })
        {
            data.Add(kind, false);
            data.Add(kind, true);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ReachesTheExactOptimum(string kind, bool nyuForm)
    {
        var rng = new Random(kind.Length * 7919 + (nyuForm ? 1 : 0));
        double worst = double.NegativeInfinity;
        int problems = 0, uncertified = 0, certified = 0;
        foreach (int k in new[] { 3, 4, 5, 6 })
            foreach (int d in new[] { 2, 3, 7, 80 })
                foreach (double c in new[] { 0.2, 0.5, 0.8, 1.0, 2.0 })
                {
                    var g = Problem(kind, k, d, rng);
                    var gram = Gram(g);
                    var b = SimplexSolver.RowMeans(gram);
                    double sum = SimplexSolver.Sum(gram);
                    // The exact variant (c ||g0||, no eps) and the research/nyuv2 form (c sqrt(mean + 1e-8) + 1e-8, eps 1e-8).
                    double coef = nyuForm ? c * Math.Sqrt(sum / (k * k) + 1e-8) + 1e-8 : c * Math.Sqrt(Math.Max(sum, 0)) / k;
                    double eps = nyuForm ? 1e-8 : 0;
                    var (w, fun, _) = SimplexSolver.Minimize(gram, b, coef, eps);
                    Assert.True(Math.Abs(w.Sum() - 1) < 1e-12 && w.All(v => v >= 0), $"{kind} K={k} d={d} c={c}: weights off the simplex: {string.Join(", ", w)}");
                    double ours = Objective(gram, b, coef, eps, w);
                    var (wRef, kink) = Reference(gram, b, coef, eps);
                    double theirs = Objective(gram, b, coef, eps, wRef);
                    double floor = Floor(gram, b, coef, eps);
                    // The KKT conditions certify the reference where f is smooth and well away from zero; near the
                    // kink (g_w ~ 0) they are ill-conditioned, so those references are counted, not certified.
                    if (!kink && NormOfGw(gram, eps, wRef) > 1e-4 * Math.Sqrt(MaxDiag(gram)) && Math.Abs(theirs) > 1e3 * floor
                        && KktViolation(gram, b, coef, eps, wRef) < 1e-7) certified++;
                    else uncertified++;
                    double gap = (ours - theirs) / Math.Max(Math.Abs(theirs), floor / RelBound);
                    worst = Math.Max(worst, gap);
                    Assert.True(ours <= theirs + RelBound * Math.Abs(theirs) + floor,
                        $"{kind} K={k} d={d} c={c}: objective {ours:R} exceeds the reference {theirs:R} by {gap:E2} relative");
                    problems++;
                }
        _out.WriteLine($"{kind} ({(nyuForm ? "nyuv2 form" : "exact form")}): {problems} problems, worst relative gap {worst:E2}; references KKT-certified {certified}, at or near the kink g_w = 0 {uncertified}");
        Assert.True(certified > 0, $"{kind}: no reference could be certified");
    }

    [Fact]
    public void ThreeConflictingTasksIn80DimensionsReachTheOptimum()
    {
        // The shape of the case that used to end 3e-5 above SLSQP: three conflicting tasks, d = 80.
        for (int seed = 0; seed < 200; seed++)
        {
            var rng = new Random(seed);
            var g = Problem("conflicting", 3, 80, rng);
            var gram = Gram(g);
            var b = SimplexSolver.RowMeans(gram);
            double coef = 0.5 * Math.Sqrt(Math.Max(SimplexSolver.Sum(gram), 0)) / 3;
            var (w, _, _) = SimplexSolver.Minimize(gram, b, coef, 0);
            double ours = Objective(gram, b, coef, 0, w), theirs = Objective(gram, b, coef, 0, Reference(gram, b, coef, 0).W);
            Assert.True(ours <= theirs + RelBound * Math.Abs(theirs) + Floor(gram, b, coef, 0), $"seed {seed}: {ours:R} > {theirs:R}");
        }
    }
}
