using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Core.Tests.Analytic;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Sampling;

/// <summary>Reproducibility, resource and control-flow behaviour of <see cref="ConditionalSampler"/> on the Gaussian test bed.</summary>
public class SamplerBehaviourTests
{
    private static readonly IGuidanceCondition[] None = Array.Empty<IGuidanceCondition>();

    private static GaussianDataDenoiser Bed(int channels = 1, int size = 4) => GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), channels, size);

    /// <summary>Progress reported synchronously on the sampling thread (System.Progress would post to the thread pool).</summary>
    private sealed class SyncProgress(Action<SamplingProgress> onReport) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value) => onReport(value);
    }

    private static double[] Values(Tensor t) => t.to(ScalarType.Float64).data<double>().ToArray();

    [Fact]
    public void DdimEtaZeroIsDeterministicGivenTheInitialNoise()
    {
        var d = Bed();
        using var xT = torch.randn(new long[] { 3, 1, 4, 4 }, ScalarType.Float64, generator: new Generator(5));
        var sampler = new ConditionalSampler(d);
        var o = new SamplerOptions { Steps = 20, SamplerStep = new DdimStep(0.0), BatchSize = 3, InitialNoise = xT, DType = ScalarType.Float64 };
        using var a = sampler.Sample(None, o with { Seed = 1 });
        using var b = sampler.Sample(None, o with { Seed = 987654321 });
        Assert.Equal(Values(a.Images), Values(b.Images));
        // The same seeds with a noisy step do differ, so the comparison above can fail.
        using var c = sampler.Sample(None, o with { Seed = 1, SamplerStep = new DdimStep(1.0) });
        using var e = sampler.Sample(None, o with { Seed = 2, SamplerStep = new DdimStep(1.0) });
        Assert.NotEqual(Values(c.Images), Values(e.Images));
        // InitialNoise is copied, not consumed.
        Assert.False(xT.IsInvalid);
    }

    [Fact]
    public void DdimWithEtaOneIsTheDdpmPosteriorStepAndFreeDoMsEtaStepIsNeither()
    {
        // Over any skipped interval, DDIM's sigma at eta 1 is the posterior's standard deviation and its x0/eps mix is
        // the posterior mean once eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar): the same transition, so `train digits
        // --eval-sampler ddim --eval-eta 1` and `--eval-sampler ddpm-posterior` must agree.
        var d = Bed();
        var sampler = new ConditionalSampler(d);
        var o = new SamplerOptions { Steps = 25, BatchSize = 3, Seed = 11, DType = ScalarType.Float64 };
        using var ddim = sampler.Sample(None, o with { SamplerStep = new DdimStep(1.0) });
        using var posterior = sampler.Sample(None, o with { SamplerStep = new DdpmPosteriorStep() });
        var (a, b) = (Values(ddim.Images), Values(posterior.Images));
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) < 1e-9, $"element {i}: DDIM(1) {a[i]} vs posterior {b[i]}");
        // FreeDoM's eta step at eta 1 re-noises x0 with fresh noise only (x' = sqrt(abar') x0 + sqrt(1 - abar') z):
        // another transition, so the comparison above can fail.
        using var freedom = sampler.Sample(None, o with { SamplerStep = new FreeDoMEtaStep(1.0) });
        Assert.True(Values(freedom.Images).Zip(b).Max(p => Math.Abs(p.First - p.Second)) > 1e-3);
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float64)]
    public void ItemIsBitIdenticalAloneOrInABatchOfEight(ScalarType dtype)
    {
        var d = Bed(2, 4);
        var sampler = new ConditionalSampler(d);
        var o = new SamplerOptions { Steps = 25, SamplerStep = new FreeDoMEtaStep(0.5), Seed = 42, DType = dtype, TimeTravel = new TimeTravel(2, 400, 600) };
        using var batch = sampler.Sample(None, o with { BatchSize = 8 });
        Assert.Equal(dtype, batch.Images.dtype);
        for (int i = 0; i < 8; i++)
        {
            using var alone = sampler.Sample(None, o with { BatchSize = 1, FirstItem = i });
            Assert.Equal(Values(batch.Images[i]), Values(alone.Images[0]));
        }
        // A batch of 4 starting at item 4 equals the second half of the batch of 8.
        using var half = sampler.Sample(None, o with { BatchSize = 4, FirstItem = 4 });
        Assert.Equal(Values(batch.Images.narrow(0, 4, 4)), Values(half.Images));
        // Different items do get different noise.
        Assert.NotEqual(Values(batch.Images[0]), Values(batch.Images[1]));
    }

    [Fact]
    public void NoiseStreamsAreConsumedInTheDocumentedOrder()
    {
        // x_T, then per step and pass: the step's draw (when UsesNoise), then the time-travel draw when a pass follows.
        var d = Bed();
        var step = new DdpmPosteriorStep();
        var tt = new TimeTravel(3, 300, 500);
        var o = new SamplerOptions { Steps = 10, SamplerStep = step, BatchSize = 2, FirstItem = 3, Seed = 9, DType = ScalarType.Float64, TimeTravel = tt };
        using var result = new ConditionalSampler(d).Sample(None, o);

        using var scope = torch.NewDisposeScope();
        using var streams = new NoiseStreams(9, 2, 3);
        var shape = new long[] { 1, 4, 4 };
        var x = streams.Next(shape, ScalarType.Float64, torch.CPU);
        foreach (var (t, tn) in TimestepSpacing.Uniform(1000, 10))
        {
            int repeats = tt.RepeatsAt(t);
            for (int r = 0; r < repeats; r++)
            {
                double a = d.Schedule.AlphaBar(t), an = d.Schedule.AlphaBar(tn);
                var eps = d.PredictEpsilon(x, torch.full(2, (float)t, ScalarType.Float32), a);
                var x0 = Tweedie.X0(x, eps, a);
                x = step.Step(x, x0, eps, a, an, streams.Next(shape, ScalarType.Float64, torch.CPU));
                if (r + 1 < repeats) x = x * Math.Sqrt(a / an) + streams.Next(shape, ScalarType.Float64, torch.CPU) * Math.Sqrt(1 - a / an);
            }
        }
        Assert.Equal(Values(x), Values(result.Images));
    }

    [Fact]
    public void TimestepTensorIsFloat32OnTheSampleDeviceWithOneEntryPerItem()
    {
        var d = Bed();
        var o = new SamplerOptions { Steps = 4, SamplerStep = new DdimStep(0.0), BatchSize = 3, Device = torch.CPU, DType = ScalarType.Float64 };
        using var r = new ConditionalSampler(d).Sample(None, o);
        Assert.Equal(ScalarType.Float64, r.Images.dtype);
        Assert.Equal(DeviceType.CPU, r.Images.device_type);
        Assert.Equal(new[] { 750f, 500f, 250f, 0f }, d.ReceivedTimesteps.Select(x => x.Values[0]));
        Assert.All(d.ReceivedTimesteps, x =>
        {
            Assert.Equal(DeviceType.CPU, x.Device);
            Assert.Equal(ScalarType.Float32, x.DType);
            Assert.Equal(3, x.Values.Length);
            Assert.All(x.Values, v => Assert.Equal(x.Values[0], v));
        });
    }

    [Fact]
    public void NoTensorLeaksAcross200Steps()
    {
        var d = Bed(2, 4);
        var sampler = new ConditionalSampler(d);
        var o = new SamplerOptions { Steps = 200, SamplerStep = new DdpmPosteriorStep(), BatchSize = 4, Seed = 3 };
        // Warm up once (lazy statics), then count on this thread only.
        sampler.Sample(None, o with { Steps = 2 }).Dispose();

        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        var live = new List<long>();
        using (var r = sampler.Sample(None, o, new SyncProgress(_ => live.Add(stats.ThreadTotalLiveCount))))
        {
            Assert.Equal(200, live.Count);
            // Between steps exactly one tensor is alive: the current sample. Flat from the first to the last step.
            Assert.All(live, n => Assert.Equal(1, n));
        }
        Assert.Equal(0, stats.ThreadTotalLiveCount);

        // Same with caller-supplied initial noise and time travel; the caller's tensor stays the caller's.
        using var xT = torch.zeros(4, 2, 4, 4);
        stats.Reset();
        live.Clear();
        using (var r = sampler.Sample(None, o with { InitialNoise = xT, TimeTravel = new TimeTravel(2, 100, 300) }, new SyncProgress(_ => live.Add(stats.ThreadTotalLiveCount))))
            Assert.All(live, n => Assert.Equal(1, n));
        Assert.Equal(0, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void CancellingFromProgressStopsBeforeTheNextStepAndFreesEverything()
    {
        var d = Bed();
        var sampler = new ConditionalSampler(d);
        using var cts = new CancellationTokenSource();
        var reports = new List<int>();
        var progress = new SyncProgress(p =>
        {
            reports.Add(p.Step);
            if (p.Step == 7) cts.Cancel();
        });
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            sampler.Sample(None, new SamplerOptions { Steps = 50, SamplerStep = new FreeDoMEtaStep(0.5) }, progress, cts.Token));
        Assert.Equal(Enumerable.Range(1, 7), reports);
        Assert.Equal(7, d.ForwardCalls); // at most one further step may run; here none does
        Assert.Equal(0, stats.ThreadTotalLiveCount); // no half-written sample survives
    }

    [Fact]
    public void CancellingDuringAStepFinishesAtMostThatStep()
    {
        var d = Bed();
        using var cts = new CancellationTokenSource();
        d.OnForward = call => { if (call == 4) cts.Cancel(); };
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            new ConditionalSampler(d).Sample(None, new SamplerOptions { Steps = 50 }, null, cts.Token));
        Assert.InRange(d.ForwardCalls, 4, 5);
        Assert.Equal(0, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void AnAlreadyCancelledTokenRunsNothing()
    {
        var d = Bed();
        Assert.ThrowsAny<OperationCanceledException>(() =>
            new ConditionalSampler(d).Sample(None, new SamplerOptions { Steps = 10 }, null, new CancellationToken(true)));
        Assert.Equal(0, d.ForwardCalls);
    }

    [Fact]
    public void ProgressCountsEveryStepAndRepeat()
    {
        var d = Bed();
        var reports = new List<SamplingProgress>();
        var o = new SamplerOptions { Steps = 20, TimeTravel = new TimeTravel(4, 100, 200) };
        using var r = new ConditionalSampler(d).Sample(None, o, new SyncProgress(reports.Add));
        var pairs = TimestepSpacing.Uniform(1000, 20); // 950, 900, ..., 0: 100, 150 and 200 are in the window
        int total = 20 + 3 * 3;
        Assert.Equal(total, reports.Count);
        Assert.Equal(Enumerable.Range(1, total), reports.Select(p => p.Step));
        Assert.All(reports, p => Assert.Equal(total, p.TotalSteps));
        Assert.Equal(pairs.SelectMany(p => Enumerable.Repeat(p.T, o.TimeTravel!.RepeatsAt(p.T))), reports.Select(p => p.Timestep));
        Assert.Equal(r.Trace.Steps, reports.Select(p => p.Trace));
        Assert.Equal(total, d.ForwardCalls);
        Assert.All(r.Trace.Steps, s => Assert.Equal(1, s.Passes.DenoiserForwards));
    }

    [Fact]
    public void LastStepToTheCleanEndGivesTheTweedieEstimate()
    {
        // The final transition (t -> -1, abar' = 1) of every step type returns x0 exactly as estimated, finite.
        var d = Bed();
        foreach (ISamplerStep step in new ISamplerStep[] { new FreeDoMEtaStep(0.5), new DdimStep(0.0), new DdimStep(1.0), new DdpmPosteriorStep() })
        {
            using var scope = torch.NewDisposeScope();
            var xT = torch.randn(new long[] { 2, 1, 4, 4 }, ScalarType.Float64, generator: new Generator(11));
            using var r = new ConditionalSampler(d).Sample(None, new SamplerOptions { Timesteps = new[] { 30 }, SamplerStep = step, BatchSize = 2, InitialNoise = xT, DType = ScalarType.Float64 });
            double a = d.Schedule.AlphaBar(30);
            var x0 = Tweedie.X0(xT, d.PredictEpsilon(xT, torch.full(2, 30f), a), a);
            Assert.True(r.Images.isfinite().all().item<bool>(), step.Name);
            var diff = (r.Images - x0).abs().max().item<double>();
            Assert.True(diff <= 1e-15, $"{step.Name}: last step differs from x0 by {diff}");
        }
    }
}
