using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>Z-Magic's pull-back and update rules against closed forms on the Gaussian test bed.</summary>
public class ZMagicAnalyticTests
{
    private const int T = 500, Next = 490;

    private static (GaussianDenoiser Den, Tensor X, Tensor Noise, QuadraticCondition A, QuadraticCondition B, QuadraticCondition C) Bed(long seed = 7)
    {
        var den = GaussianDenoiser.Random(3, 6, seed);
        using var g = new Generator((ulong)seed + 1);
        Tensor R(params long[] s) => torch.randn(s, ScalarType.Float64, generator: g);
        var x = R(2, 3, 6, 6);
        var noise = R(2, 3, 6, 6);
        var a = new QuadraticCondition("A", R(3, 6, 6).abs() + 0.2, R(3, 6, 6), new SqrtAlphaBarStepSize(0.7));
        var b = new QuadraticCondition("B", R(3, 6, 6).abs() + 0.2, R(3, 6, 6), new SqrtAlphaBarStepSize(0.4));
        var c = new QuadraticCondition("C", R(3, 6, 6).abs() + 0.2, R(3, 6, 6), new ConstantStepSize(0.3));
        return (den, x, noise, a, b, c);
    }

    [Theory]
    [InlineData(ZMagicJacobian.ResearchCode)]
    [InlineData(ZMagicJacobian.Full)]
    [InlineData(ZMagicJacobian.FirstOrder)]
    public void PullBackEqualsClosedFormJacobianTranspose(ZMagicJacobian mode)
    {
        var (den, x, noise, ca, cb, _) = Bed();
        var sampler = new FreeDoMEtaStep(0.5);
        var (step, seen) = StepHarness.Make(den, x, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
        new ZMagicStrategy(new ZMagicOptions { Jacobian = mode }).Step(step);

        double a = step.AlphaBar, an = step.AlphaBarNext;
        var k = den.Gain(a);
        // base = sqrt(an) x0 + ce eps + noise term; x0 = mu + k (x - sqrt(a) mu); eps = (x - sqrt(a) x0) / sqrt(1 - a).
        double ce = sampler.EpsilonCoefficient(an);
        var j = k * Math.Sqrt(an) + (1 - k * Math.Sqrt(a)) * (ce / Math.Sqrt(1 - a));
        double rho1 = Math.Sqrt(a) * 0.7;
        var x0 = den.X0(x, a);
        var g1 = k * ca.GradX0(x0);
        TensorAssert.Close(seen["g/A"], g1, 1e-12, 1e-10, "g1 closed form");
        var proposal = seen["base"] - g1 * rho1;
        TensorAssert.Close(seen["proposal/B"], proposal, 1e-12, 1e-10, "proposal");
        var gh = k * cb.GradX0(den.X0(proposal, a));
        TensorAssert.Close(seen["gh/B"], gh, 1e-12, 1e-10, "gh closed form");
        var expected = mode switch
        {
            ZMagicJacobian.ResearchCode => j * gh,
            ZMagicJacobian.Full => j * gh - k * ca.Mask.square() * k * gh * rho1,   // J - rho1 Hessian(E1), both diagonal
            _ => gh,
        };
        TensorAssert.Close(seen["d/B"], expected, 1e-12, 1e-10, $"d ({mode})");
        var update = seen["task/A"] + seen["task/B"];
        TensorAssert.Close(seen["next"], seen["base"] - update, 0, 0, "replacement rule with the sum combiner");
    }

    [Fact]
    public void FullPullBackMatchesFiniteDifferencesOfTheProposal()
    {
        var (den, x, noise, ca, cb, _) = Bed(11);
        var sampler = new FreeDoMEtaStep(0.5);
        var strategy = new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.Full });
        var (step, seen) = StepHarness.Make(den, x, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
        strategy.Step(step);
        var d = seen["d/B"];
        var gh = seen["gh/B"];
        using var g = new Generator(99);
        for (int trial = 0; trial < 3; trial++)
        {
            var v = torch.randn(x.shape, ScalarType.Float64, generator: g);
            double h = 1e-5;
            Tensor Proposal(Tensor xs)
            {
                var (s2, seen2) = StepHarness.Make(den, xs, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
                strategy.Step(s2);
                return seen2["proposal/B"];
            }
            var fd = ((Proposal(x + v * h) - Proposal(x - v * h)) / (2 * h) * gh).sum().item<double>();
            var exact = (d * v).sum().item<double>();
            Assert.True(Math.Abs(fd - exact) <= 1e-6 * (1 + Math.Abs(exact)), $"finite difference {fd:R} vs VJP {exact:R}");
        }
    }

    [Fact]
    public void ResearchPullBackMatchesFiniteDifferencesOfTheBaseStep()
    {
        var (den, x, noise, ca, cb, _) = Bed(13);
        var sampler = new DdpmPosteriorStep();
        var strategy = new ZMagicStrategy();
        var (step, seen) = StepHarness.Make(den, x, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
        strategy.Step(step);
        using var g = new Generator(5);
        var v = torch.randn(x.shape, ScalarType.Float64, generator: g);
        double h = 1e-5;
        Tensor Base(Tensor xs)
        {
            var (s2, seen2) = StepHarness.Make(den, xs, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
            strategy.Step(s2);
            return seen2["base"];
        }
        var fd = ((Base(x + v * h) - Base(x - v * h)) / (2 * h) * seen["gh/B"]).sum().item<double>();
        var exact = (seen["d/B"] * v).sum().item<double>();
        Assert.True(Math.Abs(fd - exact) <= 1e-6 * (1 + Math.Abs(exact)), $"finite difference {fd:R} vs VJP {exact:R}");
    }

    [Fact]
    public void ResearchUpdateRuleSubtractsTheTermsTwicePlusTheCombinedUpdate()
    {
        var (den, x, noise, ca, cb, cc) = Bed(17);
        var combiner = new CAGradCombiner(new CAGradOptions { PerChannel = true, Variant = CAGradVariant.ResearchCode });
        var (step, seen) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { ca, cb, cc }, combiner);
        var next = new ZMagicStrategy(new ZMagicOptions { UpdateRule = ZMagicUpdateRule.ResearchCode }).Step(step);
        var sum = seen["task/A"] + seen["task/B"] + seen["task/C"];
        TensorAssert.Close(next, seen["base"] - sum * 2 - seen["update"], 1e-12, 1e-12, "x' = S - 2 sum D - u");
        TensorAssert.Close(seen["sequential"], seen["base"] - sum, 1e-12, 1e-12, "sequential state");
    }

    public static TheoryData<ZMagicOptions, int, int, int, int> PassCases()
    {
        var d = new TheoryData<ZMagicOptions, int, int, int, int>();
        foreach (int n in new[] { 1, 2, 3, 5 })
        {
            // (options, n, forwards, backwards, vjps). The sum combiner with constant step sizes: from two later
            // conditions on (n >= 3) the shared-proposal modes fuse them into one backward and one VJP.
            int fwd = n == 1 ? 1 : 2, bwd = Math.Min(n, 2), vjp = Math.Min(n - 1, 1);
            d.Add(new ZMagicOptions(), n, fwd, bwd, vjp);
            d.Add(new ZMagicOptions { Jacobian = ZMagicJacobian.Full }, n, fwd, bwd, vjp);
            d.Add(new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder }, n, fwd, bwd, 0);
            d.Add(new ZMagicOptions { Proposal = ZMagicProposal.ReuseFirstForward }, n, 1, 1, vjp);
            d.Add(new ZMagicOptions { Chaining = ZMagicChaining.Chain }, n, n, n, n - 1);
            // Per-condition (no fusion): one backward per condition and one VJP per later condition.
            d.Add(new ZMagicOptions { PerConditionGradients = true }, n, fwd, n, n - 1);
            d.Add(new ZMagicOptions { Jacobian = ZMagicJacobian.Full, PerConditionGradients = true }, n, fwd, n, n - 1);
            d.Add(new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder, PerConditionGradients = true }, n, fwd, n, 0);
            d.Add(new ZMagicOptions { Proposal = ZMagicProposal.ReuseFirstForward, PerConditionGradients = true }, n, 1, 1, n - 1);
            // Batched per-condition gradients at the proposal: one backward of n - 1 copies.
            d.Add(new ZMagicOptions { PerConditionGradients = true, BatchConditionGradients = true }, n, fwd, bwd, n - 1);
        }
        return d;
    }

    [Theory]
    [MemberData(nameof(PassCases))]
    public void PassCountsPerStep(ZMagicOptions options, int n, int forwards, int backwards, int vjps)
    {
        var den = GaussianDenoiser.Random(1, 4, 3);
        using var g = new Generator(4);
        var conditions = Enumerable.Range(0, n).Select(i => (IGuidanceCondition)new QuadraticCondition(
            $"c{i}", torch.rand(new long[] { 1, 4, 4 }, ScalarType.Float64, generator: g) + 0.1,
            torch.randn(new long[] { 1, 4, 4 }, ScalarType.Float64, generator: g), new ConstantStepSize(0.1))).ToList();
        var x = torch.randn(new long[] { 1, 1, 4, 4 }, ScalarType.Float64, generator: g);
        var (step, _) = StepHarness.Make(den, x, T, Next, new DdimStep(0), null, conditions);
        new ZMagicStrategy(options).Step(step);
        var p = step.Trace.Passes;
        Assert.Equal((forwards, backwards, vjps, n), (p.DenoiserForwards, p.DenoiserBackwards, p.Vjps, p.EncoderCalls));
    }

    [Fact]
    public void ChainEvaluatesEachConditionAtThePreviousProposal()
    {
        var (den, x, noise, ca, cb, cc) = Bed(21);
        var (step, seen) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { ca, cb, cc });
        new ZMagicStrategy(new ZMagicOptions { Chaining = ZMagicChaining.Chain }).Step(step);
        double rhoB = Math.Sqrt(step.AlphaBar) * 0.4;
        TensorAssert.Close(seen["proposal/C"], seen["proposal/B"] - seen["gh/B"] * rhoB, 1e-12, 1e-12, "chained proposal");
        var (step2, seen2) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { ca, cb, cc });
        new ZMagicStrategy().Step(step2);
        TensorAssert.Close(seen2["proposal/C"], seen2["proposal/B"], 0, 0, "star: one shared proposal");
    }

    [Fact]
    public void BranchNoiseGivesLaterBranchesTheirOwnDraw()
    {
        var (den, x, noise, ca, cb, cc) = Bed(23);
        var extra = torch.randn_like(noise);
        int draws = 0;
        var (step, seen) = StepHarness.Make(den, x, T, Next, new DdpmPosteriorStep(), noise, new IGuidanceCondition[] { ca, cb, cc },
            drawNoise: () => { draws++; return extra; });
        new ZMagicStrategy(ZMagicOptions.ResearchCodeParity).Step(step);
        Assert.Equal(1, draws);
        var (c1, _, c3) = DdpmPosteriorStep.Coefficients(step.AlphaBar, step.AlphaBarNext);
        TensorAssert.Close(seen["proposal/C"] - seen["proposal/B"], (extra - noise) * c3, 1e-12, 1e-10, "branch proposals differ by the noise term only");
        Assert.Equal(3, step.Trace.Passes.DenoiserForwards);
        _ = c1;
        var (stepNo, _) = StepHarness.Make(den, x, T, Next, new DdpmPosteriorStep(), noise, new IGuidanceCondition[] { ca, cb, cc });
        var ex = Assert.Throws<GuidanceException>(() => new ZMagicStrategy(ZMagicOptions.ResearchCodeParity).Step(stepNo));
        Assert.Contains("DrawNoise", ex.Message);
    }

    [Fact]
    public void ResearchParityRunsThroughTheSamplerWithBranchNoise()
    {
        var den = GaussianDenoiser.Random(3, 4, 51, ScalarType.Float32);
        using var g = new Generator(52);
        var conds = Enumerable.Range(0, 3).Select(i => (IGuidanceCondition)new QuadraticCondition(
            $"c{i}", torch.rand(new long[] { 3, 4, 4 }, generator: g), torch.randn(new long[] { 3, 4, 4 }, generator: g), new ConstantStepSize(0.05))).ToList();
        var sampler = new ZMagic.Core.Sampling.ConditionalSampler(den);
        var opts = new ZMagic.Core.Sampling.SamplerOptions
        {
            Steps = 4, Seed = 3, SamplerStep = new DdpmPosteriorStep(),
            Strategy = new ZMagicStrategy(ZMagicOptions.ResearchCodeParity), Combiner = new CAGradCombiner(CAGradOptions.ResearchCode),
        };
        using var a = sampler.Sample(conds, opts);
        using var b = sampler.Sample(conds, opts);
        Assert.True(a.Images.eq(b.Images).all().item<bool>(), "seeded runs are reproducible");
        Assert.True(torch.isfinite(a.Images).all().item<bool>());
        Assert.All(a.Trace.Steps, s => Assert.Equal((3, 3, 2), (s.Passes.DenoiserForwards, s.Passes.DenoiserBackwards, s.Passes.Vjps)));
        Assert.Contains("cos", a.Trace.ToJson().Replace("gradient_cosines", "cos", StringComparison.Ordinal), StringComparison.Ordinal);
    }
}
