using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.Imaging;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Reliability;

/// <summary>
/// Faults during sampling, end to end on a tiny DDPM with three conditions, Z-Magic + CAGrad: non-finite values under
/// both policies, cancellation from every place, a condition that throws late in a long run, determinism and
/// concurrent samplers.
/// </summary>
public class SamplingFaultTests
{
    private readonly ITestOutputHelper _out;

    public SamplingFaultTests(ITestOutputHelper output) => _out = output;

    private static Tensor Nan(Tensor e) => e * double.NaN;

    [Theory]
    [InlineData("mean")]
    [InlineData("patch")]
    [InlineData("smooth")]
    public void NonFiniteEnergyUnderFailNamesConditionAndTimestepAndFreesEverything(string which)
    {
        using var d = TinyDdpm.Create();
        var conds = TinyDdpm.Conditions();
        var bad = (Cond)conds.First(c => c.Name == which);
        bad.Hook = (n, e) => n == 3 ? Nan(e) : null;
        var o = TinyDdpm.Options(6);
        int t3 = -1;
        var progress = new SyncProgress(p => { if (p.Step == 2) t3 = p.Trace.Next; });
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        var ex = Assert.Throws<GuidanceException>(() => new ConditionalSampler(d).Sample(conds, o, progress));
        Assert.Equal(which, ex.Condition);
        Assert.Equal(t3, ex.Timestep);
        Assert.Contains($"'{which}'", ex.Message);
        Assert.Contains($"timestep {t3}", ex.Message);
        Assert.Contains("non-finite energy", ex.Message);
        Assert.Equal(0, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void NonFiniteGradientUnderFailIsReported()
    {
        using var d = TinyDdpm.Create();
        var conds = TinyDdpm.Conditions();
        // A finite energy whose gradient is NaN: sqrt at 0 gives an infinite derivative times 0.
        ((Cond)conds[1]).Hook = (n, e) => n == 2 ? e + (e * 0).sqrt() * 0 : null;
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        var ex = Assert.Throws<GuidanceException>(() => new ConditionalSampler(d).Sample(conds, TinyDdpm.Options(5)));
        Assert.Equal("patch", ex.Condition);
        Assert.Contains("non-finite", ex.Message);
        Assert.Equal(0, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void NonFiniteUnderSkipConditionContinuesAndMarksTheTrace()
    {
        using var d = TinyDdpm.Create();
        var conds = TinyDdpm.Conditions();
        // "mean" (the anchor) is NaN at its 3rd and 4th calls, "smooth" at its 5th.
        ((Cond)conds[0]).Hook = (n, e) => n is 3 or 4 ? Nan(e) : null;
        ((Cond)conds[2]).Hook = (n, e) => n == 5 ? Nan(e) : null;
        var o = TinyDdpm.Options(10) with { NonFinitePolicy = NonFinitePolicy.SkipCondition };
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        using (var r = new ConditionalSampler(d).Sample(conds, o))
        {
            Assert.True(Native.AllFinite(r.Images));
            Assert.Equal(10, r.Trace.Steps.Count);
            var skipped = r.Trace.Steps.SelectMany(s => s.Conditions.Where(c => c.Skipped).Select(c => (s.Index, c.Name))).ToList();
            _out.WriteLine("skipped: " + string.Join(", ", skipped));
            Assert.Contains(skipped, s => s.Name == "mean");
            Assert.Contains(skipped, s => s.Name == "smooth");
            Assert.DoesNotContain(skipped, s => s.Name == "patch");
            Assert.Equal(2, skipped.Count(s => s.Name == "mean"));
            Assert.Equal(1, skipped.Count(s => s.Name == "smooth"));
        }
        Assert.Equal(0, stats.ThreadTotalLiveCount);
    }

    public enum CancelPoint { Progress, InsideEnergy, InsideCombiner, CombinerThrows }

    [Theory]
    [InlineData(CancelPoint.Progress)]
    [InlineData(CancelPoint.InsideEnergy)]
    [InlineData(CancelPoint.InsideCombiner)]
    [InlineData(CancelPoint.CombinerThrows)]
    public void CancellationAnywhereStopsWithinAStepFreesEverythingAndWritesNoFile(CancelPoint where)
    {
        using var d = TinyDdpm.Create();
        var conds = TinyDdpm.Conditions();
        using var cts = new CancellationTokenSource();
        int steps = 0;
        // CAGrad is called once per batch item and step: the first call of step 5 is call 4 * batch + 1.
        const int batch = 2;
        var combiner = new HookedCombiner(new CAGradCombiner(new CAGradOptions { C = 0.5 }), n =>
        {
            if (n == 4 * batch + 1 && where == CancelPoint.InsideCombiner) cts.Cancel();
            if (n == 4 * batch + 1 && where == CancelPoint.CombinerThrows) { cts.Cancel(); cts.Token.ThrowIfCancellationRequested(); }
        });
        if (where == CancelPoint.InsideEnergy)
            ((Cond)conds[1]).Hook = (n, _) => { if (n == 5) cts.Cancel(); return null; };
        var progress = new SyncProgress(p => { steps = p.Step; if (where == CancelPoint.Progress && p.Step == 5) cts.Cancel(); });
        var o = TinyDdpm.Options(12, batch: batch) with { Combiner = combiner };

        string dir = Path.Combine(Path.GetTempPath(), "zmagic-cancel-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        string output = Path.Combine(dir, "sample.png");
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        try
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            Assert.ThrowsAny<OperationCanceledException>(() => SampleToFile(d, conds, o, output, progress, cts.Token));
            _out.WriteLine($"{where}: cancelled after {steps} completed steps, {combiner.Calls} combiner calls, {sw.ElapsedMilliseconds} ms");
            // Promptly: at most the step in flight finishes (5 completed steps for a cancel from progress at step 5).
            Assert.InRange(steps, 4, 5);
            Assert.InRange(combiner.Calls, 4 * batch, 6 * batch);
            Assert.Equal(0, stats.ThreadTotalLiveCount);
            Assert.Empty(Directory.GetFileSystemEntries(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>The typical application loop: sample, then write the first image atomically.</summary>
    private static void SampleToFile(Core.Diffusion.IDenoiser d, IReadOnlyList<IGuidanceCondition> conds, SamplerOptions o, string path,
        IProgress<SamplingProgress>? progress, CancellationToken token)
    {
        using var r = new ConditionalSampler(d).Sample(conds, o, progress, token);
        ImageFiles.SavePng(path, r.Images[0], token);
    }

    [Fact]
    public void AConditionThrowingAtStep500SurfacesClearlyAndTheProcessCarriesOn()
    {
        using var d = TinyDdpm.Create();
        // Vanilla with one condition: exactly one energy call per step, so call 501 is step index 500.
        var cond = new Cond("user-attribute", x0 => x0.square().flatten(1).sum(1));
        cond.Hook = (n, _) => n == 501 ? throw new InvalidDataException("the reference embedding file changed under us") : null;
        var o = new SamplerOptions { Steps = 1000, Seed = 1, BatchSize = 1, Strategy = new VanillaStrategy() };
        int t500 = -1;
        var progress = new SyncProgress(p => { if (p.Step == 500) t500 = p.Trace.Next; });
        var stats = DisposeScopeManager.Statistics;
        stats.Reset();
        var ex = Assert.Throws<GuidanceException>(() => new ConditionalSampler(d).Sample(new[] { cond }, o, progress));
        _out.WriteLine(ex.Message);
        Assert.Equal("user-attribute", ex.Condition);
        Assert.Equal(t500, ex.Timestep);
        Assert.Contains("'user-attribute'", ex.Message);
        Assert.Contains("(step 500)", ex.Message);
        Assert.Contains("the reference embedding file changed under us", ex.Message);
        Assert.IsType<InvalidDataException>(ex.InnerException);
        Assert.Equal(0, stats.ThreadTotalLiveCount);

        // The process and the model are fine: the same sampler runs again.
        cond.Hook = null;
        using var r = new ConditionalSampler(d).Sample(new[] { cond }, o with { Steps = 10 });
        Assert.True(Native.AllFinite(r.Images));
    }

    private static byte[] Run(Core.Diffusion.IDenoiser d, long seed, int steps = 8)
    {
        using var r = new ConditionalSampler(d).Sample(TinyDdpm.Conditions(), TinyDdpm.Options(steps, seed));
        using var c = r.Images.contiguous();
        return c.bytes.ToArray();
    }

    [Fact]
    public void SameSeedOptionsAndWeightsGiveBitIdenticalImages()
    {
        using var d1 = TinyDdpm.Create();
        using var d2 = TinyDdpm.Create();
        var a = Run(d1, 11);
        Assert.Equal(a, Run(d1, 11));
        Assert.Equal(a, Run(d2, 11)); // a freshly built model with the same weights
        Assert.NotEqual(a, Run(d1, 12));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ConcurrentSamplersMatchSequentialRunsBitForBit(bool shareOneModel)
    {
        const int threads = 3;
        var models = Enumerable.Range(0, threads).Select(_ => TinyDdpm.Create()).ToArray();
        try
        {
            var expected = Enumerable.Range(0, threads).Select(i => Run(models[0], 100 + i)).ToArray();
            var got = new byte[threads][];
            var errors = new System.Collections.Concurrent.ConcurrentBag<Exception>();
            using var start = new Barrier(threads);
            var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
            {
                try
                {
                    start.SignalAndWait();
                    // Each thread alternates guided runs with a no_grad block of its own, to mix grad modes.
                    using (torch.no_grad()) { using var z = torch.zeros(3); }
                    got[i] = Run(shareOneModel ? models[0] : models[i], 100 + i);
                }
                catch (Exception e) { errors.Add(e); }
            })).ToList();
            workers.ForEach(w => w.Start());
            workers.ForEach(w => w.Join());
            Assert.Empty(errors);
            for (int i = 0; i < threads; i++) Assert.Equal(expected[i], got[i]);
            Assert.True(torch.is_grad_enabled()); // the test thread's grad mode is untouched
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }
}
