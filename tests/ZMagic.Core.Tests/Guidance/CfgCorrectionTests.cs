using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>
/// A classifier-free denoiser's CFG correction reaches the step-size rules as an argument: the correction of the call
/// at x_t, whatever the strategy called since (Z-Magic's forward at the proposal, a replicated batched forward).
/// </summary>
public class CfgCorrectionTests
{
    private const int T = 500, Next = 490;

    /// <summary><see cref="TanhConvDenoiser"/> plus a correction 0.1 x that differs at every point it is called at.</summary>
    private sealed class CfgToy(int seed) : IClassifierFreeDenoiser
    {
        private readonly TanhConvDenoiser _inner = new(2, 6, seed);
        public NoiseSchedule Schedule => _inner.Schedule;
        public PredictionType Prediction => PredictionType.Epsilon;
        public int Channels => 2;
        public int SampleSize => 6;
        public bool LearnedSigma => false;
        public Tensor Forward(Tensor x, Tensor t) => Forward(x, t, out _);

        public Tensor Forward(Tensor x, Tensor t, out Tensor cfgCorrection)
        {
            cfgCorrection = (x * 0.1).detach();
            return _inner.Forward(x, t) + cfgCorrection;
        }
    }

    /// <summary>A gradient-based rule that keeps every correction it is given.</summary>
    private sealed class Spy : IStepSizeRule
    {
        public List<Tensor?> Seen { get; } = new();
        public double StepSize(in StepSizeContext context) => 0.1;

        public double[] StepSizes(in StepSizeContext context)
        {
            Seen.Add(context.CfgCorrection?.clone());
            return StepSizeRules.Uniform(0.1, context);
        }
    }

    public static TheoryData<string> Strategies() => new() { "vanilla", "vanilla-batched", "zmagic", "zmagic-anchored", "zmagic-batched" };

    [Theory]
    [MemberData(nameof(Strategies))]
    public void Every_rule_gets_the_correction_of_the_call_at_x_t(string which)
    {
        using var _ = NewDisposeScope();
        using var g = new Generator(11);
        var x = torch.randn(new long[] { 2, 2, 6, 6 }, ScalarType.Float64, generator: g);
        var noise = torch.randn(new long[] { 2, 2, 6, 6 }, ScalarType.Float64, generator: g);
        var spy = new Spy();
        var conds = Enumerable.Range(0, 3).Select(i => (IGuidanceCondition)new QuadraticCondition($"c{i}",
            torch.ones(2, 6, 6, ScalarType.Float64), torch.randn(new long[] { 2, 2, 6, 6 }, ScalarType.Float64, generator: g), spy)).ToList();
        IGuidanceStrategy strategy = which switch
        {
            "vanilla" => new VanillaStrategy(),
            "vanilla-batched" => new VanillaStrategy(new VanillaOptions { BatchConditionGradients = true }),
            "zmagic" => new ZMagicStrategy(),
            "zmagic-anchored" => new ZMagicStrategy(new ZMagicOptions { AnchorOnBaseStep = true }),
            _ => new ZMagicStrategy(new ZMagicOptions { BatchConditionGradients = true }),
        };
        var (step, _) = StepHarness.Make(new CfgToy(3), x, T, Next, new FreeDoMEtaStep(0.5), noise, conds);
        strategy.Step(step);

        Assert.Equal(3, spy.Seen.Count);
        Assert.True(step.Trace.Passes.DenoiserForwards >= 1);
        foreach (var c in spy.Seen) TensorAssert.Close(c!, x * 0.1, 0, 0, $"{which}: the correction at x_t");
    }

    [Fact]
    public void A_plain_denoiser_passes_no_correction()
    {
        using var _ = NewDisposeScope();
        var spy = new Spy();
        var x = torch.randn(new long[] { 1, 2, 6, 6 }, ScalarType.Float64);
        var cond = new QuadraticCondition("c", torch.ones(2, 6, 6, ScalarType.Float64), torch.zeros(1, 2, 6, 6, ScalarType.Float64), spy);
        var (step, _) = StepHarness.Make(new TanhConvDenoiser(2, 6, 5), x, T, Next, new FreeDoMEtaStep(0.5), torch.zeros_like(x), new[] { cond });
        new ZMagicStrategy().Step(step);
        Assert.Equal(new Tensor?[] { null }, spy.Seen);
    }
}
