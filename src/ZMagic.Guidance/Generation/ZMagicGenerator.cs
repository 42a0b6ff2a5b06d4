using System.Runtime.CompilerServices;
using System.Threading.Channels;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.DependencyInjection;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Generation;

/// <summary>One generation: the conditions and, optionally, the full sampler options.</summary>
/// <param name="Conditions">The conditions, in order (empty for unguided sampling).</param>
/// <param name="Options">The sampler options; null takes the generator's <see cref="ZMagicGeneratorDefaults"/> with <paramref name="Seed"/>.</param>
/// <param name="Seed">The seed used when <paramref name="Options"/> is null.</param>
public sealed record GenerationRequest(IReadOnlyList<IGuidanceCondition> Conditions, SamplerOptions? Options = null, long Seed = 0);

/// <summary>What a <see cref="ZMagicGenerator"/> uses for requests without their own <see cref="SamplerOptions"/>.</summary>
public sealed record ZMagicGeneratorDefaults
{
    /// <summary>Denoising steps (default 100).</summary>
    public int Steps { get; init; } = 100;

    /// <summary>The strategy (default <see cref="ZMagicStrategyKind.ZMagic"/>).</summary>
    public ZMagicStrategyKind Strategy { get; init; } = ZMagicStrategyKind.ZMagic;

    /// <summary>Where the samples live (default the CPU).</summary>
    public Device? Device { get; init; }
}

/// <summary>
/// A detached, CPU-side copy of the sample after one denoising step, with that step's trace. It owns no native memory,
/// so it may be kept, sent across threads or dropped freely.
/// </summary>
/// <param name="Step">1-based step count (time-travel passes included).</param>
/// <param name="TotalSteps">Steps in the run.</param>
/// <param name="Timestep">The timestep t of the step.</param>
/// <param name="Shape">The sample's shape [B, C, H, W].</param>
/// <param name="Sample">The sample x_t' after the step (before any time-travel re-noising), float32, row-major; the last preview is the final image.</param>
/// <param name="Trace">The step's energies, gradient norms, step sizes and timings.</param>
public sealed record StepPreview(int Step, int TotalSteps, int Timestep, long[] Shape, float[] Sample, StepTrace Trace);

/// <summary>
/// Asynchronous front end of <see cref="ConditionalSampler"/>: <see cref="GenerateAsync"/> and the per-step preview stream
/// <see cref="PreviewsAsync"/>. The synchronous loop runs on a dedicated (long-running) thread, because TorchSharp's
/// dispose scopes and grad modes are thread-local; nothing awaits inside a scope.
/// </summary>
/// <remarks>The generator does not own the denoiser; one run at a time per generator is the caller's responsibility
/// only as far as the denoiser itself is not thread-safe (TorchSharp modules in eval mode may be shared read-only).</remarks>
public sealed class ZMagicGenerator
{
    private readonly ConditionalSampler _sampler;

    /// <summary>Creates a generator over <paramref name="denoiser"/>.</summary>
    public ZMagicGenerator(IDenoiser denoiser, ZMagicGeneratorDefaults? defaults = null)
    {
        _sampler = new ConditionalSampler(denoiser ?? throw new ArgumentNullException(nameof(denoiser)));
        Defaults = defaults ?? new ZMagicGeneratorDefaults();
        if (Defaults.Steps < 1) throw new ArgumentException($"Steps must be at least 1; got {Defaults.Steps}.", nameof(defaults));
    }

    /// <summary>The backbone.</summary>
    public IDenoiser Denoiser => _sampler.Denoiser;

    /// <summary>Used for requests without their own options.</summary>
    public ZMagicGeneratorDefaults Defaults { get; }

    /// <summary>The sampler options a request runs with.</summary>
    public SamplerOptions ResolveOptions(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.Options ?? new SamplerOptions
        {
            Steps = Defaults.Steps,
            Seed = request.Seed,
            Device = Defaults.Device,
            Strategy = GuidanceMethods.Strategy(Defaults.Strategy == ZMagicStrategyKind.Vanilla ? "vanilla" : "zmagic"),
            Combiner = Defaults.Strategy == ZMagicStrategyKind.ZMagic ? GuidanceMethods.Combiner("cagrad") : null,
        };
    }

    /// <summary>Runs the request synchronously on the calling thread.</summary>
    public SamplingResult Generate(GenerationRequest request, IProgress<SamplingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return _sampler.Sample(request.Conditions, ResolveOptions(request), progress, cancellationToken);
    }

    /// <summary>
    /// Runs the request on a dedicated thread. The result is identical to <see cref="Generate"/> for the same request.
    /// </summary>
    /// <param name="request">What to generate.</param>
    /// <param name="progress">Reported on the sampling thread after every step.</param>
    /// <param name="cancellationToken">Stops the run within one step; the task then ends as cancelled.</param>
    public Task<SamplingResult> GenerateAsync(GenerationRequest request, IProgress<SamplingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var options = ResolveOptions(request);
        return Task.Factory.StartNew(
            () => _sampler.Sample(request.Conditions, options, progress, cancellationToken),
            cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>
    /// Runs the request on a dedicated thread and streams a detached CPU copy of the sample after every
    /// <paramref name="every"/>-th step (and always after the last one). Stopping the enumeration early cancels the run.
    /// </summary>
    /// <param name="request">What to generate.</param>
    /// <param name="every">Preview interval in steps (1 = every step).</param>
    /// <param name="cancellationToken">Cancels the run; the enumeration then throws <see cref="OperationCanceledException"/>.</param>
    public async IAsyncEnumerable<StepPreview> PreviewsAsync(
        GenerationRequest request, int every = 1, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentOutOfRangeException.ThrowIfLessThan(every, 1);
        var baseOptions = ResolveOptions(request);
        var capture = new CapturingStrategy(baseOptions.Strategy ?? (request.Conditions.Count == 0 ? UnguidedStrategy.Instance : new VanillaStrategy()));
        var options = baseOptions with { Strategy = capture };
        var channel = Channel.CreateUnbounded<StepPreview>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var reporter = new PreviewReporter(capture, channel.Writer, every);
        var run = Task.Factory.StartNew(() =>
        {
            try
            {
                using var result = _sampler.Sample(request.Conditions, options, reporter, linked.Token);
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

        try
        {
            await foreach (var preview in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            {
                // The sampler may be steps ahead of a slow reader (the channel is unbounded): a cancelled reader gets
                // no buffered preview after cancelling, not only no new step.
                cancellationToken.ThrowIfCancellationRequested();
                yield return preview;
            }
        }
        finally
        {
            linked.Cancel();
            await run.ConfigureAwait(false);
        }
    }

    /// <summary>Wraps the strategy to copy each step's output to the CPU, inside the sampler's dispose scope.</summary>
    private sealed class CapturingStrategy(IGuidanceStrategy inner) : IGuidanceStrategy
    {
        public string Name => inner.Name;
        public bool Wanted { get; set; } = true;
        public float[]? Last { get; set; }
        public long[]? LastShape { get; set; }

        public Tensor Step(GuidedStep step)
        {
            var next = inner.Step(step);
            if (Wanted)
            {
                LastShape = next.shape;
                Last = next.detach().to(ScalarType.Float32).cpu().data<float>().ToArray();
            }
            return next;
        }
    }

    private sealed class PreviewReporter(CapturingStrategy capture, ChannelWriter<StepPreview> writer, int every) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value)
        {
            bool emit = value.Step % every == 0 || value.Step == value.TotalSteps;
            if (emit && capture.Last is { } sample)
                writer.TryWrite(new StepPreview(value.Step, value.TotalSteps, value.Timestep, capture.LastShape!, sample, value.Trace));
            capture.Last = null;
            // Copy only the steps that will be emitted: the next step is value.Step + 1.
            int following = value.Step + 1;
            capture.Wanted = following % every == 0 || following == value.TotalSteps;
        }
    }
}
