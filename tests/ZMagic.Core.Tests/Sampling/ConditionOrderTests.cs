using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Core.Tests.Analytic;
using ZMagic.Core.Tests.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Sampling;

/// <summary>
/// <see cref="ConditionOrder.SampleWithBestOrder"/> (<c>--order auto</c>): the candidates, the trial scores recomputed
/// independently, the per-item choice, each item's image equal to a plain run in its chosen order, and batch
/// independence of both the choice and the image.
/// </summary>
public class ConditionOrderTests
{
    private static double[] Values(Tensor t) => t.to(ScalarType.Float64).data<double>().ToArray();

    /// <summary>
    /// Three conditions whose weights depend on the item itself: the first counts more for samples with a positive mean,
    /// the second for a negative one (a property of the item, not of its batch position), so that items disagree on the
    /// best anchor.
    /// </summary>
    private static IGuidanceCondition[] Conditions()
    {
        using var g = new Generator(777);
        var conds = new IGuidanceCondition[3];
        for (int i = 0; i < 3; i++)
        {
            var mask = torch.rand(new long[] { 2, 4, 4 }, ScalarType.Float64, generator: g) + 0.3;
            var target = torch.randn(new long[] { 2, 4, 4 }, ScalarType.Float64, generator: g) * 1.5;
            double tilt = i == 0 ? 2 : i == 1 ? -2 : 0;
            conds[i] = new FuncCondition($"q{i}",
                x0 => ((mask * x0 - target).square() * 0.5).flatten(1).sum(1) * ((x0.flatten(1).mean(new long[] { 1 }) * tilt).sigmoid() * 2 + 0.1),
                new SqrtAlphaBarStepSize(0.6 + 0.5 * i));
        }
        return conds;
    }

    private static SamplerOptions Options(IGradientCombiner? combiner = null, ZMagicOptions? z = null) => new()
    {
        Steps = 10, SamplerStep = new FreeDoMEtaStep(0.5), Seed = 5, DType = ScalarType.Float64, BatchSize = 6,
        Strategy = new ZMagicStrategy(z), Combiner = combiner ?? SumCombiner.Instance,
    };

    /// <summary>x_T for 6 items, item i scaled by 0.3 + 1.5 i with alternating signs.</summary>
    private static Tensor SpreadNoise()
    {
        using var g = new Generator(2024);
        var z = torch.randn(new long[] { 6, 2, 4, 4 }, ScalarType.Float64, generator: g);
        var scale = torch.tensor(Enumerable.Range(0, 6).Select(i => (i % 2 == 0 ? 1.0 : -1.0) * (0.3 + 1.5 * i)).ToArray()).view(6, 1, 1, 1);
        return z * scale;
    }

    [Fact]
    public void CandidatesPutEachConditionFirstOrPermuteAll()
    {
        Assert.Equal(new[] { new[] { 0, 1, 2 }, new[] { 1, 0, 2 }, new[] { 2, 0, 1 } },
            ConditionOrder.Candidates(3, allPermutations: false).Select(c => c.ToArray()));
        var all = ConditionOrder.Candidates(3, allPermutations: true).Select(c => string.Join("", c)).ToArray();
        Assert.Equal(new[] { "012", "021", "102", "120", "201", "210" }, all);
        Assert.Equal(720, ConditionOrder.Candidates(6, true).Count);
        Assert.Single(ConditionOrder.Candidates(1, false));
        var e = Assert.Throws<ArgumentException>(() => ConditionOrder.Candidates(7, true));
        Assert.Contains("5040", e.Message);
        Assert.Throws<ArgumentException>(() => ConditionOrder.Candidates(0, false));
    }

    [Theory]
    [InlineData("sum", "star")]
    [InlineData("cagrad", "star")]
    [InlineData("sum", "chain")]
    public void EachItemGetsTheOrderWithTheLowestTrialEnergyAndIsSampledInIt(string combinerName, string chaining)
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions();
        IGradientCombiner combiner = combinerName == "cagrad" ? new CAGradCombiner(0.5) : SumCombiner.Instance;
        var z = new ZMagicOptions { Chaining = chaining == "chain" ? ZMagicChaining.Chain : ZMagicChaining.Star };
        // Starting points of very different sizes, so that the items do not all prefer the same order.
        using var init = SpreadNoise();
        var o = Options(combiner, z) with { InitialNoise = init };
        var order = new ConditionOrderOptions { TrialSteps = 3 };

        using var auto = sampler.SampleWithBestOrder(conds, o, order);
        Assert.Equal(chaining == "chain" ? 6 : 3, auto.Candidates.Count);
        Assert.Equal(new[] { 0, 1, 2 }, auto.Candidates[0]);

        // The trial scores, recomputed here: the first 3 timesteps of the 10-step run, then the summed energies.
        var ts = TimestepSpacing.Uniform(den.Schedule.TrainSteps, 10).Select(p => p.T).Take(3).ToArray();
        for (int c = 0; c < auto.Candidates.Count; c++)
        {
            var ordered = auto.Candidates[c].Select(i => conds[i]).ToArray();
            using var trial = sampler.Sample(ordered, o with { Timesteps = ts });
            var sum = conds.Select(k => Values(k.Energy(trial.Images))).Aggregate((a, b) => a.Zip(b, (x, y) => x + y).ToArray());
            Assert.Equal(sum, auto.TrialEnergies[c]);
        }
        // The orders matter on this bed, and the items do not all agree (so the grouping into runs is exercised).
        Assert.True(auto.TrialEnergies.Select(e => e[0]).Distinct().Count() > 1, "every order gave the same trial energy");
        Assert.True(auto.Choice.Distinct().Count() > 1, $"every item chose order {auto.Choice[0]}");
        // One run per chosen order, holding exactly the items that chose it.
        Assert.Equal(auto.Choice.Distinct().Count(), auto.Runs.Count);
        Assert.Equal(Enumerable.Range(0, 6), auto.Runs.SelectMany(r => r.Items).Order());

        for (int i = 0; i < 6; i++)
        {
            int best = Enumerable.Range(0, auto.Candidates.Count).OrderBy(c => auto.TrialEnergies[c][i]).ThenBy(c => c).First();
            Assert.Equal(best, auto.Choice[i]);
            var ordered = auto.Candidates[best].Select(k => conds[k]).ToArray();
            using var alone = sampler.Sample(ordered, o with { BatchSize = 1, FirstItem = i, InitialNoise = init[i..(i + 1)] });
            Assert.Equal(Values(alone.Images[0]), Values(auto.Images[i]));
            Assert.Equal(auto.Candidates[best], auto.Runs.Single(r => r.Items.Contains(i)).Order);
        }
    }

    [Fact]
    public void ChoiceAndImageOfAnItemDoNotDependOnTheBatch()
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions();
        var o = Options(new CAGradCombiner(0.5));
        using var six = sampler.SampleWithBestOrder(conds, o);
        for (int i = 0; i < 6; i += 2)
        {
            using var alone = sampler.SampleWithBestOrder(conds, o with { BatchSize = 1, FirstItem = i });
            Assert.Equal(six.Choice[i], alone.Choice[0]);
            Assert.Equal(Values(alone.Images[0]), Values(six.Images[i]));
        }
    }

    [Fact]
    public void InitialNoiseIsSlicedPerRun()
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions();
        var o = Options();
        using var g = new Generator(99);
        using var init = torch.randn(new long[] { 6, 2, 4, 4 }, ScalarType.Float64, generator: g);
        using var auto = sampler.SampleWithBestOrder(conds, o with { InitialNoise = init });
        for (int i = 0; i < 6; i++)
        {
            var ordered = auto.Candidates[auto.Choice[i]].Select(k => conds[k]).ToArray();
            using var alone = sampler.Sample(ordered, o with { BatchSize = 1, FirstItem = i, InitialNoise = init[i..(i + 1)] });
            Assert.Equal(Values(alone.Images[0]), Values(auto.Images[i]));
        }
    }

    [Fact]
    public void ExplicitItemIndicesSampleAnySubsetWithItsOwnNoise()
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions();
        var o = Options() with { BatchSize = 6, FirstItem = 10 };
        using var six = sampler.Sample(conds, o);
        using var subset = sampler.Sample(conds, o with { BatchSize = 2, Items = new[] { 14, 11 } });
        Assert.Equal(Values(six.Images[4]), Values(subset.Images[0]));
        Assert.Equal(Values(six.Images[1]), Values(subset.Images[1]));
        Assert.Contains("BatchSize is 3", Assert.Throws<ArgumentException>(() => sampler.Sample(conds, o with { BatchSize = 3, Items = new[] { 1, 2 } })).Message);
        Assert.Contains("negative", Assert.Throws<ArgumentException>(() => sampler.Sample(conds, o with { BatchSize = 2, Items = new[] { 1, -2 } })).Message);
        Assert.Contains("item 1 twice", Assert.Throws<ArgumentException>(() => sampler.Sample(conds, o with { BatchSize = 2, Items = new[] { 1, 1 } })).Message);
    }

    [Fact]
    public void RefusesWhatHasNoOrderToChoose()
    {
        var den = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4);
        var sampler = new ConditionalSampler(den);
        var conds = Conditions();
        var vanilla = Assert.Throws<ArgumentException>(() => sampler.SampleWithBestOrder(conds, Options() with { Strategy = new VanillaStrategy() }));
        Assert.Contains("Z-Magic", vanilla.Message);
        var none = Assert.Throws<ArgumentException>(() => sampler.SampleWithBestOrder(Array.Empty<IGuidanceCondition>(), Options()));
        Assert.Contains("at least one condition", none.Message);
        var steps = Assert.Throws<ArgumentException>(() => sampler.SampleWithBestOrder(conds, Options(), new ConditionOrderOptions { TrialSteps = 0 }));
        Assert.Contains("TrialSteps", steps.Message);
    }
}
