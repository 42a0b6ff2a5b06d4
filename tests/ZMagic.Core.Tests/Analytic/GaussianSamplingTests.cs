using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Analytic;

/// <summary>
/// Unguided sampling from the exact Gaussian denoiser reproduces the Gaussian data statistics.
/// </summary>
/// <remarks>
/// <para>Statistical tolerance. N items of M = 2x8x8 = 128 independent elements are sampled. For element j the exact
/// output law is N(m_j, v_j) (<see cref="GaussianMoments"/>), so z_ij = (x_ij - m_j) / sqrt(v_j) are N*M independent
/// standard normals when the sampler is right. Checks, each at K standard errors:</para>
/// <list type="bullet">
/// <item>pooled mean of z within K / sqrt(N M); pooled mean of z^2 within K sqrt(2 / (N M)) of 1;</item>
/// <item>per element: sample mean within K sqrt(v_j / N) of m_j; sample variance within K sqrt(2 / (N - 1)) v_j of v_j.</item>
/// </list>
/// <para>K = 6 for the pooled checks (false-failure probability about 2e-9 each) and K = 6 for the per-element ones
/// (chi-square tail: below 1e-6 per element, below 2e-4 over all 128). The noise is seeded, so each test is
/// deterministic; the probabilities say how unlikely a correct sampler is to fail for a given seed. A 1% error in
/// the variance moves the pooled z^2 mean by 0.01, i.e. ~1.6 standard errors at N M = 32768, so the variance is
/// verified to about 4%, the mean to about 0.03 standard deviations.</para>
/// <para>Data reproduction. The exact prediction (m_j, v_j) itself differs from the data (mu_j, s_j^2) by the
/// sampler's discretisation error and the x_T ~ N(0, 1) prior mismatch; those bounds are asserted separately
/// (deterministic, no sampling), with the numbers stated in each test.</para>
/// </remarks>
public class GaussianSamplingTests
{
    private const int Channels = 2, Size = 8, Items = 256;
    private const double K = 6.0;

    public static TheoryData<string, int, double, double> Samplers => new()
    {
        // name, steps, bound on |m - mu|, bound on |v / s^2 - 1| (predicted vs data; values from GaussianMoments, rounded up)
        // FreeDoM's eta step is not a consistent sampler: it loses about 8% of the data variance even with 1000 steps.
        { "freedom-eta(0.5)", 100, 1e-3, 0.17 },
        // DDIM(0) keeps the prior mismatch of x_T's mean (sqrt(abar_999) mu ~ 0.006 mu) and a discretisation deficit.
        { "ddim(0)", 100, 1e-2, 0.09 },
        { "ddim(1)", 100, 1e-3, 0.19 },
        { "ddpm-posterior", 100, 1e-3, 0.19 },
    };

    internal static ISamplerStep Step(string name) => name switch
    {
        "freedom-eta(0.5)" => new FreeDoMEtaStep(0.5),
        "ddim(0)" => new DdimStep(0.0),
        "ddim(1)" => new DdimStep(1.0),
        "ddpm-posterior" => new DdpmPosteriorStep(),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Samplers))]
    public void UnguidedSamplingReproducesGaussianStatistics(string sampler, int steps, double meanBound, double varBound)
    {
        var schedule = NoiseSchedule.Linear();
        var denoiser = GaussianDataDenoiser.Spread(schedule, Channels, Size);
        var step = Step(sampler);
        Assert.Equal(sampler, step.Name);
        var options = new SamplerOptions { Steps = steps, SamplerStep = step, BatchSize = Items, Seed = 20260, DType = ScalarType.Float64 };

        var predicted = PredictAll(denoiser, step, TimestepSpacing.Uniform(schedule.TrainSteps, steps), null);
        AssertPredictionNearData(denoiser, predicted, meanBound, varBound);
        AssertSamplesMatch(denoiser, options, predicted);
    }

    [Fact]
    public void TimeTravelRunsTheRepeatsAndKeepsTheStatistics()
    {
        var schedule = NoiseSchedule.Linear();
        var denoiser = GaussianDataDenoiser.Spread(schedule, Channels, Size);
        var step = new DdpmPosteriorStep();
        var tt = new TimeTravel(Repeats: 3, From: 500, To: 800);
        var options = new SamplerOptions { Steps = 50, SamplerStep = step, BatchSize = Items, Seed = 77, DType = ScalarType.Float64, TimeTravel = tt };
        var pairs = TimestepSpacing.Uniform(schedule.TrainSteps, 50);
        // Timesteps 500, 520, ..., 800 (16 of them) run 3 passes: 50 + 16 * 2 steps, 16 * 3 forwards among them.
        int inWindow = pairs.Count(p => p.T >= 500 && p.T <= 800);
        Assert.Equal(16, inWindow);

        var predicted = PredictAll(denoiser, step, pairs, tt);
        // Time travel re-noises with the forward kernel, so it keeps the marginals: the prediction stays as close to
        // the data as without it (same bound as 50 plain DDPM steps, which lose at most 29% of s^2 = 0.09's variance).
        AssertPredictionNearData(denoiser, predicted, 1e-3, 0.30);
        var trace = AssertSamplesMatch(denoiser, options, predicted);

        Assert.Equal(50 + 2 * inWindow, trace.Steps.Count);
        Assert.Equal(50 + 2 * inWindow, denoiser.ForwardCalls);
        foreach (var group in trace.Steps.GroupBy(s => s.T))
        {
            int expected = group.Key >= 500 && group.Key <= 800 ? 3 : 1;
            Assert.Equal(Enumerable.Range(0, expected), group.Select(s => s.Repeat));
        }
        Assert.Equal(Enumerable.Range(0, trace.Steps.Count), trace.Steps.Select(s => s.Index));
    }

    [Fact]
    public void ConsistentSamplersConvergeToTheDataWithAllTimesteps()
    {
        // No sampling: the exact predicted output law with all 1000 timesteps. DDIM and the DDPM posterior are
        // consistent (deficit -> 0 as steps grow); FreeDoM's eta step is not (kept as the reference has it).
        var schedule = NoiseSchedule.Linear();
        var denoiser = GaussianDataDenoiser.Spread(schedule, Channels, Size);
        var pairs = TimestepSpacing.Uniform(1000, 1000);
        AssertPredictionNearData(denoiser, PredictAll(denoiser, new DdimStep(0), pairs, null), 1e-2, 0.011);
        AssertPredictionNearData(denoiser, PredictAll(denoiser, new DdimStep(1), pairs, null), 1e-4, 0.026);
        AssertPredictionNearData(denoiser, PredictAll(denoiser, new DdpmPosteriorStep(), pairs, null), 1e-4, 0.026);
        var freedom = PredictAll(denoiser, new FreeDoMEtaStep(0.5), pairs, null);
        double worst = Enumerable.Range(0, freedom.Length).Max(j => Math.Abs(freedom[j].Var / (denoiser.Std[j] * denoiser.Std[j]) - 1));
        Assert.InRange(worst, 0.05, 0.09);
    }

    internal static (double Mean, double Var)[] PredictAll(GaussianDataDenoiser d, ISamplerStep step, IReadOnlyList<TimestepPair> pairs, TimeTravel? tt)
        => Enumerable.Range(0, d.Mean.Count)
            .Select(j => GaussianMoments.Predict(step, d.Schedule, pairs, tt, d.Mean[j], d.Std[j] * d.Std[j]))
            .ToArray();

    private static void AssertPredictionNearData(GaussianDataDenoiser d, (double Mean, double Var)[] predicted, double meanBound, double varBound)
    {
        for (int j = 0; j < predicted.Length; j++)
        {
            double s2 = d.Std[j] * d.Std[j];
            Assert.True(Math.Abs(predicted[j].Mean - d.Mean[j]) <= meanBound,
                $"element {j}: predicted mean {predicted[j].Mean} vs data {d.Mean[j]} (bound {meanBound})");
            Assert.True(Math.Abs(predicted[j].Var / s2 - 1) <= varBound,
                $"element {j}: predicted variance {predicted[j].Var} vs data {s2} (relative bound {varBound})");
        }
    }

    private static SamplingTrace AssertSamplesMatch(GaussianDataDenoiser d, SamplerOptions options, (double Mean, double Var)[] predicted)
    {
        var sampler = new ConditionalSampler(d);
        using var result = sampler.Sample(Array.Empty<IGuidanceCondition>(), options);
        Assert.Equal(ScalarType.Float64, result.Images.dtype);
        var x = result.Images.reshape(options.BatchSize, -1).data<double>().ToArray();
        int n = options.BatchSize, m = predicted.Length;

        double sumZ = 0, sumZ2 = 0;
        for (int j = 0; j < m; j++)
        {
            double mean = 0, m2 = 0;
            for (int i = 0; i < n; i++) mean += x[i * m + j];
            mean /= n;
            for (int i = 0; i < n; i++)
            {
                double dev = x[i * m + j] - mean;
                m2 += dev * dev;
                double z = (x[i * m + j] - predicted[j].Mean) / Math.Sqrt(predicted[j].Var);
                sumZ += z;
                sumZ2 += z * z;
            }
            double sampleVar = m2 / (n - 1);
            double se = Math.Sqrt(predicted[j].Var / n);
            Assert.True(Math.Abs(mean - predicted[j].Mean) <= K * se,
                $"element {j}: sample mean {mean:F5} vs predicted {predicted[j].Mean:F5} (> {K} SE = {K * se:F5})");
            double relVarTol = K * Math.Sqrt(2.0 / (n - 1));
            Assert.True(Math.Abs(sampleVar / predicted[j].Var - 1) <= relVarTol,
                $"element {j}: sample variance {sampleVar:F5} vs predicted {predicted[j].Var:F5} (relative tolerance {relVarTol:F3})");
        }
        long total = (long)n * m;
        double zMean = sumZ / total, z2Mean = sumZ2 / total;
        Assert.True(Math.Abs(zMean) <= K / Math.Sqrt(total), $"pooled standardised mean {zMean:E3} exceeds {K / Math.Sqrt(total):E3}");
        Assert.True(Math.Abs(z2Mean - 1) <= K * Math.Sqrt(2.0 / total), $"pooled standardised second moment {z2Mean:F5} differs from 1 by more than {K * Math.Sqrt(2.0 / total):E3}");
        return result.Trace;
    }
}
