using System.Diagnostics;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Core.Sampling;

/// <summary>
/// Runs the reverse diffusion loop of a denoiser, with the conditions applied by a guidance strategy, and records a
/// per-step trace.
/// </summary>
/// <remarks>
/// The loop is synchronous and runs on the calling thread: TorchSharp's dispose scopes and grad modes are
/// thread-local. Each step runs inside its own dispose scope; only the new sample leaves it.
/// </remarks>
public sealed class ConditionalSampler
{
    private readonly IDenoiser _denoiser;

    /// <summary>Creates a sampler for <paramref name="denoiser"/>.</summary>
    public ConditionalSampler(IDenoiser denoiser)
    {
        _denoiser = denoiser ?? throw new ArgumentNullException(nameof(denoiser));
    }

    /// <summary>The backbone this sampler runs.</summary>
    public IDenoiser Denoiser => _denoiser;

    /// <summary>Samples <see cref="SamplerOptions.BatchSize"/> images steered by <paramref name="conditions"/>.</summary>
    /// <exception cref="ArgumentException">Invalid options (batch size, timesteps, initial noise shape).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing is returned and every step tensor is freed.</exception>
    /// <exception cref="GuidanceException">A condition produced non-finite values under <see cref="NonFinitePolicy.Fail"/>.</exception>
    public SamplingResult Sample(
        IReadOnlyList<IGuidanceCondition> conditions,
        SamplerOptions options,
        IProgress<SamplingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(conditions);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSize < 1) throw new ArgumentException($"BatchSize must be at least 1; got {options.BatchSize}.", nameof(options));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var c in conditions)
        {
            if (c is null) throw new ArgumentException("The condition list contains null.", nameof(conditions));
            if (!names.Add(c.Name)) throw new ArgumentException($"Two conditions are named '{c.Name}'; names must be unique.", nameof(conditions));
        }

        var schedule = _denoiser.Schedule;
        var pairs = options.Timesteps is { } explicitTs
            ? TimestepSpacing.Explicit(explicitTs, schedule.TrainSteps)
            : TimestepSpacing.Uniform(schedule.TrainSteps, options.Steps);
        var strategy = options.Strategy ?? (conditions.Count == 0 ? UnguidedStrategy.Instance : GuidanceDefaults.Strategy());
        var combiner = options.Combiner ?? SumCombiner.Instance;
        var device = options.Device ?? torch.CPU;
        var itemShape = new long[] { _denoiser.Channels, _denoiser.SampleSize, _denoiser.SampleSize };
        int totalSteps = pairs.Sum(p => options.TimeTravel?.RepeatsAt(p.T) ?? 1);

        var trace = new SamplingTrace { Strategy = strategy.Name, Combiner = combiner.Name };
        var total = Stopwatch.StartNew();
        using var streams = new NoiseStreams(options.Seed, options.BatchSize, options.FirstItem);
        Tensor x;
        if (options.InitialNoise is { } init)
        {
            var expected = new long[] { options.BatchSize }.Concat(itemShape).ToArray();
            if (!init.shape.SequenceEqual(expected))
                throw new ArgumentException($"InitialNoise has shape [{string.Join(", ", init.shape)}]; expected [{string.Join(", ", expected)}].", nameof(options));
            x = init.detach().to(options.DType, device).clone();
        }
        else
        {
            x = streams.Next(itemShape, options.DType, device);
        }

        int index = 0;
        try
        {
            foreach (var pair in pairs)
            {
                int repeats = options.TimeTravel?.RepeatsAt(pair.T) ?? 1;
                for (int r = 0; r < repeats; r++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var stepTrace = new StepTrace { Index = index, T = pair.T, Next = pair.Next, Repeat = r };
                    var stepWatch = Stopwatch.StartNew();
                    Tensor next;
                    using (var scope = torch.NewDisposeScope())
                    {
                        double a = schedule.AlphaBar(pair.T), an = schedule.AlphaBar(pair.Next);
                        var noise = options.SamplerStep.UsesNoise ? streams.Next(itemShape, options.DType, device) : null;
                        var step = new GuidedStep
                        {
                            Denoiser = _denoiser,
                            X = x,
                            TimestepTensor = torch.full(options.BatchSize, (float)pair.T, ScalarType.Float32, device),
                            Timesteps = pair,
                            AlphaBar = a,
                            AlphaBarNext = an,
                            Sampler = options.SamplerStep,
                            Noise = noise,
                            Conditions = conditions,
                            Combiner = combiner,
                            NonFinitePolicy = options.NonFinitePolicy,
                            Trace = stepTrace,
                            CancellationToken = cancellationToken,
                            // Extra per-branch draws (Z-Magic's research-code parity) come from the same item streams.
                            DrawNoise = () => streams.Next(itemShape, options.DType, device),
                        };
                        next = strategy.Step(step).detach();
                        if (r + 1 < repeats)
                        {
                            // Time travel: renoise x_t' back to t and redo the step.
                            var z = streams.Next(itemShape, options.DType, device);
                            next = next * Math.Sqrt(a / an) + z * Math.Sqrt(1 - a / an);
                        }
                        next = next.MoveToOuterDisposeScope();
                    }
                    x.Dispose();
                    x = next;
                    stepTrace.Timings.TotalMs = stepWatch.Elapsed.TotalMilliseconds;
                    trace.Steps.Add(stepTrace);
                    index++;
                    progress?.Report(new SamplingProgress(index, totalSteps, pair.T, stepTrace));
                }
            }
        }
        catch
        {
            x.Dispose();
            throw;
        }
        trace.Elapsed = total.Elapsed;
        return new SamplingResult(x, trace);
    }
}
