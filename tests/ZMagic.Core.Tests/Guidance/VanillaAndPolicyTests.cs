using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

public class VanillaAndPolicyTests
{
    private const int T = 500, Next = 490;

    private static (GaussianDenoiser Den, Tensor X, Tensor Noise, QuadraticCondition A, QuadraticCondition B) Bed(IStepSizeRule? ruleB = null)
    {
        var den = GaussianDenoiser.Random(3, 5, 31);
        using var g = new Generator(32);
        Tensor R(params long[] s) => torch.randn(s, ScalarType.Float64, generator: g);
        var a = new QuadraticCondition("A", R(3, 5, 5).abs() + 0.2, R(3, 5, 5), new SqrtAlphaBarStepSize(0.6));
        var b = new QuadraticCondition("B", R(3, 5, 5).abs() + 0.2, R(3, 5, 5), ruleB ?? new ConstantStepSize(0.25));
        return (den, R(2, 3, 5, 5), R(2, 3, 5, 5), a, b);
    }

    [Fact]
    public void VanillaFusedAndPerConditionAgreeWithTheClosedForm()
    {
        var (den, x, noise, ca, cb) = Bed();
        var sampler = new FreeDoMEtaStep(0.5);
        var (fused, seenF) = StepHarness.Make(den, x, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
        var nextFused = new VanillaStrategy().Step(fused);
        var (split, seenS) = StepHarness.Make(den, x, T, Next, sampler, noise, new IGuidanceCondition[] { ca, cb });
        var nextSplit = new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }).Step(split);

        double a = fused.AlphaBar;
        var k = den.Gain(a);
        var x0 = den.X0(x, a);
        var expected = seenF["base"] - k * ca.GradX0(x0) * (Math.Sqrt(a) * 0.6) - k * cb.GradX0(x0) * 0.25;
        TensorAssert.Close(nextFused, expected, 1e-12, 1e-10, "fused");
        TensorAssert.Close(nextSplit, expected, 1e-12, 1e-10, "per condition");
        Assert.Equal((1, 1), (fused.Trace.Passes.DenoiserForwards, fused.Trace.Passes.DenoiserBackwards));
        Assert.Equal((1, 2), (split.Trace.Passes.DenoiserForwards, split.Trace.Passes.DenoiserBackwards));
        Assert.NotNull(split.Trace.GradientCosines);
        double cos = split.Trace.GradientCosines![0][1];
        var gA = seenS["g/A"]; var gB = seenS["g/B"];
        Assert.Equal((gA * gB).sum().item<double>() / (gA.norm().item<double>() * gB.norm().item<double>()), cos, 10);
        Assert.All(split.Trace.Conditions, c => Assert.True(c.Energy > 0 && c.GradientNorm > 0 && c.StepSize > 0));
    }

    [Fact]
    public void GradientDependentRulesOrOtherCombinersUsePerConditionBackwards()
    {
        var (den, x, noise, ca, cb) = Bed(new NormRelativeStepSize(0.02));
        var (step, _) = StepHarness.Make(den, x, T, Next, new DdpmPosteriorStep(), noise, new IGuidanceCondition[] { ca, cb });
        new VanillaStrategy().Step(step);
        Assert.Equal(2, step.Trace.Passes.DenoiserBackwards);
        var (step2, _) = StepHarness.Make(den, x, T, Next, new DdpmPosteriorStep(), noise, new IGuidanceCondition[] { ca, cb }, new CAGradCombiner(0.5));
        new VanillaStrategy().Step(step2);
        Assert.Equal(2, step2.Trace.Passes.DenoiserBackwards);
    }

    [Fact]
    public void WindowsSwitchConditionsOff()
    {
        var (den, x, noise, ca, _) = Bed();
        var off = new QuadraticCondition("off", ca.Mask, ca.Target, new ConstantStepSize(1), new GuidanceWindow(Stop: 600));
        var (step, seen) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { off });
        var next = new VanillaStrategy().Step(step);
        TensorAssert.Close(next, seen["base"], 0, 0, "inactive window = base step");
        Assert.False(step.Trace.Conditions[0].Active);
        Assert.Equal(0, step.Trace.Passes.DenoiserBackwards);
    }

    public static TheoryData<string> Strategies() => new() { "vanilla", "vanilla-split", "zmagic", "zmagic-research", "zmagic-full", "zmagic-first", "zmagic-reuse" };

    private static IGuidanceStrategy Make(string name) => name switch
    {
        "vanilla" => new VanillaStrategy(),
        "vanilla-split" => new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }),
        "zmagic" => new ZMagicStrategy(),
        "zmagic-research" => new ZMagicStrategy(new ZMagicOptions { UpdateRule = ZMagicUpdateRule.ResearchCode }),
        "zmagic-full" => new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.Full }),
        "zmagic-first" => new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder }),
        "zmagic-reuse" => new ZMagicStrategy(new ZMagicOptions { Proposal = ZMagicProposal.ReuseFirstForward }),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Strategies))]
    public void ZeroStepSizesReproduceTheUnguidedRunBitForBit(string strategyName)
    {
        var den = GaussianDenoiser.Random(3, 4, 41, ScalarType.Float32);
        using var g = new Generator(42);
        var conds = Enumerable.Range(0, 3).Select(i => (IGuidanceCondition)new QuadraticCondition(
            $"c{i}", torch.rand(new long[] { 3, 4, 4 }, generator: g), torch.randn(new long[] { 3, 4, 4 }, generator: g), new ConstantStepSize(0.0))).ToList();
        var sampler = new ConditionalSampler(den);
        var opts = new SamplerOptions { Steps = 10, Seed = 5, BatchSize = 2 };
        using var unguided = sampler.Sample(Array.Empty<IGuidanceCondition>(), opts);
        foreach (var combiner in new IGradientCombiner[] { SumCombiner.Instance, new CAGradCombiner(0.5, perChannel: true) })
        {
            using var guided = sampler.Sample(conds, opts with { Strategy = Make(strategyName), Combiner = combiner });
            Assert.True(unguided.Images.eq(guided.Images).all().item<bool>(), $"{strategyName} + {combiner.Name}: zero step sizes changed the samples (max diff {(unguided.Images - guided.Images).abs().max().item<float>()})");
            Assert.True(guided.Trace.Steps.All(s => s.Passes.DenoiserBackwards >= 1));
        }
    }

    [Fact]
    public void EmptyConditionListSamplesUnguided()
    {
        var den = GaussianDenoiser.Random(1, 4, 43, ScalarType.Float32);
        var sampler = new ConditionalSampler(den);
        var opts = new SamplerOptions { Steps = 5, Seed = 9 };
        using var plain = sampler.Sample(Array.Empty<IGuidanceCondition>(), opts with { Strategy = UnguidedStrategy.Instance });
        foreach (var s in new IGuidanceStrategy[] { new VanillaStrategy(), new ZMagicStrategy() })
        {
            using var r = sampler.Sample(Array.Empty<IGuidanceCondition>(), opts with { Strategy = s });
            Assert.True(plain.Images.eq(r.Images).all().item<bool>());
            Assert.All(r.Trace.Steps, st => Assert.Equal((1, 0), (st.Passes.DenoiserForwards, st.Passes.DenoiserBackwards)));
        }
    }

    [Fact]
    public void DefaultStrategyWithConditionsIsVanilla()
    {
        var (den, _, _, ca, _) = Bed();
        using var r = new ConditionalSampler(den).Sample(new IGuidanceCondition[] { ca }, new SamplerOptions { Steps = 2, DType = ScalarType.Float64 });
        Assert.Equal("vanilla", r.Trace.Strategy);
    }

    public static TheoryData<string, string> NonFiniteCases()
    {
        var d = new TheoryData<string, string>();
        foreach (var s in new[] { "vanilla", "vanilla-split", "zmagic", "zmagic-full", "zmagic-reuse" })
            foreach (var where in new[] { "energy", "gradient" })
                d.Add(s, where);
        return d;
    }

    private static FuncCondition Bad(string where) => where == "energy"
        ? new FuncCondition("bad", x0 => x0.flatten(1).sum(1) * double.NaN)
        // Finite energy, infinite gradient: sqrt at 0.
        : new FuncCondition("bad", x0 => (x0.flatten(1).sum(1) * 0).sqrt());

    [Theory]
    [MemberData(nameof(NonFiniteCases))]
    public void NonFiniteFailNamesConditionAndTimestep(string strategyName, string where)
    {
        var (den, x, noise, ca, cb) = Bed();
        foreach (var order in new[] { new IGuidanceCondition[] { ca, Bad(where), cb }, new IGuidanceCondition[] { Bad(where), ca, cb } })
        {
            var (step, _) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, order);
            var ex = Assert.Throws<GuidanceException>(() => Make(strategyName).Step(step));
            Assert.Equal("bad", ex.Condition);
            Assert.Equal(T, ex.Timestep);
            Assert.Contains("'bad'", ex.Message);
            Assert.Contains(T.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message);
        }
    }

    [Theory]
    [MemberData(nameof(NonFiniteCases))]
    public void NonFiniteSkipDropsTheConditionForThatStep(string strategyName, string where)
    {
        var (den, x, noise, ca, cb) = Bed();
        foreach (var withBad in new[] { new IGuidanceCondition[] { ca, Bad(where), cb }, new IGuidanceCondition[] { Bad(where), ca, cb } })
        {
            var (step, _) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, withBad, policy: NonFinitePolicy.SkipCondition);
            var next = Make(strategyName).Step(step);
            var (clean, _) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { ca, cb });
            var expected = Make(strategyName).Step(clean);
            TensorAssert.Close(next, expected, 1e-12, 1e-10, $"{strategyName}: skipping equals leaving the condition out");
            var bad = step.Trace.Conditions.Single(c => c.Name == "bad");
            Assert.True(bad.Skipped);
            Assert.False(step.Trace.Conditions.Single(c => c.Name == "A").Skipped);
        }
    }

    [Theory]
    [InlineData("vanilla")]
    [InlineData("zmagic")]
    public void EnergyOfTheWrongShapeIsRefused(string strategyName)
    {
        var (den, x, noise, ca, _) = Bed();
        foreach (var bad in new[]
                 {
                     new FuncCondition("scalar", x0 => x0.sum()),
                     new FuncCondition("per-pixel", x0 => x0.flatten(1)),
                     new FuncCondition("wrong-batch", x0 => x0.flatten(1).sum(1).narrow(0, 0, 1)),
                 })
        {
            var (step, _) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { ca, bad });
            var ex = Assert.Throws<GuidanceException>(() => Make(strategyName).Step(step));
            Assert.Equal(bad.Name, ex.Condition);
            Assert.Contains("expected one energy per batch item, shape [2]", ex.Message);
        }
    }

    [Fact]
    public void AConditionThatIgnoresItsInputHasAZeroGradient()
    {
        var (den, x, noise, ca, _) = Bed();
        var constant = new FuncCondition("constant", x0 => torch.ones(x0.shape[0], x0.dtype).requires_grad_(true));
        var (step, seen) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { constant },
            policy: NonFinitePolicy.Fail);
        var next = new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }).Step(step);
        TensorAssert.Close(next, seen["base"], 0, 0, "no dependence on x0: no update");
        var detached = new FuncCondition("detached", x0 => x0.detach().flatten(1).sum(1));
        var (step2, _) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, new IGuidanceCondition[] { ca, detached });
        var ex = Assert.Throws<InvalidOperationException>(() => new ZMagicStrategy().Step(step2));
        Assert.Contains("grad_fn", ex.Message);
    }
}
