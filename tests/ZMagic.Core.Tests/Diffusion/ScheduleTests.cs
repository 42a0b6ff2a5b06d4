using ZMagic.Core.Diffusion;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Diffusion;

/// <summary>Schedule values against hand-computed ones and the reference data.</summary>
public class ScheduleTests
{
    [Fact]
    public void LinearMatchesNumpyLinspaceAndItsCumulativeProduct()
    {
        var s = NoiseSchedule.Linear();
        Assert.Equal(1000, s.TrainSteps);
        Assert.Equal(1e-4, s.Betas[0]);
        Assert.Equal(0.02, s.Betas[999]);
        double step = (0.02 - 1e-4) / 999;
        Assert.Equal(1e-4 + 500 * step, s.Betas[500]);
        Assert.Equal(1 - 1e-4, s.AlphaBar(0));
        Assert.Equal((1 - 1e-4) * (1 - (1e-4 + step)), s.AlphaBar(1));
        Assert.Equal(1.0, s.AlphaBar(-1));
        // abar_999 of the DDPM linear schedule is about 4.04e-5 (Ho et al.'s schedule leaves ~0.6% of the signal).
        Assert.InRange(s.AlphaBar(999), 4.03e-5, 4.05e-5);
        for (int t = 1; t < 1000; t++) Assert.True(s.AlphaBar(t) < s.AlphaBar(t - 1));
    }

    [Fact]
    public void ScaledLinearSquaresALinspaceOfRoots()
    {
        var s = NoiseSchedule.ScaledLinear();
        double r0 = Math.Sqrt(0.00085), r1 = Math.Sqrt(0.012);
        Assert.Equal(r0 * r0, s.Betas[0]);
        Assert.Equal(r1 * r1, s.Betas[999]);
        double mid = r0 + 400 * ((r1 - r0) / 999);
        Assert.Equal(mid * mid, s.Betas[400]);
        Assert.Equal(0.00085, s.Betas[0], 15);
        Assert.Equal(0.012, s.Betas[999], 15);
        Assert.Equal((1 - s.Betas[0]) * (1 - s.Betas[1]), s.AlphaBar(1));
    }

    [Fact]
    public void CosineFollowsTheSquaredCosineAlphaBar()
    {
        var s = NoiseSchedule.Cosine(1000);
        static double F(double u) => Math.Pow(Math.Cos((u + 0.008) / 1.008 * Math.PI / 2), 2);
        Assert.Equal(1 - F(1.0 / 1000) / F(0), s.Betas[0], 15);
        // The betas telescope: abar_t = f((t+1)/T) / f(0) while no beta is clipped (all but the very end).
        foreach (int t in new[] { 0, 1, 10, 250, 500, 900, 980 })
            Assert.True(Math.Abs(s.AlphaBar(t) / (F((t + 1) / 1000.0) / F(0)) - 1) < 1e-11, $"t={t}: {s.AlphaBar(t)}");
        Assert.Equal(0.999, s.Betas[999]); // clipped at max_beta
        Assert.All(s.Betas, b => Assert.InRange(b, 0, 0.999));
    }

    [Fact]
    public void ExplicitBetasGiveTheirCumulativeProduct()
    {
        var s = new NoiseSchedule(new[] { 0.1, 0.2, 0.5 });
        Assert.Equal(3, s.TrainSteps);
        Assert.Equal(0.9, s.AlphaBar(0), 15);
        Assert.Equal(0.72, s.AlphaBar(1), 15);
        Assert.Equal(0.36, s.AlphaBar(2), 15);
        Assert.Equal(1.0, s.AlphaBar(-1));
        Assert.Equal(new[] { 0.1, 0.2, 0.5 }, s.Betas);
    }

    [Fact]
    public void UniformSpacingIsFreeDoMsSeq()
    {
        var p = TimestepSpacing.Uniform(1000, 100);
        Assert.Equal(100, p.Count);
        Assert.Equal(new TimestepPair(990, 980), p[0]);
        Assert.Equal(new TimestepPair(10, 0), p[98]);
        Assert.Equal(new TimestepPair(0, -1), p[99]);
        for (int i = 0; i < 99; i++) Assert.Equal(p[i].T - 10, p[i + 1].T);
        Assert.All(p, x => Assert.Equal(x.T == 0 ? -1 : x.T - 10, x.Next));
    }

    public static TheoryData<int, int, int[]> SpacingCases => new()
    {
        // T, steps, expected seq walked in reverse (python: list(reversed(range(0, T, T // steps))))
        { 1000, 1000, Enumerable.Range(0, 1000).Reverse().ToArray() },
        { 1000, 1, new[] { 0 } },
        { 1000, 50, Enumerable.Range(0, 50).Select(i => 980 - 20 * i).ToArray() },
        { 1000, 300, Enumerable.Range(0, 334).Select(i => 999 - 3 * i).ToArray() }, // skip 3: 334 steps, not 300
        { 1000, 7, Enumerable.Range(0, 8).Select(i => 994 - 142 * i).ToArray() },   // skip 142: 0..994
        { 10, 3, new[] { 9, 6, 3, 0 } },
    };

    [Theory]
    [MemberData(nameof(SpacingCases))]
    public void UniformSpacingForOtherCounts(int trainSteps, int steps, int[] expected)
    {
        var p = TimestepSpacing.Uniform(trainSteps, steps);
        Assert.Equal(expected, p.Select(x => x.T));
        Assert.Equal(expected.Skip(1).Append(-1), p.Select(x => x.Next));
    }

    [Fact]
    public void ExplicitSpacingEndsAtTheCleanSample()
    {
        var p = TimestepSpacing.Explicit(new[] { 999, 500, 10 }, 1000);
        Assert.Equal(new[] { new TimestepPair(999, 500), new TimestepPair(500, 10), new TimestepPair(10, -1) }, p);
    }

    public static TheoryData<string> StepCases => Golden.Cases("zmagic_steps",
        dir => SamplerStepTests.IsSingleStepCase(dir) && Golden.CaseJson(dir).GetProperty("dtype").GetString() == "float64");

    [Theory]
    [Trait("Category", "Golden")]
    [MemberData(nameof(StepCases))]
    public void LinearScheduleAndAlphaBarsMatchFreeDoM(string caseDir)
    {
        var json = Golden.CaseJson(caseDir);
        int i = json.GetProperty("sampler").GetProperty("timestep_i").GetInt32();
        int j = json.GetProperty("sampler").GetProperty("timestep_next_j").GetInt32();
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        try
        {
            // The float64 numpy linspace is reproduced bit for bit, and so is compute_alpha's cumprod.
            var betas = inputs["betas"].data<double>().ToArray();
            Assert.Equal(betas, NoiseSchedule.Linear().Betas);
            var schedule = new NoiseSchedule(betas);
            Assert.Equal(SamplerStepTests.PerItemScalar(outputs["at"]), schedule.AlphaBar(i));
            Assert.Equal(SamplerStepTests.PerItemScalar(outputs["at_next"]), schedule.AlphaBar(j));
        }
        finally
        {
            foreach (var t in inputs.Values.Concat(outputs.Values)) t.Dispose();
        }
    }

    [Fact]
    [Trait("Category", "Golden")]
    public void ScaledLinearMatchesDiffusersFormulaInFloat64()
    {
        var caseDir = Golden.CaseDirectories("sd_scheduler").First();
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        try
        {
            var s = NoiseSchedule.ScaledLinear();
            var betas64 = outputs["f64/betas"].data<double>().ToArray();
            var abar64 = outputs["f64/alphas_cumprod"].data<double>().ToArray();
            for (int t = 0; t < 1000; t++)
            {
                Assert.True(Math.Abs(s.Betas[t] - betas64[t]) <= 1e-15 * betas64[t], $"beta[{t}] {s.Betas[t]:R} vs {betas64[t]:R}");
                Assert.True(Math.Abs(s.AlphaBar(t) - abar64[t]) <= 1e-13 * abar64[t], $"abar[{t}] {s.AlphaBar(t):R} vs {abar64[t]:R}");
            }
            // diffusers itself runs this in float32: the values agree to float32 precision (README: compare with abs 1e-6).
            var abar32 = outputs["alphas_cumprod"].data<float>().ToArray();
            for (int t = 0; t < 1000; t++) Assert.True(Math.Abs(s.AlphaBar(t) - abar32[t]) <= 1e-6, $"float32 abar[{t}]");
        }
        finally
        {
            foreach (var t in outputs.Values) t.Dispose();
        }
    }
}
