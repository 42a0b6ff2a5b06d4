using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Benchmarking;
using ZMagic.Guidance.Tests.Reliability;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Benchmarking;

/// <summary>
/// The cheaper passes on a real network (the tiny DDPM UNet: GroupNorm, attention, residual blocks, formula weights):
/// Z-Magic's fused later conditions against the per-condition passes, and the batched per-condition gradients against
/// the unbatched ones, within float32 tolerance. Batching is only exact when items never interact inside the network,
/// which is what these tests pin down for the real UNet.
/// </summary>
public class FusedAndBatchedDdpmTests
{
    private static Tensor Step(IDenoiser den, IGuidanceStrategy strategy, IGradientCombiner combiner, IReadOnlyList<IGuidanceCondition> conds,
        Tensor x, Tensor noise, out StepTrace trace)
    {
        trace = new StepTrace { T = 600, Next = 590 };
        var step = new GuidedStep
        {
            Denoiser = den, X = x, TimestepTensor = torch.full(x.shape[0], 600f, ScalarType.Float32), Timesteps = new TimestepPair(600, 590),
            AlphaBar = den.Schedule.AlphaBar(600), AlphaBarNext = den.Schedule.AlphaBar(590), Sampler = new FreeDoMEtaStep(0.5), Noise = noise,
            Conditions = conds, Combiner = combiner, Trace = trace,
        };
        return strategy.Step(step);
    }

    private static (Tensor X, Tensor Noise) Inputs(int batch, long seed)
    {
        var g = new torch.Generator((ulong)seed);
        return (torch.randn(new long[] { batch, 1, 8, 8 }, generator: g), torch.randn(new long[] { batch, 1, 8, 8 }, generator: g));
    }

    [Theory]
    [InlineData(3, "zmagic", "zmagic-percondition", ZMagicUpdateRule.Replacement)]
    [InlineData(5, "zmagic", "zmagic-percondition", ZMagicUpdateRule.Replacement)]
    [InlineData(3, "zmagic-full", "zmagic-full-percondition", ZMagicUpdateRule.Replacement)]
    [InlineData(3, "zmagic", "zmagic-percondition", ZMagicUpdateRule.ResearchCode)]
    [InlineData(5, "zmagic-full", "zmagic-full-percondition", ZMagicUpdateRule.ResearchCode)]
    public void Fused_zmagic_equals_the_per_condition_passes_on_the_tiny_ddpm(int n, string fusedMethod, string splitMethod, ZMagicUpdateRule rule)
    {
        using var scope = torch.NewDisposeScope();
        using var den = TinyDdpm.Create();
        var conds = ToyCondition.Many(n, 1, 8);
        var (x, noise) = Inputs(2, 31 + n);
        IGuidanceStrategy WithRule(string m) => new ZMagicStrategy(((ZMagicStrategy)GuidanceMethods.Strategy(m)).Options with { UpdateRule = rule });
        var fused = Step(den, WithRule(fusedMethod), SumCombiner.Instance, conds, x, noise, out var ft);
        var split = Step(den, WithRule(splitMethod), SumCombiner.Instance, conds, x, noise, out var st);
        TensorAssert.RelL2(fused, split, 1e-5, $"{fusedMethod} vs {splitMethod}, n={n}, {rule}");
        Assert.Equal((2, 2, 1), (ft.Passes.DenoiserForwards, ft.Passes.DenoiserBackwards, ft.Passes.Vjps));
        Assert.Equal((2, n, n - 1), (st.Passes.DenoiserForwards, st.Passes.DenoiserBackwards, st.Passes.Vjps));
    }

    [Theory]
    [InlineData("vanilla-batched", "vanilla-percondition", 3, 1)]
    [InlineData("vanilla-batched", "vanilla-percondition", 3, 2)]
    [InlineData("zmagic-batched", "zmagic-percondition", 3, 1)]
    [InlineData("zmagic-batched", "zmagic-percondition", 3, 2)]
    [InlineData("zmagic-batched", "zmagic-percondition", 5, 2)]
    public void Batched_gradients_equal_the_unbatched_ones_on_the_tiny_ddpm(string batchedMethod, string plainMethod, int n, int batch)
    {
        using var scope = torch.NewDisposeScope();
        using var den = TinyDdpm.Create();
        var conds = ToyCondition.Many(n, 1, 8);
        var (x, noise) = Inputs(batch, 57 + n + batch);
        foreach (var combiner in new[] { "cagrad", "sum" })
        {
            var b = Step(den, GuidanceMethods.Strategy(batchedMethod), GuidanceMethods.Combiner(combiner), conds, x, noise, out var bt);
            var p = Step(den, GuidanceMethods.Strategy(plainMethod), GuidanceMethods.Combiner(combiner), conds, x, noise, out var pt);
            TensorAssert.RelL2(b, p, 1e-5, $"{batchedMethod} vs {plainMethod}, {combiner}, n={n}, B={batch}");
            Assert.True(bt.Passes.DenoiserForwardItems > pt.Passes.DenoiserForwardItems, "the batched run replicates the sample");
            Assert.True(bt.Passes.DenoiserBackwards < pt.Passes.DenoiserBackwards, "fewer backward calls when batched");
            for (int k = 0; k < n; k++)
                Assert.True(Math.Abs(bt.Conditions[k].GradientNorm - pt.Conditions[k].GradientNorm) <= 1e-5 * pt.Conditions[k].GradientNorm,
                    $"{conds[k].Name}: gradient norm {bt.Conditions[k].GradientNorm:R} vs {pt.Conditions[k].GradientNorm:R}");
        }
    }
}
