using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.Conditions;
using ZMagic.Guidance.DependencyInjection;
using ZMagic.Guidance.Generation;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Packaging;

public sealed class GeneratorTests
{
    private static (ZMagicGenerator Gen, IGuidanceCondition[] Conditions) Setup(int steps = 4)
    {
        // Formula weights make an untrained network whose unclipped trajectories blow up after a few steps; clipping x0
        // keeps long runs (the cancellation test asks for 50 steps and the producer may run ahead) finite.
        var d = new ZMagic.Core.Diffusion.X0ClippingDenoiser(TinyBackbone.Create());
        var gen = new ZMagicGenerator(d, new ZMagicGeneratorDefaults { Steps = steps, Strategy = ZMagicStrategyKind.ZMagic });
        var reference = full(1, 8, 8, 0.5f);
        var conditions = new IGuidanceCondition[]
        {
            new ReferenceImageCondition(reference, compareSize: 2, name: "layout"),
            new DependencyInjectionTests.MeanCondition(new DependencyInjectionTests.MeanOptions { Target = -0.2 }),
        };
        return (gen, conditions);
    }

    [Fact]
    public async Task GenerateAsync_matches_the_synchronous_path()
    {
        var (gen, conditions) = Setup();
        var request = new GenerationRequest(conditions, Seed: 7);
        using var sync = gen.Generate(request);
        int reported = 0;
        using var async = await gen.GenerateAsync(request, new SyncProgress(() => reported++));
        Assert.Equal(4, reported);
        Assert.Equal(sync.Images.data<float>().ToArray(), async.Images.data<float>().ToArray());
        Assert.StartsWith("zmagic", async.Trace.Strategy);
    }

    [Fact]
    public async Task Previews_stream_one_detached_copy_per_step_and_the_last_is_the_result()
    {
        var (gen, conditions) = Setup();
        var request = new GenerationRequest(conditions, Seed: 7);
        using var sync = gen.Generate(request);
        var previews = new List<StepPreview>();
        await foreach (var p in gen.PreviewsAsync(request)) previews.Add(p);
        Assert.Equal([1, 2, 3, 4], previews.Select(p => p.Step));
        Assert.All(previews, p => Assert.Equal([1L, 1, 8, 8], p.Shape));
        Assert.Equal(sync.Images.data<float>().ToArray(), previews[^1].Sample);
        Assert.Equal(2, previews[^1].Trace.Conditions.Count);

        var every2 = new List<int>();
        await foreach (var p in gen.PreviewsAsync(request, every: 3)) every2.Add(p.Step);
        Assert.Equal([3, 4], every2);
    }

    [Fact]
    public async Task Cancellation_stops_both_async_paths()
    {
        var (gen, conditions) = Setup(steps: 50);
        var request = new GenerationRequest(conditions, Seed: 1);
        using var cts = new CancellationTokenSource();
        int seen = 0;
        var task = gen.GenerateAsync(request, new SyncProgress(() => { if (++seen == 2) cts.Cancel(); }), cts.Token);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => task);
        Assert.Equal(2, seen);

        using var cts2 = new CancellationTokenSource();
        var got = new List<int>();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var p in gen.PreviewsAsync(request, cancellationToken: cts2.Token))
            {
                got.Add(p.Step);
                if (p.Step == 2) cts2.Cancel();
            }
        });
        Assert.InRange(got.Count, 2, 3);
        // Nothing after the cancelling preview, however far ahead the sampler ran.
        Assert.Equal(2, got[^1]);
    }

    private sealed class SyncProgress(Action onReport) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value) => onReport();
    }
}
