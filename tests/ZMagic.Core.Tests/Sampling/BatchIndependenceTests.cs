using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Core.Tests.Analytic;
using ZMagic.Core.Tests.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Sampling;

/// <summary>
/// Guided sampling keeps the sampler's promise that item i depends only on its seed and i: on the Gaussian test bed
/// (an elementwise closed-form denoiser, quadratic energies) item i is bit-identical alone, at every position of a
/// batch of 3 and inside a batch of 4, under Vanilla, Z-Magic and Z-Magic + CAGrad with 2 and 3 conditions, with the
/// RMS (norm-relative) and the default (sqrt(abar)) step-size rules, through the fused, per-condition and batched
/// pass paths. Whole-batch Gram matrices or RMS step sizes break this, so these tests fail on such code.
/// </summary>
public class BatchIndependenceTests
{
    private static double[] Values(Tensor t) => t.to(ScalarType.Float64).data<double>().ToArray();

    /// <summary>K quadratic conditions with overlapping masks and different targets, so that their gradients conflict.</summary>
    private static IGuidanceCondition[] Conditions(int k, string rule)
    {
        using var g = new Generator(4242);
        var conds = new IGuidanceCondition[k];
        for (int i = 0; i < k; i++)
        {
            var mask = torch.rand(new long[] { 2, 4, 4 }, ScalarType.Float64, generator: g) + 0.3;
            var target = torch.randn(new long[] { 2, 4, 4 }, ScalarType.Float64, generator: g) * 1.5;
            IStepSizeRule r = rule == "rms" ? new NormRelativeStepSize(0.3 + 0.2 * i) : new SqrtAlphaBarStepSize(0.2 + 0.1 * i);
            conds[i] = new QuadraticCondition($"q{i}", mask, target, r);
        }
        return conds;
    }

    private static (IGuidanceStrategy Strategy, IGradientCombiner Combiner) Method(string method) => method switch
    {
        "vanilla" => (new VanillaStrategy(), SumCombiner.Instance),
        "vanilla-per-condition" => (new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }), SumCombiner.Instance),
        "vanilla+cagrad-batched" => (new VanillaStrategy(new VanillaOptions { BatchConditionGradients = true }), new CAGradCombiner(0.5)),
        "zmagic" => (new ZMagicStrategy(), SumCombiner.Instance),
        "zmagic+cagrad" => (new ZMagicStrategy(), new CAGradCombiner(0.5)),
        "zmagic+cagrad-batched" => (new ZMagicStrategy(new ZMagicOptions { BatchConditionGradients = true }), new CAGradCombiner(0.5)),
        "zmagic-research+cagrad" => (new ZMagicStrategy(ZMagicOptions.ResearchCodeParity), new CAGradCombiner(CAGradOptions.ResearchCode)),
        _ => throw new ArgumentException(method),
    };

    public static TheoryData<string, int, string> Cases()
    {
        var d = new TheoryData<string, int, string>();
        foreach (var m in new[] { "vanilla", "vanilla-per-condition", "vanilla+cagrad-batched", "zmagic", "zmagic+cagrad", "zmagic+cagrad-batched", "zmagic-research+cagrad" })
            foreach (int k in new[] { 2, 3 })
                foreach (var rule in new[] { "sqrt-abar", "rms" })
                    d.Add(m, k, rule);
        return d;
    }

    private static SamplerOptions Options(string method, ScalarType dtype)
    {
        var (strategy, combiner) = Method(method);
        return new SamplerOptions
        {
            Steps = 12, SamplerStep = new FreeDoMEtaStep(0.5), Seed = 31, DType = dtype,
            Strategy = strategy, Combiner = combiner,
        };
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GuidedItemIsBitIdenticalAloneOrAnywhereInABatch(string method, int k, string rule)
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions(k, rule);
        var o = Options(method, ScalarType.Float64);

        using var four = sampler.Sample(conds, o with { BatchSize = 4 });
        for (int i = 0; i < 4; i++)
        {
            using var alone = sampler.Sample(conds, o with { BatchSize = 1, FirstItem = i });
            Assert.Equal(Values(alone.Images[0]), Values(four.Images[i]));
            if (i == 2)
            {
                // Item 2 at positions 2, 1 and 0 of a batch of 3.
                for (int first = 0; first <= 2; first++)
                {
                    using var three = sampler.Sample(conds, o with { BatchSize = 3, FirstItem = first });
                    Assert.Equal(Values(alone.Images[0]), Values(three.Images[2 - first]));
                }
                // Guidance did act on the item (the comparison above is not between unguided runs).
                using var unguided = sampler.Sample(Array.Empty<IGuidanceCondition>(), o with { BatchSize = 1, FirstItem = i });
                Assert.NotEqual(Values(unguided.Images[0]), Values(alone.Images[0]));
            }
        }
        Assert.NotEqual(Values(four.Images[0]), Values(four.Images[1]));
    }

    [Theory]
    [InlineData("zmagic+cagrad", "rms")]
    [InlineData("vanilla-per-condition", "rms")]
    public void Float32ItemIsBitIdenticalAloneOrInABatch(string method, string rule)
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions(3, rule);
        var o = Options(method, ScalarType.Float32);
        using var three = sampler.Sample(conds, o with { BatchSize = 3 });
        for (int i = 0; i < 3; i++)
        {
            using var alone = sampler.Sample(conds, o with { BatchSize = 1, FirstItem = i });
            Assert.Equal(Values(alone.Images[0]), Values(three.Images[i]));
        }
    }

    [Fact]
    public void TraceRecordsEveryItemsStepSizeAndTheirMean()
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions(2, "rms");
        var o = Options("zmagic+cagrad", ScalarType.Float64);
        using var three = sampler.Sample(conds, o with { BatchSize = 3 });
        using var alone = sampler.Sample(conds, o with { BatchSize = 1, FirstItem = 1 });
        for (int s = 0; s < three.Trace.Steps.Count; s++)
        {
            for (int c = 0; c < conds.Length; c++)
            {
                var batched = three.Trace.Steps[s].Conditions[c];
                var single = alone.Trace.Steps[s].Conditions[c];
                Assert.NotNull(batched.StepSizes);
                Assert.Equal(3, batched.StepSizes!.Length);
                Assert.Equal(single.StepSizes![0], batched.StepSizes[1]);
                Assert.Equal(single.StepSize, single.StepSizes[0]);
                Assert.Equal(batched.StepSizes.Average(), batched.StepSize, 12);
            }
        }
        // The RMS rule gives the items different step sizes.
        Assert.NotEqual(three.Trace.Steps[0].Conditions[0].StepSizes![0], three.Trace.Steps[0].Conditions[0].StepSizes![1]);
    }

    [Fact]
    public void RulesGiveOneStepSizePerItemAndTheDefaultSlicesItems()
    {
        using var scope = torch.NewDisposeScope();
        var eps = torch.randn(new long[] { 3, 2, 4, 4 }, ScalarType.Float64, generator: new Generator(1));
        var grad = torch.randn(new long[] { 3, 2, 4, 4 }, ScalarType.Float64, generator: new Generator(2)) * torch.tensor(new[] { 1.0, 10.0, 0.1 }).reshape(3, 1, 1, 1);
        var ctx = new StepSizeContext(500, 490, 0.3, 0.31, eps, grad);
        IStepSizeRule rms = new NormRelativeStepSize(0.02);
        var perItem = rms.StepSizes(ctx);
        Assert.Equal(3, perItem.Length);
        for (int i = 0; i < 3; i++)
            Assert.Equal(rms.StepSize(ctx with { Epsilon = eps.narrow(0, i, 1), Gradient = grad.narrow(0, i, 1) }), perItem[i]);
        Assert.NotEqual(perItem[0], perItem[1]);
        // One item: exactly the scalar rule on the whole context.
        var one = ctx with { Epsilon = eps.narrow(0, 1, 1), Gradient = grad.narrow(0, 1, 1) };
        Assert.Equal(new[] { rms.StepSize(one) }, rms.StepSizes(one));
        // Gradient-free rules: one value for every item, without a gradient.
        IStepSizeRule sqrt = new SqrtAlphaBarStepSize(100);
        Assert.Equal(Enumerable.Repeat(Math.Sqrt(0.3) * 100, 3), sqrt.StepSizes(ctx with { Gradient = torch.empty(0) }));
    }
}
