using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021) as a gradient combiner: the direction d within
/// <c>c ||g0||</c> of the mean g0 that maximises the worst task's improvement <c>min_i &lt;g_i, d&gt;</c>.
/// </summary>
/// <remarks>
/// Only the K x K Gram matrix enters the dual. It is computed with one batched matmul (one matrix per channel when
/// <see cref="CAGradOptions.PerChannel"/>), moved to the host once, and the dual is solved there in float64; the
/// only other tensor work is the final weighted sum of the tasks. Two tasks are solved exactly (or with the port of
/// SciPy's bounded Brent, for parity with the research code); three or more with a convergent simplex method.
/// With the default <see cref="CAGradRescale.SumScale"/> the output equals the plain sum when all tasks agree and
/// when c = 0; the reference rescalings (mean scale, 1/(1+c), 1/(1+c^2)) are options.
/// </remarks>
public sealed class CAGradCombiner : IGradientCombiner
{
    /// <summary>Creates the combiner.</summary>
    /// <exception cref="ArgumentException">Invalid or conflicting options (see <see cref="CAGradOptions.Validate"/>).</exception>
    public CAGradCombiner(CAGradOptions? options = null)
    {
        Options = options ?? new CAGradOptions();
        Options.Validate();
    }

    /// <summary>Creates the combiner with radius <paramref name="c"/>.</summary>
    public CAGradCombiner(double c, bool perChannel = false, CAGradRescale rescale = CAGradRescale.VariantDefault)
        : this(new CAGradOptions { C = c, PerChannel = perChannel, Rescale = rescale }) { }

    /// <summary>The options.</summary>
    public CAGradOptions Options { get; }

    /// <inheritdoc />
    public string Name => $"cagrad({Options.C.ToString(System.Globalization.CultureInfo.InvariantCulture)}{(Options.PerChannel ? ",per-channel" : "")}{(Options.Variant == CAGradVariant.Exact ? "" : "," + Options.Variant)})";

    /// <summary>The dual solutions of the last <see cref="Combine"/> call, one per group (diagnostics).</summary>
    public IReadOnlyList<CAGradGroupSolution> LastSolutions { get; private set; } = Array.Empty<CAGradGroupSolution>();

    /// <inheritdoc />
    public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
    {
        TaskGram.Validate(taskGradients, Options.PerChannel, Name);
        var grams = TaskGram.Compute(taskGradients, Options.PerChannel);
        var solutions = grams.Select(SolveGram).ToArray();
        int k = taskGradients.Count;
        if (!UsesTensorNorm(k))
        {
            LastSolutions = solutions;
            return TaskGram.WeightedSum(taskGradients, solutions.Select(s => s.Coefficients).ToArray(), Options.PerChannel);
        }

        // The research code's 3-task form measures ||g_w|| on the tensors (g_w with float32-rounded weights) and
        // returns mean + lambda g_w. When the tasks nearly cancel, ||g_w|| from the Gram matrix loses digits, so
        // this form follows the reference: one more weighted sum and one small transfer of the per-group norms.
        var rounded = solutions.Select(s => s.Weights.Select(v => (double)(float)v).ToArray()).ToArray();
        var gw = TaskGram.WeightedSum(taskGradients, rounded, Options.PerChannel);
        var norms = TaskGram.GroupNorms(gw, Options.PerChannel);
        for (int c = 0; c < solutions.Length; c++)
            solutions[c] = Finish(grams[c], solutions[c].Weights, solutions[c].Objective, solutions[c].Evaluations, norms[c]);
        LastSolutions = solutions;
        double scale = Scale(k);
        var mean = TaskGram.WeightedSum(taskGradients, solutions.Select(_ => Enumerable.Repeat(scale / k, k).ToArray()).ToArray(), Options.PerChannel);
        return mean.add_(TaskGram.ScaleGroups(gw, solutions.Select(s => s.Lambda * scale).ToArray(), Options.PerChannel));
    }

    private bool UsesTensorNorm(int k) =>
        k >= 3 && Options.Variant is CAGradVariant.ResearchCode or CAGradVariant.NyuV2;

    /// <summary>Solves the dual for one Gram matrix [K, K] (float64).</summary>
    public CAGradGroupSolution SolveGram(double[,] gram)
    {
        ArgumentNullException.ThrowIfNull(gram);
        int k = gram.GetLength(0);
        if (k == 0 || gram.GetLength(1) != k) throw new ArgumentException($"The Gram matrix must be square and non-empty; got [{gram.GetLength(0)}, {gram.GetLength(1)}].", nameof(gram));
        foreach (var v in gram)
            if (!double.IsFinite(v)) throw new ArgumentException("The Gram matrix of the task gradients is not finite (NaN or infinite gradients).", nameof(gram));
        if (k == 1) return Finish(gram, new[] { 1.0 }, 0.0, 1);
        return Options.Variant switch
        {
            CAGradVariant.Exact => SolveExact(gram),
            CAGradVariant.ResearchCode when k == 2 => SolveToyForm(gram, 1e-4, 1e-4, 1e-4, 1e-4),
            CAGradVariant.Cityscapes when k == 2 => SolveToyForm(gram, 0, 1e-8, 1e-8, 1e-8),
            CAGradVariant.Cityscapes => throw new ArgumentException($"The Cityscapes CAGrad variant handles exactly 2 tasks; got {k}."),
            _ => SolveNyuForm(gram),
        };
    }

    /// <summary>
    /// The post-processing for given weights <paramref name="w"/> (to check a stored reference solution or to
    /// inject one): the multiplier, the objective and the final coefficients in this combiner's variant.
    /// </summary>
    /// <param name="gram">The Gram matrix [K, K].</param>
    /// <param name="w">The simplex weights.</param>
    /// <param name="objective">The objective to report.</param>
    /// <param name="evaluations">The evaluation count to report.</param>
    /// <param name="gwNorm">||g_w|| measured on the tensors (the research 3-task form); null: from the Gram matrix.</param>
    public CAGradGroupSolution Finish(double[,] gram, double[] w, double objective = double.NaN, int evaluations = 0, double? gwNorm = null)
    {
        ArgumentNullException.ThrowIfNull(gram);
        ArgumentNullException.ThrowIfNull(w);
        int k = w.Length;
        double c = Options.C;
        double lambda;
        var coef = new double[k];
        switch (Options.Variant)
        {
            case CAGradVariant.ResearchCode when k == 2:
            case CAGradVariant.Cityscapes when k == 2:
            {
                double eps = Options.Variant == CAGradVariant.Cityscapes ? 1e-8 : 1e-4;
                double g0Eps = Options.Variant == CAGradVariant.Cityscapes ? 0 : 1e-4;
                double g11 = gram[0, 0], g12 = gram[0, 1], g22 = gram[1, 1];
                double x = w[0];
                double g0Norm = 0.5 * Math.Sqrt(g11 + g22 + 2 * g12 + g0Eps);
                double cf = c * g0Norm;
                double norm = Math.Sqrt(x * x * g11 + (1 - x) * (1 - x) * g22 + 2 * x * (1 - x) * g12 + eps);
                lambda = cf / (norm + eps);
                coef[0] = 0.5 + lambda * x;
                coef[1] = 0.5 + lambda * (1 - x);
                break;
            }
            case CAGradVariant.ResearchCode:
            case CAGradVariant.NyuV2:
            {
                double cc = c * Math.Sqrt(Mean(gram) + 1e-8) + 1e-8;
                var wf = w.Select(v => (double)(float)v).ToArray();   // torch.Tensor(w) rounds to float32
                double norm = gwNorm ?? Math.Sqrt(Math.Max(SimplexSolver.Quad(gram, wf), 0));
                lambda = cc / (norm + 1e-8);
                for (int i = 0; i < k; i++) coef[i] = 1.0 / k + lambda * wf[i];
                break;
            }
            default:
            {
                double g0Norm = Math.Sqrt(Math.Max(SimplexSolver.Sum(gram), 0)) / k;
                double norm = Math.Sqrt(Math.Max(SimplexSolver.Quad(gram, w), 0));
                lambda = norm > 0 ? c * g0Norm / norm : 0.0;
                for (int i = 0; i < k; i++) coef[i] = 1.0 / k + lambda * w[i];
                break;
            }
        }
        double scale = Scale(k);
        for (int i = 0; i < k; i++) coef[i] *= scale;
        return new CAGradGroupSolution((double[])w.Clone(), lambda, objective, coef, evaluations);
    }

    /// <summary>The output scale factor for <paramref name="k"/> tasks.</summary>
    public double Scale(int k)
    {
        double c = Options.C;
        var rescale = Options.Rescale;
        if (rescale == CAGradRescale.VariantDefault)
        {
            rescale = Options.Variant switch
            {
                CAGradVariant.Exact => CAGradRescale.SumScale,
                CAGradVariant.ResearchCode => k == 2 ? CAGradRescale.OnePlusC : CAGradRescale.OnePlusCSquared,
                _ => CAGradRescale.OnePlusCSquared,
            };
        }
        return rescale switch
        {
            CAGradRescale.SumScale => k / (1 + c),
            CAGradRescale.None => 1.0,
            CAGradRescale.OnePlusC => 1.0 / (1 + c),
            CAGradRescale.OnePlusCSquared => 1.0 / (1 + c * c),
            _ => throw new InvalidOperationException($"Unknown rescale {rescale}."),
        };
    }

    private CAGradGroupSolution SolveExact(double[,] gram)
    {
        int k = gram.GetLength(0);
        double c = Options.C;
        var b = SimplexSolver.RowMeans(gram);
        double coef = c * Math.Sqrt(Math.Max(SimplexSolver.Sum(gram), 0)) / k;
        if (k == 2)
        {
            // w = (x, 1 - x): f(x) = x b0 + (1 - x) b1 + coef sqrt(q(x)), q(x) = x^2 A + 2x B + C.
            double a2 = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1], b2 = gram[0, 1] - gram[1, 1], c2 = gram[1, 1];
            double F(double x) => x * b[0] + (1 - x) * b[1] + coef * Math.Sqrt(Math.Max(x * x * a2 + 2 * x * b2 + c2, 0));
            double x;
            int evals;
            if (Options.Solver == CAGradSolver.BoundedBrent)
            {
                var r = ScalarMinimizers.BoundedBrent(F, 0, 1);
                (x, evals) = (r.X, r.Evaluations);
            }
            else
            {
                double D(double u)
                {
                    double q = Math.Max(u * u * a2 + 2 * u * b2 + c2, 0);
                    double s = Math.Sqrt(q);
                    return b[0] - b[1] + (s > 0 ? coef * (u * a2 + b2) / s : 0);
                }
                x = ScalarMinimizers.ConvexByDerivative(D, 0, 1);
                evals = 0;
            }
            return Finish(gram, new[] { x, 1 - x }, F(x), evals);
        }
        var (w, fun, it) = SimplexSolver.Minimize(gram, b, coef, 0.0);
        return Finish(gram, w, fun, it);
    }

    private CAGradGroupSolution SolveToyForm(double[,] gram, double g0Eps, double objEps, double gwEps, double lambdaEps)
    {
        _ = gwEps; _ = lambdaEps; // the same constants are applied again in Finish
        double c = Options.C;
        double g11 = gram[0, 0], g12 = gram[0, 1], g22 = gram[1, 1];
        double g0Norm = 0.5 * Math.Sqrt(g11 + g22 + 2 * g12 + g0Eps);
        double coef = c * g0Norm;
        double Obj(double x) => coef * Math.Sqrt(x * x * (g11 + g22 - 2 * g12) + 2 * x * (g12 - g22) + g22 + objEps)
                                + 0.5 * x * (g11 + g22 - 2 * g12) + (0.5 + x) * (g12 - g22) + g22;
        double xs;
        int evals;
        if (Options.Solver == CAGradSolver.Exact)
        {
            double a2 = g11 + g22 - 2 * g12;
            double D(double x)
            {
                double s = Math.Sqrt(Math.Max(x * x * a2 + 2 * x * (g12 - g22) + g22 + objEps, 0));
                return (s > 0 ? coef * (x * a2 + (g12 - g22)) / s : 0) + 0.5 * a2 + (g12 - g22);
            }
            xs = ScalarMinimizers.ConvexByDerivative(D, 0, 1);
            evals = 0;
        }
        else
        {
            var r = ScalarMinimizers.BoundedBrent(Obj, 0, 1);
            (xs, evals) = (r.X, r.Evaluations);
        }
        return Finish(gram, new[] { xs, 1 - xs }, Obj(xs), evals);
    }

    private CAGradGroupSolution SolveNyuForm(double[,] gram)
    {
        double cc = Options.C * Math.Sqrt(Mean(gram) + 1e-8) + 1e-8;
        var b = SimplexSolver.RowMeans(gram);
        var (w, fun, it) = SimplexSolver.Minimize(gram, b, cc, 1e-8);
        return Finish(gram, w, fun, it);
    }

    /// <summary>The research/nyuv2 3-task objective <c>w . GG 1/K + c' sqrt(w^T GG w + 1e-8)</c> at <paramref name="w"/> (for comparisons with SLSQP's value).</summary>
    public double NyuObjective(double[,] gram, double[] w)
    {
        ArgumentNullException.ThrowIfNull(gram);
        ArgumentNullException.ThrowIfNull(w);
        double cc = Options.C * Math.Sqrt(Mean(gram) + 1e-8) + 1e-8;
        var b = SimplexSolver.RowMeans(gram);
        return SimplexSolver.Objective(gram, b, cc, 1e-8, w);
    }

    /// <summary>The exact dual objective <c>w . G g0 + c ||g0|| ||g_w||</c> (as CAGrad's precise optimum reports it).</summary>
    public static double ExactObjective(double[,] gram, double[] w, double c)
    {
        ArgumentNullException.ThrowIfNull(gram);
        ArgumentNullException.ThrowIfNull(w);
        int k = w.Length;
        var b = SimplexSolver.RowMeans(gram);
        return SimplexSolver.Objective(gram, b, c * Math.Sqrt(Math.Max(SimplexSolver.Sum(gram), 0)) / k, 0, w);
    }

    private static double Mean(double[,] m) => SimplexSolver.Sum(m) / m.Length;
}
