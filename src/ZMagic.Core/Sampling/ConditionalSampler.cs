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
/// <para>
/// The loop is synchronous and runs on the calling thread: TorchSharp's dispose scopes and grad modes are
/// thread-local. Each step runs inside its own dispose scope; only the new sample leaves it.
/// </para>
/// <para>
/// Noise: every batch item has its own seeded stream (<see cref="NoiseStreams"/>), consumed in this order:
/// x_T first (unless <see cref="SamplerOptions.InitialNoise"/> is given), then, for every step and every
/// time-travel pass, one draw for the sampler step when <see cref="ISamplerStep.UsesNoise"/> (even at the last step,
/// where its coefficient is 0), then one draw for the time-travel re-noising when another pass of the same step
/// follows. The strategy and the conditions never draw from the streams, so item i's noise depends only on the seed,
/// its index (<see cref="SamplerOptions.FirstItem"/> + i, or <see cref="SamplerOptions.Items"/>[i]), the sampler step, the timesteps and the time travel; not on
/// the batch size, the conditions or the strategy. Draws are made in float32 on the CPU, then converted to
/// <see cref="SamplerOptions.DType"/> and moved to <see cref="SamplerOptions.Device"/>.
/// </para>
/// <para>
/// Device and dtype: x_T, every noise draw and the float32 timestep tensor [B] given to the denoiser live on
/// <see cref="SamplerOptions.Device"/>; the sample has <see cref="SamplerOptions.DType"/>. The denoiser and the
/// conditions must live on that device.
/// </para>
/// <para>
/// After every step the sample is checked for NaN and infinity (one reduction and one host sync per step); a
/// non-finite sample stops the run with a <see cref="SamplingException"/> naming the step.
/// </para>
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
    /// <param name="conditions">The conditions, in order (empty for unguided sampling); names must be unique.</param>
    /// <param name="options">The run's options.</param>
    /// <param name="progress">
    /// <see cref="IProgress{T}.Report"/> is called on the sampling thread after every step (time-travel passes included);
    /// <see cref="Progress{T}"/> then posts to its synchronisation context, so the callback may run later.
    /// </param>
    /// <param name="cancellationToken">Checked before every step, so a cancelled run stops within one step.</param>
    /// <exception cref="ArgumentException">Invalid options (batch size, first item, dtype, timesteps, time travel,
    /// initial noise shape or values) or conditions (null, unnamed, duplicate names).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing is returned and every step tensor is freed.</exception>
    /// <exception cref="SamplingException">A step produced NaN or infinite values.</exception>
    /// <exception cref="GuidanceException">A condition produced non-finite values under <see cref="NonFinitePolicy.Fail"/>.</exception>
    /// <exception cref="Native.NumericsException">libtorch computes wrong gradients on this CPU and no workaround helps
    /// (<see cref="SamplerOptions.CheckNumerics"/>).</exception>
    public SamplingResult Sample(
        IReadOnlyList<IGuidanceCondition> conditions,
        SamplerOptions options,
        IProgress<SamplingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(conditions);
        ArgumentNullException.ThrowIfNull(options);
        ValidateConditions(conditions);
        ValidateOptions(options);
        if (options.CheckNumerics && conditions.Count > 0 && (options.Device ?? torch.CPU).type == DeviceType.CPU)
            Native.NumericsSelfCheck.EnsureHealthy(cancellationToken: cancellationToken);

        var schedule = _denoiser.Schedule ?? throw new InvalidOperationException($"{_denoiser.GetType().Name}.Schedule is null.");
        var pairs = BuildTimesteps(options, schedule);
        var strategy = options.Strategy ?? (conditions.Count == 0 ? UnguidedStrategy.Instance : GuidanceDefaults.Strategy());
        var combiner = options.Combiner ?? SumCombiner.Instance;
        var device = options.Device ?? torch.CPU;
        var itemShape = new long[] { _denoiser.Channels, _denoiser.SampleSize, _denoiser.SampleSize };
        var batchShape = new long[] { options.BatchSize }.Concat(itemShape).ToArray();
        int totalSteps = pairs.Sum(p => options.TimeTravel?.RepeatsAt(p.T) ?? 1);

        var trace = new SamplingTrace { Strategy = strategy.Name, Combiner = combiner.Name };
        var total = Stopwatch.StartNew();
        using var streams = options.Items is { } items ? new NoiseStreams(options.Seed, items) : new NoiseStreams(options.Seed, options.BatchSize, options.FirstItem);
        Tensor x = options.InitialNoise is { } init
            ? CopyInitialNoise(init, batchShape, options.DType, device)
            : streams.Next(itemShape, options.DType, device);

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
                        next = strategy.Step(step) ?? throw new InvalidOperationException($"Strategy '{strategy.Name}' returned null at step {index} (t = {pair.T}).");
                        if (!next.shape.SequenceEqual(batchShape))
                            throw new InvalidOperationException($"Strategy '{strategy.Name}' returned shape [{string.Join(", ", next.shape)}] at step {index} (t = {pair.T}); expected [{string.Join(", ", batchShape)}].");
                        next = next.detach();
                        if (!next.isfinite().all().item<bool>())
                            throw new SamplingException(
                                $"Sampling produced NaN or infinite values at step {index} (t = {pair.T} -> {pair.Next}{(r > 0 ? $", time-travel pass {r}" : "")}): " +
                                "the denoiser's output or the guidance update is not finite.", index, pair.T, pair.Next);
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

    private static void ValidateConditions(IReadOnlyList<IGuidanceCondition> conditions)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < conditions.Count; i++)
        {
            var c = conditions[i] ?? throw new ArgumentException($"The condition list contains null at position {i}.", nameof(conditions));
            if (string.IsNullOrWhiteSpace(c.Name))
                throw new ArgumentException($"The condition at position {i} ({c.GetType().Name}) has no name; names identify conditions in traces.", nameof(conditions));
            if (!names.Add(c.Name)) throw new ArgumentException($"Two conditions are named '{c.Name}'; names must be unique.", nameof(conditions));
        }
    }

    private static void ValidateOptions(SamplerOptions options)
    {
        if (options.BatchSize < 1) throw new ArgumentException($"SamplerOptions.BatchSize must be at least 1; got {options.BatchSize}.", nameof(options));
        if (options.FirstItem < 0) throw new ArgumentException($"SamplerOptions.FirstItem must not be negative; got {options.FirstItem}.", nameof(options));
        if (options.Items is { } items)
        {
            if (items.Count != options.BatchSize)
                throw new ArgumentException($"SamplerOptions.Items lists {items.Count} item(s) but BatchSize is {options.BatchSize}; give one index per batch item.", nameof(options));
            if (items.FirstOrDefault(i => i < 0) is var bad && bad < 0)
                throw new ArgumentException($"SamplerOptions.Items must not contain negative indices; got {bad}.", nameof(options));
            if (items.Distinct().Count() != items.Count)
                throw new ArgumentException($"SamplerOptions.Items lists item {items.GroupBy(i => i).First(g => g.Count() > 1).Key} twice; each item has one noise stream.", nameof(options));
        }
        if (options.SamplerStep is null) throw new ArgumentException("SamplerOptions.SamplerStep is null.", nameof(options));
        if (options.DType is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64))
            throw new ArgumentException($"SamplerOptions.DType must be a floating-point type; got {options.DType}.", nameof(options));
        if (options.TimeTravel is { } tt && (tt.Repeats < 1 || tt.From > tt.To))
            throw new ArgumentException($"SamplerOptions.TimeTravel needs Repeats >= 1 and From <= To; got {tt}.", nameof(options));
    }

    /// <summary>The run's (t, t') transitions: <see cref="SamplerOptions.Timesteps"/>, else the uniform spacing of <see cref="SamplerOptions.Steps"/>.</summary>
    internal static IReadOnlyList<TimestepPair> BuildTimesteps(SamplerOptions options, NoiseSchedule schedule)
    {
        try
        {
            return options.Timesteps is { } explicitTs
                ? TimestepSpacing.Explicit(explicitTs, schedule.TrainSteps)
                : TimestepSpacing.Uniform(schedule.TrainSteps, options.Steps);
        }
        catch (ArgumentException e)
        {
            string which = options.Timesteps is null ? "SamplerOptions.Steps" : "SamplerOptions.Timesteps";
            throw new ArgumentException($"Invalid {which}: {e.Message}", nameof(options), e);
        }
    }

    private static Tensor CopyInitialNoise(Tensor init, long[] expected, ScalarType dtype, Device device)
    {
        if (init.IsInvalid) throw new ArgumentException("SamplerOptions.InitialNoise has been disposed.", nameof(SamplerOptions.InitialNoise));
        if (!init.shape.SequenceEqual(expected))
            throw new ArgumentException($"SamplerOptions.InitialNoise has shape [{string.Join(", ", init.shape)}]; expected [{string.Join(", ", expected)}] (batch size, denoiser channels, sample size, sample size).", nameof(SamplerOptions.InitialNoise));
        using var scope = torch.NewDisposeScope();
        if (!torch.is_floating_point(init))
            throw new ArgumentException($"SamplerOptions.InitialNoise has dtype {init.dtype}; expected a floating-point tensor.", nameof(SamplerOptions.InitialNoise));
        var x = init.detach().to(dtype, device).clone();
        if (!x.isfinite().all().item<bool>())
            throw new ArgumentException("SamplerOptions.InitialNoise contains NaN or infinite values.", nameof(SamplerOptions.InitialNoise));
        return x.MoveToOuterDisposeScope();
    }
}
