using System.Text.Json;
using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>
/// zmagic_steps/cagrad_unit: direct calls of the research code's cagrad (2 tasks) and cagrad_third_order (3 tasks),
/// whole-tensor and per channel, against the ResearchCode variant of <see cref="CAGradCombiner"/>.
/// </summary>
[Trait("Category", "Golden")]
public class CAGradUnitGoldenTests
{
    public static TheoryData<string> Cases() => Golden.Cases("zmagic_steps", d => Path.GetFileName(d).StartsWith("cagrad_unit", StringComparison.Ordinal));

    private static double[] D(Tensor t) => t.to(ScalarType.Float64).flatten().data<double>().ToArray();

    [Theory]
    [MemberData(nameof(Cases))]
    public void ResearchCAGradCallsMatch(string caseDir)
    {
        var json = Golden.CaseJson(caseDir);
        var tol = json.GetProperty("tolerance");
        var brentTol = tol.GetProperty("cagrad (2 tasks) with a line-by-line port of scipy minimize_scalar(bounded)");
        double abs2 = brentTol.GetProperty("abs").GetDouble(), rel2 = brentTol.GetProperty("rel").GetDouble(), xTol = brentTol.GetProperty("x").GetDouble();
        var injTol = tol.GetProperty("cagrad_third_order given w_used_f32");
        double abs3 = injTol.GetProperty("abs").GetDouble(), rel3 = injTol.GetProperty("rel").GetDouble();
        double f32Tol = tol.GetProperty("float32 calls").GetProperty("rel_l2").GetDouble();
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        int calls = 0;
        foreach (var call in json.GetProperty("calls").EnumerateObject())
        {
            string id = call.Name;
            var info = call.Value;
            bool perChannel = info.GetProperty("mode").GetString() == "per_channel";
            bool f32 = info.GetProperty("dtype").GetString() == "float32";
            int k = info.GetProperty("n_tasks").GetInt32();
            string kind = info.GetProperty("kind").GetString()!;
            var tasks = new[] { "a", "b", "c" }.Take(k).Select(n => inputs[$"{id}/{n}"]).ToList();
            // Single calls take [1, H, W] tensors whole; per-channel calls split dim 1 of [1, C, H, W].
            var combiner = new CAGradCombiner(new CAGradOptions { C = 0.5, PerChannel = perChannel, Variant = CAGradVariant.ResearchCode });
            var g = combiner.Combine(tasks);
            var expected = outputs[$"{id}/g"];
            string what = $"{id} ({kind})";
            var sols = combiner.LastSolutions;
            if (k == 2)
            {
                if (f32) TensorAssert.RelL2(g, expected, f32Tol, what);
                else TensorAssert.Close(g, expected, abs2, rel2, what);
                var x = D(outputs[$"{id}/x"]);
                var fun = D(outputs[$"{id}/fun"]);
                var nfev = outputs[$"{id}/nfev"].data<long>().ToArray();
                var lmbda = D(outputs[$"{id}/lmbda"]);
                // A float32 call's Gram matrix is summed in float32, in whatever order this CPU's kernel takes, so its x is
                // held to the case's float32 tolerance, not to the float64 calls' x tolerance.
                if (f32) TensorAssert.RelL2(torch.tensor(sols.Select(s => s.Weights[0]).ToArray(), ScalarType.Float64), torch.tensor(x, ScalarType.Float64), f32Tol, what + " x");
                for (int ch = 0; ch < x.Length; ch++)
                {
                    if (!f32)
                    {
                        Assert.True(Math.Abs(sols[ch].Weights[0] - x[ch]) <= xTol, $"{what} ch{ch}: x {sols[ch].Weights[0]:R} vs {x[ch]:R}");
                        Assert.Equal(nfev[ch], sols[ch].Evaluations);
                        Assert.True(Math.Abs(sols[ch].Objective - fun[ch]) <= abs2 + rel2 * Math.Abs(fun[ch]), $"{what} ch{ch}: fun {sols[ch].Objective:R} vs {fun[ch]:R}");
                        Assert.True(Math.Abs(sols[ch].Lambda - lmbda[ch]) <= abs2 + rel2 * Math.Abs(lmbda[ch]), $"{what} ch{ch}: lambda {sols[ch].Lambda:R} vs {lmbda[ch]:R}");
                    }
                }
                var xExact = D(outputs[$"{id}/x_exact_not_reference"]);
                var exact = new CAGradCombiner(new CAGradOptions { C = 0.5, PerChannel = perChannel, Variant = CAGradVariant.ResearchCode, Solver = CAGradSolver.Exact });
                var gExact = exact.Combine(tasks);
                var g11 = D(outputs[$"{id}/g11"]); var g12 = D(outputs[$"{id}/g12"]); var g22 = D(outputs[$"{id}/g22"]);
                for (int ch = 0; ch < xExact.Length; ch++)
                {
                    // The exact solver must be at least as good as the stored precise x. (Its g is not compared:
                    // near a bound, e.g. c05, lambda = coef / (||g_w|| + 1e-4) changes by 5x between x = 1 and
                    // x = 1 - 1.5e-8, which is all the precision SciPy's Brent has there even at xatol 1e-13.)
                    double xs = exact.LastSolutions[ch].Weights[0];
                    double coef = 0.5 * 0.5 * Math.Sqrt(g11[ch] + g22[ch] + 2 * g12[ch] + 1e-4);
                    double Obj(double u) => coef * Math.Sqrt(u * u * (g11[ch] + g22[ch] - 2 * g12[ch]) + 2 * u * (g12[ch] - g22[ch]) + g22[ch] + 1e-4)
                                           + 0.5 * u * (g11[ch] + g22[ch] - 2 * g12[ch]) + (0.5 + u) * (g12[ch] - g22[ch]) + g22[ch];
                    double ours = Obj(xs), precise = Obj(xExact[ch]);
                    Assert.True(ours <= precise + 1e-12 * (1 + Math.Abs(precise)), $"{what} ch{ch}: exact solver x {xs:R} objective {ours:R} > precise x {xExact[ch]:R} objective {precise:R}");
                    Assert.True(Math.Abs(xs - xExact[ch]) <= 1e-6 || Math.Abs(ours - precise) <= 1e-12 * (1 + Math.Abs(precise)), $"{what} ch{ch}: x {xs:R} vs {xExact[ch]:R}");
                }
                _ = gExact;
            }
            else
            {
                // The Gram matrices.
                var gg = outputs[$"{id}/GG"].to(ScalarType.Float64);
                int channels = (int)gg.shape[0];
                var wUsed = outputs[$"{id}/w_used_f32"].to(ScalarType.Float64);
                var funRef = D(outputs[$"{id}/fun"]);
                // Post-processing with the reference's float32 weights: tight.
                var lambdas = new double[channels];
                var weights = new double[channels][];
                for (int ch = 0; ch < channels; ch++)
                {
                    var gram = ToArray(gg[ch]);
                    var injected = combiner.Finish(gram, D(wUsed[ch]), gwNorm: D(outputs[$"{id}/gw_norm"])[ch]);
                    lambdas[ch] = injected.Lambda;
                    weights[ch] = D(wUsed[ch]);
                    Assert.True(Math.Abs(injected.Lambda - D(outputs[$"{id}/lmbda"])[ch]) <= (f32 ? f32Tol : abs3) + (f32 ? f32Tol : rel3) * Math.Abs(D(outputs[$"{id}/lmbda"])[ch]), $"{what} ch{ch}: lambda {injected.Lambda:R} vs {D(outputs[$"{id}/lmbda"])[ch]:R}, gw_norm ref {D(outputs[$"{id}/gw_norm"])[ch]:R}");
                    // On the reference's own Gram matrix our solver must reach SLSQP's value (both float64, same matrix).
                    var onRef = combiner.SolveGram(gram);
                    double objOnRef = combiner.NyuObjective(gram, onRef.Weights);
                    Assert.True(objOnRef <= funRef[ch] + 1e-9 * Math.Abs(funRef[ch]) + 1e-12, $"{what} ch{ch}: objective {objOnRef:R} on the reference's Gram matrix > SLSQP {funRef[ch]:R}");
                    // Our weights came from our own Gram matrix, which may differ from the reference's in the last float32
                    // bits (another CPU sums in another order); near an optimum that moves the objective only to second order.
                    var ours = combiner.LastSolutions[ch];
                    double objOurs = combiner.NyuObjective(gram, ours.Weights);
                    Assert.True(objOurs <= funRef[ch] + 1e-6 * Math.Abs(funRef[ch]), $"{what} ch{ch}: objective {objOurs:R} > SLSQP {funRef[ch]:R}");
                }
                // As the reference: mean_k g_k + lambda g_w, g_w with the float32 weights, divided by 1 + alpha^2.
                var mean = Weighted(tasks, weights.Select(_ => Enumerable.Repeat(1.0 / k, k).ToArray()).ToArray(), perChannel);
                var gw = Weighted(tasks, weights, perChannel);
                var post = (mean + Weighted(new[] { gw }, lambdas.Select(l => new[] { l }).ToArray(), perChannel)) / 1.25;
                if (f32) TensorAssert.RelL2(post, expected, f32Tol, what + " (w_used_f32)");
                else TensorAssert.Close(post, expected, abs3, rel3, what + " (w_used_f32)");
                // The reference's own SLSQP did not reach the optimum when it stopped at the start point: the case says
                // so for the tiny-gradient call (absolute ftol), and SciPy reports status 4 for c16. Our objective is
                // still checked above (it must be at least as low); its direction then differs from the reference's.
                bool slsqpFailed = info.GetProperty("solver_status_message").EnumerateArray().Any(e => e[0].GetInt32() != 0);
                bool slsqpStoppedEarly = slsqpFailed || kind.StartsWith("tiny gradients", StringComparison.Ordinal);
                if (!slsqpStoppedEarly) TensorAssert.RelL2(g, expected, 2e-2, what + " (own simplex solver)");
            }
            calls++;
        }
        Assert.Equal(19, calls);
    }

    private static double[,] ToArray(Tensor m)
    {
        int k = (int)m.shape[0];
        var d = m.data<double>().ToArray();
        var r = new double[k, k];
        for (int i = 0; i < k; i++) for (int j = 0; j < k; j++) r[i, j] = d[i * k + j];
        return r;
    }

    private static Tensor Weighted(IReadOnlyList<Tensor> tasks, double[][] coefs, bool perChannel)
    {
        var result = torch.zeros_like(tasks[0]);
        for (int i = 0; i < tasks.Count; i++)
        {
            var w = torch.tensor(coefs.Select(c => c[i]).ToArray(), ScalarType.Float64).to(tasks[0].dtype);
            var shape = Enumerable.Repeat(1L, (int)tasks[0].dim()).ToArray();
            if (perChannel) shape[1] = coefs.Length;
            result = result + tasks[i] * (perChannel ? w.view(shape) : w[0]);
        }
        return result;
    }
}
