using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests.GuidedSteps;

/// <summary>
/// Every guided-step case of zmagic_steps (FreeDoM baseline and Z-Magic as the research fork runs them), with the
/// tiny DDPM UNet and the toy energies: each stored intermediate is compared within the case's tolerances, both
/// update rules, 2 and 3 conditions, and the 5-step trajectory.
/// </summary>
[Trait("Category", "Golden")]
public class ZMagicStepGoldenTests
{
    public static TheoryData<string> StepCases() => Golden.Cases("zmagic_steps", d =>
    {
        var n = Path.GetFileName(d);
        return !n.StartsWith("denoiser_forward", StringComparison.Ordinal) && !n.StartsWith("cagrad_unit", StringComparison.Ordinal);
    });

    private static Tensor T(double v) => torch.tensor(v, ScalarType.Float64);

    private static double Dot(Tensor a, Tensor b) => (a.to(ScalarType.Float64) * b.to(ScalarType.Float64)).sum().item<double>();

    [Theory]
    [MemberData(nameof(StepCases))]
    public void StepMatchesTheResearchCode(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        using var c = new StepCase(caseDir);
        string fn = c.Json.GetProperty("reference_function").GetString()!;
        if (c.Sampler.TryGetProperty("steps_run", out _)) { Trajectory(c); return; }
        long batch = c.Inputs.TryGetValue("x_t", out var xt) ? xt.shape[0] : c.Inputs["x_T"].shape[0];
        // README point 6: cagrad's .view on a channel slice and the posterior functions' .item() raise at batch > 1,
        // so only arcface_land_ddim_diffusion can have produced a batch > 1 case.
        Assert.True(batch == 1 || fn == "arcface_land_ddim_diffusion",
            $"{c.Name}: {fn} cannot run at batch {batch} in the reference (zmagic_steps README, point 6); the case cannot come from it");
        switch (fn)
        {
            case "arcface_land_ddim_diffusion": FreeDoMDdim(c); break;
            case "clip_parse_ddim_diffusion": FreeDoMPosterior(c); break;
            case "arcface_land_ddim_diffusion_magic": MagicTwo(c, posterior: false); break;
            case "clip_parse_ddim_diffusion_magic": MagicTwo(c, posterior: true); break;
            case "clip_parse_id_ddim_diffusion_magic": MagicThree(c); break;
            default: throw new InvalidOperationException($"{c.Name}: reference function '{fn}' has no test mapping yet.");
        }
    }

    // ---- FreeDoM baseline --------------------------------------------------------------------------------------

    private static void FreeDoMDdim(StepCase c)
    {
        int i = c.Sampler.GetProperty("timestep_i").GetInt32(), j = c.Sampler.GetProperty("timestep_next_j").GetInt32();
        var rs = c.RhoScale;
        var window = new GuidanceWindow(Stop: c.Stop);
        var x = c.Inputs["x_t"];
        int batch = (int)x.shape[0];
        // The only function here the reference runs at batch > 1. Its energies are norms over the whole batch, so item
        // b's gradient of E_k is the library's per-item one times ||r_kb|| / ||r_k|| (docs/strategies.md, "Batches"):
        // from the stored x0_t (per item) and the stored E_k_scaled / rho_scale[k] (whole batch). The factor goes into
        // item b's step size and each item runs alone, which holds whether step sizes are per item or batch-wide.
        var x0Ref = c.Outputs["x0_t"];
        double[] Factors(Func<Dictionary<string, Tensor>, ToyEnergy> make, double whole) => batch == 1 ? new[] { 1.0 }
            : Enumerable.Range(0, batch).Select(k => make(ItemInputs(c, k)).Energy(x0Ref.narrow(0, k, 1)).item<double>() / whole).ToArray();
        var fA = Factors(d => ToyEnergy.A(d, new ConstantStepSize(0), window), c.Outputs["E1_scaled"].item<double>() / rs[0]);
        var fB = Factors(d => ToyEnergy.B(d, new ConstantStepSize(0), window), c.Outputs["E2_scaled"].item<double>() / rs[1]);
        IGuidanceCondition[] Conds(int k, GuidanceWindow w)
        {
            var d = ItemInputs(c, k);
            return new IGuidanceCondition[] { ToyEnergy.A(d, new SqrtAlphaBarStepSize(rs[0] * fA[k]), w), ToyEnergy.B(d, new SqrtAlphaBarStepSize(rs[1] * fB[k]), w) };
        }
        var chk = new Checker(c);
        var nexts = new List<Tensor>(); var eps = new List<Tensor>(); var x0 = new List<Tensor>(); var bases = new List<Tensor>();
        var gradSum = new List<Tensor>(); var gradSplit = new List<Tensor>();
        double e1 = 0, e2 = 0, a = 0, an = 0;
        bool guided = c.Sampler.GetProperty("guided_this_step").GetBoolean();
        for (int k = 0; k < batch; k++)
        {
            var xk = x.narrow(0, k, 1);
            var nk = c.Inputs["noise_0"].narrow(0, k, 1);
            var seen = new Dictionary<string, Tensor>();
            var step = c.MakeStep(xk, i, j, new FreeDoMEtaStep(0.5), nk, Conds(k, window), SumCombiner.Instance, seen);
            nexts.Add(new VanillaStrategy().Step(step));
            eps.Add(seen["eps"]); x0.Add(seen["x0"]); bases.Add(seen["base"]);
            a = step.AlphaBar; an = step.AlphaBarNext;
            Assert.Equal(guided ? 1 : 0, step.Trace.Passes.DenoiserBackwards);

            // The energies and the summed gradient (the reference computes them even when unguided): with the window
            // open, the fused form's gradient is sqrt(at) * grad(rs0 E1 + rs1 E2); the per-condition form gives the terms.
            var seenOpen = new Dictionary<string, Tensor>();
            var open = c.MakeStep(xk, i, j, new FreeDoMEtaStep(0.5), nk, Conds(k, GuidanceWindow.Always), SumCombiner.Instance, seenOpen);
            var nextOpen = new VanillaStrategy().Step(open);
            gradSum.Add(seenOpen["grad_sum"] / Math.Sqrt(a));
            e1 += open.Trace.Conditions[0].Energy * open.Trace.Conditions[0].Energy;
            e2 += open.Trace.Conditions[1].Energy * open.Trace.Conditions[1].Energy;
            var seenSplit = new Dictionary<string, Tensor>();
            var split = c.MakeStep(xk, i, j, new FreeDoMEtaStep(0.5), nk, Conds(k, GuidanceWindow.Always), SumCombiner.Instance, seenSplit);
            var nextSplit = new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }).Step(split);
            gradSplit.Add(seenSplit["g/A"] * (rs[0] * fA[k]) + seenSplit["g/B"] * (rs[1] * fB[k]));
            TensorAssert.Close(nextSplit, nextOpen, c.Before.Abs, c.Before.Rel, $"{c.Name} item {k}: fused and per-condition steps agree");
        }
        Tensor Cat(List<Tensor> l) => torch.cat(l.ToArray(), 0);
        chk.Before("at", T(a));
        chk.Before("at_next", T(an));
        chk.Before("rho", T(Math.Sqrt(a)));
        chk.Before("eps_xt", Cat(eps));
        chk.Before("x0_t", Cat(x0));
        chk.Before("x0_returned", Cat(x0));
        chk.Before("xt_next_base", Cat(bases));
        chk.Before("x_prev", Cat(nexts));
        chk.Before("grad_sum", Cat(gradSum));
        // The reference's energies are norms over the whole batch: sqrt of the sum of the per-item squares.
        chk.Scalar("E1_scaled", rs[0] * Math.Sqrt(e1));
        chk.Scalar("E2_scaled", rs[1] * Math.Sqrt(e2));
        TensorAssert.Close(Cat(gradSplit), c.Outputs["grad_sum"], c.Before.Abs, c.Before.Rel, c.Name + " grad_sum (per condition)");
        chk.AssertAllChecked();
    }

    /// <summary>The case's inputs with the per-item energy targets (yA, yB, yC: [n, ...]) narrowed to item k.</summary>
    private static Dictionary<string, Tensor> ItemInputs(StepCase c, int k) => c.Inputs.ToDictionary(
        p => p.Key, p => p.Key is "yA" or "yB" or "yC" && c.Inputs["x_t"].shape[0] > 1 ? p.Value.narrow(0, k, 1) : p.Value);

    private static void FreeDoMPosterior(StepCase c)
    {
        int i = c.Sampler.GetProperty("timestep_i").GetInt32(), j = c.Sampler.GetProperty("timestep_next_j").GetInt32();
        var rs = c.RhoScale;
        var conds = new IGuidanceCondition[]
        {
            ToyEnergy.A(c.Inputs, new NormRelativeStepSize(0.02), GuidanceWindow.Always),
            ToyEnergy.B(c.Inputs, new SqrtAlphaBarStepSize(rs[1]), new GuidanceWindow(Stop: c.Stop)),
        };
        var chk = new Checker(c);
        var seen = new Dictionary<string, Tensor>();
        var step = c.MakeStep(c.Inputs["x_t"], i, j, new DdpmPosteriorStep(), c.Inputs["noise_0"], conds, SumCombiner.Instance, seen);
        var next = new VanillaStrategy().Step(step);
        double a = step.AlphaBar, an = step.AlphaBarNext;
        var (c1, c2, c3) = DdpmPosteriorStep.Coefficients(a, an);
        chk.Before("at", T(a)); chk.Before("at_next", T(an));
        chk.Before("c1", T(c1)); chk.Before("c2", T(c2)); chk.Before("c3", T(c3));
        chk.Before("eps_xt", seen["eps"]); chk.Before("eps_xt_parse", seen["eps"]);
        chk.Before("x0_t", seen["x0"]); chk.Before("x0_t_parse", seen["x0"]);
        chk.Scalar("E1", step.Trace.Conditions[0].Energy); chk.Scalar("E2", step.Trace.Conditions[1].Energy);
        chk.Before("g1", seen["g/A"]); chk.Before("g2", seen["g/B"]);
        chk.Before("xt_next_base", seen["base"]);
        double l1 = Math.Sqrt(seen["eps"].square().mean().item<double>()) * Math.Sqrt(1 - a) / Math.Sqrt(a) * c1;
        chk.Scalar("l1", l1); chk.Scalar("l2", 0.02 * l1);
        chk.Scalar("rho1", step.Trace.Conditions[0].StepSize);
        chk.Before("xt_after_g1", seen["base"] - seen["task/A"]);
        chk.Before("rho2", T(step.Trace.Conditions[1].StepSize));
        chk.Before("x_prev", next);
        chk.Before("x0_returned", seen["x0"]);
        chk.AssertAllChecked();
    }

    // ---- Z-Magic, two conditions -------------------------------------------------------------------------------

    private static IGuidanceCondition[] TwoConditions(StepCase c, bool posterior) => new IGuidanceCondition[]
    {
        posterior
            ? ToyEnergy.A(c.Inputs, new NormRelativeStepSize(0.02), GuidanceWindow.Always)
            : ToyEnergy.A(c.Inputs, new SqrtAlphaBarStepSize(c.RhoScale[0]), new GuidanceWindow(Stop: c.Stop)),
        ToyEnergy.B(c.Inputs, new SqrtAlphaBarStepSize(c.RhoScale[1]), new GuidanceWindow(Stop: c.Stop)),
    };

    private static CAGradCombiner ResearchCAGrad(StepCase c, CAGradSolver solver = CAGradSolver.Auto) =>
        new(new CAGradOptions { C = c.Sampler.TryGetProperty("cagrad_c", out var cc) && cc.ValueKind == System.Text.Json.JsonValueKind.Number ? cc.GetDouble() : 0.5,
                                PerChannel = true, Variant = CAGradVariant.ResearchCode, Solver = solver });

    private static void MagicTwo(StepCase c, bool posterior)
    {
        int i = c.Sampler.GetProperty("timestep_i").GetInt32(), j = c.Sampler.GetProperty("timestep_next_j").GetInt32();
        var x = c.Inputs["x_t"];
        MagicTwoStep(c, new Checker(c), x, i, j, c.Inputs["noise_0"], posterior);
    }

    /// <summary>One two-condition Z-Magic step compared under <paramref name="chk"/>'s prefix; returns the research-rule output.</summary>
    private static Tensor MagicTwoStep(StepCase c, Checker chk, Tensor x, int i, int j, Tensor noise, bool posterior, bool checkAll = true, double? previousRho2 = null)
    {
        ISamplerStep sampler = posterior ? new DdpmPosteriorStep() : new FreeDoMEtaStep(0.5);
        var conds = TwoConditions(c, posterior);
        var combiner = ResearchCAGrad(c);
        var seen = new Dictionary<string, Tensor>();
        var step = c.MakeStep(x, i, j, sampler, noise, conds, combiner, seen);
        var next = new ZMagicStrategy(new ZMagicOptions { UpdateRule = ZMagicUpdateRule.ResearchCode }).Step(step);
        double a = step.AlphaBar, an = step.AlphaBarNext;
        bool guided = i > c.Stop;
        chk.Before("at", T(a)); chk.Before("at_next", T(an));
        chk.Before("eps_xt", seen["eps"]);
        chk.Before("x0_t", seen["x0"]);
        chk.Before("xt_next_base", seen["base"]);
        if (posterior)
        {
            var (c1, c2, c3) = DdpmPosteriorStep.Coefficients(a, an);
            chk.Before("c1", T(c1)); chk.Before("c2", T(c2)); chk.Before("c3", T(c3));
            double l1 = Math.Sqrt(seen["eps"].to(ScalarType.Float64).square().mean().item<double>()) * Math.Sqrt(1 - a) / Math.Sqrt(a) * c1;
            chk.Scalar("l1", l1); chk.Scalar("l2", 0.02 * l1);
        }
        if (!guided)
        {
            // Unguided: the base step only. E1/g1 (computed but unused by the reference) from a window-open run.
            chk.Before("xt_next_sequential", seen["base"]);
            chk.Before("x_prev_research", next);
            chk.Before("x0_returned", seen["x0"]);
            Assert.Equal((1, 0), (step.Trace.Passes.DenoiserForwards, step.Trace.Passes.DenoiserBackwards));
            var seenOpen = new Dictionary<string, Tensor>();
            var open = c.MakeStep(x, i, j, sampler, noise,
                new IGuidanceCondition[] { ToyEnergy.A(c.Inputs, new SqrtAlphaBarStepSize(c.RhoScale[0]), GuidanceWindow.Always) }, combiner, seenOpen);
            new ZMagicStrategy().Step(open);
            chk.Scalar("E1", open.Trace.Conditions[0].Energy);
            chk.Before("g1", seenOpen["g/A"]);
            if (chk.Has("rho1")) chk.Before("rho1", T(Math.Sqrt(a) * c.RhoScale[0]));
            // The reference only assigns rho2 (land_rho) inside its guided branch: an unguided step inside a trajectory
            // still holds the previous step's value in that local, which is what was captured.
            if (chk.Has("rho2")) chk.Before("rho2", T(previousRho2 ?? throw new InvalidOperationException($"{c.Name}: rho2 stored for an unguided step without a previous guided step")));
            if (checkAll) chk.AssertAllChecked();
            return next;
        }

        Assert.Equal((2, 2, 1), (step.Trace.Passes.DenoiserForwards, step.Trace.Passes.DenoiserBackwards, step.Trace.Passes.Vjps));
        chk.Scalar("E1", step.Trace.Conditions[0].Energy);
        chk.Before("g1", seen["g/A"]);
        chk.Before("rho1", T(step.Trace.Conditions[0].StepSize));
        chk.Before("proposal", seen["proposal/B"]);
        chk.Before("eps_proposal", seen["eps_proposal/B"]);
        chk.Before("x0_proposal", seen["x0_proposal/B"]);
        chk.Before("x0_returned", seen["x0_proposal/B"]);
        chk.Scalar("E2", step.Trace.Conditions[1].Energy);
        chk.Before("g2", seen["gh/B"]);
        chk.Scalar("hessian_dot", Dot(seen["proposal/B"], seen["gh/B"]));
        chk.Before("d2", seen["d/B"]);
        chk.Before("rho2", T(step.Trace.Conditions[1].StepSize));
        chk.Before("xt_next_sequential", seen["sequential"]);
        chk.Before("grad_0", seen["task/A"]);
        chk.Before("grad_1", seen["task/B"]);
        chk.After("cagrad_per_channel", seen["update"]);
        chk.After("x_prev_research", next);

        // The per-channel solver quantities.
        var sols = combiner.LastSolutions;
        int channels = sols.Count;
        var g11 = new double[channels]; var g12 = new double[channels]; var g22 = new double[channels];
        for (int ch = 0; ch < channels; ch++)
        {
            var t0 = seen["task/A"].narrow(1, ch, 1); var t1 = seen["task/B"].narrow(1, ch, 1);
            g11[ch] = Dot(t0, t0); g12[ch] = Dot(t0, t1); g22[ch] = Dot(t1, t1);
        }
        double cC = combiner.Options.C;
        var g0n = Enumerable.Range(0, channels).Select(k => 0.5 * Math.Sqrt(g11[k] + g22[k] + 2 * g12[k] + 1e-4)).ToArray();
        var xs = sols.Select(s => s.Weights[0]).ToArray();
        var gwn = Enumerable.Range(0, channels).Select(k => Math.Sqrt(xs[k] * xs[k] * g11[k] + (1 - xs[k]) * (1 - xs[k]) * g22[k] + 2 * xs[k] * (1 - xs[k]) * g12[k] + 1e-4)).ToArray();
        Tensor V(double[] v) => torch.tensor(v, ScalarType.Float64);
        if (chk.F32)
        {
            double t = c.Tolerance("float32 CAGrad-dependent").GetProperty("rel_l2").GetDouble();
            foreach (var (key, val) in new[] { ("cagrad/g11", g11), ("cagrad/g12", g12), ("cagrad/g22", g22), ("cagrad/g0_norm", g0n),
                         ("cagrad/coef", g0n.Select(v => v * cC).ToArray()), ("cagrad/x", xs), ("cagrad/gw_norm", gwn),
                         ("cagrad/lmbda", sols.Select(s => s.Lambda).ToArray()), ("cagrad/fun", sols.Select(s => s.Objective).ToArray()) })
                chk.RelL2(key, V(val), t);
            chk.Covered("cagrad/nfev");   // evaluation counts follow float32 rounding of the Gram entries
        }
        else
        {
            chk.Before("cagrad/g11", V(g11)); chk.Before("cagrad/g12", V(g12)); chk.Before("cagrad/g22", V(g22));
            chk.Before("cagrad/g0_norm", V(g0n)); chk.Before("cagrad/coef", V(g0n.Select(v => v * cC).ToArray()));
            chk.After("cagrad/x", V(xs));
            chk.After("cagrad/gw_norm", V(gwn));
            chk.After("cagrad/lmbda", V(sols.Select(s => s.Lambda).ToArray()));
            chk.After("cagrad/fun", V(sols.Select(s => s.Objective).ToArray()));
            Assert.Equal(chk.Ref("cagrad/nfev").data<long>().ToArray(), sols.Select(s => (long)s.Evaluations).ToArray());
            chk.Covered("cagrad/nfev");
        }
        // The exact 1-D solver: x against the precise minimiser.
        var exact = ResearchCAGrad(c, CAGradSolver.Exact);
        exact.Combine(new[] { seen["task/A"], seen["task/B"] });
        var xExact = chk.Ref("cagrad/x_exact_not_reference").data<double>().ToArray();
        // float64: the precise minimiser to 1e-6; float32: the tasks themselves carry the case's float32 rounding, which
        // moves the minimiser, so x is held to the case's tolerance for float32 CAGrad-dependent quantities.
        if (chk.F32)
            TensorAssert.RelL2(V(exact.LastSolutions.Select(s => s.Weights[0]).ToArray()), V(xExact), c.Tolerance("float32 CAGrad-dependent").GetProperty("rel_l2").GetDouble(), c.Name + " exact x");
        else
            for (int ch = 0; ch < channels; ch++)
                Assert.True(Math.Abs(exact.LastSolutions[ch].Weights[0] - xExact[ch]) <= 1e-6, $"{c.Name} ch{ch}: exact x {exact.LastSolutions[ch].Weights[0]:R} vs {xExact[ch]:R}");
        chk.Covered("cagrad/x_exact_not_reference");

        // The replacement rule: a full second step with that rule (single-step cases), or from this step's tensors
        // inside the trajectory (the rule itself is exercised by the single-step cases).
        if (checkAll)
        {
            var seenR = new Dictionary<string, Tensor>();
            var stepR = c.MakeStep(x, i, j, sampler, noise, TwoConditions(c, posterior), ResearchCAGrad(c), seenR);
            chk.After("x_prev_replacement_variant", new ZMagicStrategy().Step(stepR));
        }
        else
        {
            chk.After("x_prev_replacement_variant", seen["base"] - seen["update"]);
        }
        if (checkAll) chk.AssertAllChecked();
        return next;
    }

    // ---- trajectory ----------------------------------------------------------------------------------------------

    private static void Trajectory(StepCase c)
    {
        var pairs = c.Sampler.GetProperty("timesteps").EnumerateArray().Select(p => (p[0].GetInt32(), p[1].GetInt32())).ToList();
        var x = c.Inputs["x_T"];
        var noise = c.Inputs["noise"];
        var xs = new List<Tensor> { x };
        double? rho2 = null;
        for (int s = 0; s < pairs.Count; s++)
        {
            var chk = new Checker(c, $"step{s}/");
            x = MagicTwoStep(c, chk, x, pairs[s].Item1, pairs[s].Item2, noise[s], posterior: false, checkAll: false, previousRho2: rho2).detach();
            if (pairs[s].Item1 > c.Stop) rho2 = Math.Sqrt(c.AlphaBar(pairs[s].Item1)) * c.RhoScale[1];
            chk.AssertAllChecked();
            xs.Add(x);
        }
        var all = new Checker(c);
        all.After("xs", torch.stack(xs.ToArray()));
    }

    // ---- Z-Magic, three conditions -------------------------------------------------------------------------------

    private static void MagicThree(StepCase c)
    {
        int i = c.Sampler.GetProperty("timestep_i").GetInt32(), j = c.Sampler.GetProperty("timestep_next_j").GetInt32();
        var rs = c.RhoScale;
        var window = new GuidanceWindow(Stop: c.Stop);
        IGuidanceCondition[] Conds() => new IGuidanceCondition[]
        {
            ToyEnergy.A(c.Inputs, new NormRelativeStepSize(0.02), GuidanceWindow.Always),
            ToyEnergy.B(c.Inputs, new SqrtAlphaBarStepSize(rs[1]), window),
            ToyEnergy.C(c.Inputs, new SqrtAlphaBarStepSize(rs[2]), window),
        };
        var x = c.Inputs["x_t"];
        var chk = new Checker(c);
        var combiner = ResearchCAGrad(c);
        var seen = new Dictionary<string, Tensor>();
        int draws = 0;
        var step = c.MakeStep(x, i, j, new DdpmPosteriorStep(), c.Inputs["noise_0"], Conds(), combiner, seen, () => { draws++; return c.Inputs["noise_1"]; });
        var next = new ZMagicStrategy(ZMagicOptions.ResearchCodeParity).Step(step);
        Assert.Equal(1, draws);
        double a = step.AlphaBar, an = step.AlphaBarNext;
        var (c1, c2, c3) = DdpmPosteriorStep.Coefficients(a, an);
        chk.Before("at", T(a)); chk.Before("at_next", T(an));
        chk.Before("c1", T(c1)); chk.Before("c2", T(c2)); chk.Before("c3", T(c3));
        chk.Before("eps_xt", seen["eps"]); chk.Before("eps_xt_2nd", seen["eps"]);
        chk.Before("x0_t", seen["x0"]); chk.Before("x0_t_2nd", seen["x0"]);
        chk.Scalar("E1", step.Trace.Conditions[0].Energy); chk.Scalar("E1_2nd", step.Trace.Conditions[0].Energy);
        chk.Before("g1", seen["g/A"]); chk.Before("g1_2nd", seen["g/A"]);
        chk.Before("xt_next_base", seen["base"]);
        chk.Before("xt_next_2nd_base", seen["proposal/C"] + seen["task/A"]);
        double l1 = Math.Sqrt(seen["eps"].square().mean().item<double>()) * Math.Sqrt(1 - a) / Math.Sqrt(a) * c1;
        chk.Scalar("l1", l1); chk.Scalar("l2", 0.02 * l1);
        chk.Scalar("rho1", step.Trace.Conditions[0].StepSize);
        foreach (var (n, k, idx) in new[] { ("B", "2", 1), ("C", "3", 2) })
        {
            chk.Before("proposal_" + k, seen["proposal/" + n]);
            chk.Before("eps_proposal_" + k, seen["eps_proposal/" + n]);
            chk.Before("x0_proposal_" + k, seen["x0_proposal/" + n]);
            chk.Scalar("E" + k, step.Trace.Conditions[idx].Energy);
            chk.Before("g" + k, seen["gh/" + n]);
            chk.Scalar("hessian_dot_" + k, Dot(seen["proposal/" + n], seen["gh/" + n]));
            chk.Before("d" + k, seen["d/" + n]);
            chk.Before("rho" + k, T(step.Trace.Conditions[idx].StepSize));
            chk.Before("grad_" + (idx), seen["task/" + n]);
        }
        chk.Before("grad_0", seen["task/A"]);
        chk.Before("x0_returned", seen["x0_proposal/B"]);
        chk.Before("xt_next_sequential", seen["sequential"]);
        Assert.Equal((3, 3, 2), (step.Trace.Passes.DenoiserForwards, step.Trace.Passes.DenoiserBackwards, step.Trace.Passes.Vjps));

        // Own simplex solver (SLSQP is not ported): objective at most SLSQP's, and the stated rel L2 bounds.
        var tasks = new[] { seen["task/A"], seen["task/B"], seen["task/C"] };
        var ggRef = chk.Ref("cagrad3/GG");
        var funRef = chk.Ref("cagrad3/fun").data<double>().ToArray();
        int channels = (int)ggRef.shape[0];
        var grams = new double[channels][,];
        for (int ch = 0; ch < channels; ch++)
        {
            var m = new double[3, 3];
            for (int p = 0; p < 3; p++) for (int q = 0; q < 3; q++) m[p, q] = Dot(tasks[p].narrow(1, ch, 1), tasks[q].narrow(1, ch, 1));
            grams[ch] = m;
            // On the reference's own Gram matrix our solver must reach SLSQP's value (both float64, the same matrix); our
            // weights, solved on our Gram matrix (the case's tolerance away), are judged there too: near the optimum the
            // difference moves the objective only to second order.
            var refGram = new double[3, 3];
            for (int p = 0; p < 3; p++) for (int q = 0; q < 3; q++) refGram[p, q] = ggRef[ch, p, q].to(ScalarType.Float64).item<double>();
            double onRef = combiner.NyuObjective(refGram, combiner.SolveGram(refGram).Weights);
            Assert.True(onRef <= funRef[ch] + 1e-9 * Math.Abs(funRef[ch]) + 1e-12, $"{c.Name} ch{ch}: simplex objective {onRef:R} on the reference's Gram matrix > SLSQP {funRef[ch]:R}");
            double ours = combiner.NyuObjective(refGram, combiner.LastSolutions[ch].Weights);
            Assert.True(ours <= funRef[ch] + 1e-6 * Math.Abs(funRef[ch]), $"{c.Name} ch{ch}: simplex objective {ours:R} (our weights) > SLSQP {funRef[ch]:R}");
        }
        chk.Before("cagrad3/GG", torch.tensor(grams.SelectMany(g => g.Cast<double>()).ToArray(), ScalarType.Float64).reshape(channels, 3, 3));
        chk.Covered("cagrad3/fun");
        chk.RelL2("cagrad_per_channel", seen["update"], 2e-2);
        chk.RelL2("x_prev_research", next, 1e-4);
        var wExact = chk.Ref("cagrad3/w_exact_not_reference");
        TensorAssert.RelL2(torch.tensor(combiner.LastSolutions.SelectMany(s => s.Weights).ToArray(), ScalarType.Float64).reshape(channels, 3), wExact, 1e-3, c.Name + " simplex w vs precise w");
        chk.Covered("cagrad3/w_exact_not_reference");
        var seenR = new Dictionary<string, Tensor>();
        var stepR = c.MakeStep(x, i, j, new DdpmPosteriorStep(), c.Inputs["noise_0"], Conds(), ResearchCAGrad(c), seenR, () => c.Inputs["noise_1"]);
        var nextR = new ZMagicStrategy(ZMagicOptions.ResearchCodeParity with { UpdateRule = ZMagicUpdateRule.Replacement }).Step(stepR);
        chk.RelL2("x_prev_replacement_variant", nextR, 1e-4);

        // With the reference's float32-rounded SLSQP weights injected, everything after the solver is tight.
        var wUsed = chk.Ref("cagrad3/w_used_f32").to(ScalarType.Float64);
        var lambdas = new double[channels];
        var gw = torch.zeros_like(tasks[0]);
        var mean = (tasks[0] + tasks[1] + tasks[2]) / 3.0;
        var shape = new long[] { 1, channels, 1, 1 };
        for (int p = 0; p < 3; p++) gw = gw + tasks[p] * wUsed.select(1, p).reshape(shape);
        var gwNorm = gw.transpose(0, 1).reshape(channels, -1).square().sum(1).sqrt().data<double>().ToArray();
        for (int ch = 0; ch < channels; ch++)
            lambdas[ch] = combiner.Finish(grams[ch], wUsed[ch].data<double>().ToArray(), gwNorm: gwNorm[ch]).Lambda;
        var cg = (mean + gw * torch.tensor(lambdas, ScalarType.Float64).reshape(shape)) / 1.25;
        var (absI, relI) = c.After;
        TensorAssert.Close(cg, chk.Ref("cagrad_per_channel"), absI, relI, c.Name + " cagrad_per_channel (w_used_f32)");
        TensorAssert.Close(seen["sequential"] - (cg + tasks[0] + tasks[1] + tasks[2]), chk.Ref("x_prev_research"), absI, relI, c.Name + " x_prev_research (w_used_f32)");
        TensorAssert.Close(seen["base"] - cg, chk.Ref("x_prev_replacement_variant"), absI, relI, c.Name + " x_prev_replacement_variant (w_used_f32)");
        chk.After("cagrad3/gw_norm", torch.tensor(gwNorm, ScalarType.Float64));
        chk.After("cagrad3/lmbda", torch.tensor(lambdas, ScalarType.Float64));
        var g0 = grams.Select(g => Math.Sqrt(g.Cast<double>().Average() + 1e-8)).ToArray();
        chk.Before("cagrad3/g0_norm", torch.tensor(g0, ScalarType.Float64));
        chk.Before("cagrad3/c", torch.tensor(g0.Select(v => 0.5 * v + 1e-8).ToArray(), ScalarType.Float64));
        // w_scipy / nit / nfev describe SLSQP's run, which is not ported (its w_used_f32 is injected above).
        chk.AssertAllChecked("cagrad3/w_scipy", "cagrad3/w_used_f32", "cagrad3/nit", "cagrad3/nfev");
    }
}
