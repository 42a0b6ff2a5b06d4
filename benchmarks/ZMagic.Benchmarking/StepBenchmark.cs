using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Benchmarking;

/// <summary>Settings of a step measurement.</summary>
public sealed record StepBenchmarkOptions
{
    /// <summary>Measured steps (K), at least 1.</summary>
    public int Steps { get; init; } = 5;

    /// <summary>Unmeasured warm-up steps before the measured ones.</summary>
    public int Warmup { get; init; } = 1;

    /// <summary>The timestep of every measured step (FreeDoM's 100-step spacing goes t -> t - 10).</summary>
    public int Timestep { get; init; } = 500;

    /// <summary>Distance to the next timestep.</summary>
    public int Stride { get; init; } = 10;

    /// <summary>Batch size.</summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>Device of the sample (the denoiser and conditions must be there). CPU when null.</summary>
    public Device? Device { get; init; }

    /// <summary>Sample dtype.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>The base sampler transition (FreeDoM's eta = 0.5 step by default).</summary>
    public ISamplerStep SamplerStep { get; init; } = new FreeDoMEtaStep(0.5);

    /// <summary>Seed of x_t and the step noise.</summary>
    public long Seed { get; init; } = 7;
}

/// <summary>What one measured method cost per guided step. Serialises (snake_case) to the JSON of <c>zmagic bench</c>.</summary>
public sealed record StepBenchmarkResult
{
    /// <summary>Short label of the case (e.g. "zmagic-reuse/cagrad/2").</summary>
    public required string Label { get; init; }

    /// <summary>The strategy's name.</summary>
    public required string Method { get; init; }

    /// <summary>The combiner's name.</summary>
    public required string Combiner { get; init; }

    /// <summary>Number of conditions.</summary>
    public required int Conditions { get; init; }

    /// <summary>Measured steps.</summary>
    public required int Steps { get; init; }

    /// <summary>Device the steps ran on.</summary>
    public required string Device { get; init; }

    /// <summary>Sample shape [B, C, H, W].</summary>
    public required long[] SampleShape { get; init; }

    /// <summary>Median wall time of one step, device-synchronised (ms).</summary>
    public required double MsPerStepMedian { get; init; }

    /// <summary>Fastest step (ms).</summary>
    public required double MsPerStepMin { get; init; }

    /// <summary>Slowest step (ms).</summary>
    public required double MsPerStepMax { get; init; }

    /// <summary>Spread: median absolute deviation from the median (ms).</summary>
    public required double MsPerStepMad { get; init; }

    /// <summary>Every measured step time (ms), in order.</summary>
    public required double[] MsPerStep { get; init; }

    /// <summary>Denoiser forward passes per step (from the trace).</summary>
    public required int ForwardPassesPerStep { get; init; }

    /// <summary>Backward passes per step: gradients through the denoiser plus vector-Jacobian products.</summary>
    public required int BackwardPassesPerStep { get; init; }

    /// <summary>Of those, vector-Jacobian products (Z-Magic's pull-backs).</summary>
    public required int VjpsPerStep { get; init; }

    /// <summary>Condition energy evaluations per step.</summary>
    public required int EncoderCallsPerStep { get; init; }

    /// <summary>
    /// Sample items through the denoiser's forwards per step (sum of their batch sizes): forwards x batch, unless a
    /// batched mode replicates the sample (e.g. vanilla-batched with 3 conditions: 1 forward of 3 items at batch 1).
    /// </summary>
    public int ForwardItemsPerStep { get; init; }

    /// <summary>Sample items of the graphs the backward passes and VJPs went through per step (as <see cref="ForwardItemsPerStep"/>).</summary>
    public int BackwardItemsPerStep { get; init; }

    /// <summary>Median time in the gradient combiner per step (ms).</summary>
    public required double CombinerMsMedian { get; init; }

    /// <summary>Median time per step in denoiser forwards (ms).</summary>
    public required double ForwardMsMedian { get; init; }

    /// <summary>Median time per step in backward passes through the denoiser, VJPs excluded (ms).</summary>
    public required double BackwardMsMedian { get; init; }

    /// <summary>Median time per step in vector-Jacobian products (ms).</summary>
    public required double VjpMsMedian { get; init; }

    /// <summary>Median time per step in condition energies and encoder-only gradients (ms).</summary>
    public required double EncoderMsMedian { get; init; }

    /// <summary>Combiner time over step time (medians).</summary>
    public required double CombinerFraction { get; init; }

    /// <summary>Peak resident memory of the process so far (MB; Linux VmHWM: native plus managed).</summary>
    public required double PeakMemoryMb { get; init; }

    /// <summary>Managed heap after the run (MB).</summary>
    public required double ManagedMemoryMb { get; init; }

    /// <summary>Resident memory after the run (MB).</summary>
    public required double ResidentMemoryMb { get; init; }

    /// <summary>The result as one JSON object (snake_case names).</summary>
    public string ToJson(bool indented = true) => JsonSerializer.Serialize(this, indented ? StepBenchmark.JsonIndented : StepBenchmark.JsonCompact);
}

/// <summary>One case of an alternating comparison: a label, a strategy, a combiner and its conditions.</summary>
/// <param name="Label">Name shown in tables.</param>
/// <param name="Strategy">The guidance strategy.</param>
/// <param name="Combiner">The gradient combiner.</param>
/// <param name="Conditions">The conditions.</param>
public sealed record StepBenchmarkCase(string Label, IGuidanceStrategy Strategy, IGradientCombiner Combiner, IReadOnlyList<IGuidanceCondition> Conditions);

/// <summary>Process memory at one moment.</summary>
/// <param name="ManagedMb">Managed heap (GC.GetTotalMemory, no forced collection) in MB.</param>
/// <param name="ResidentMb">Resident set (VmRSS: native plus managed) in MB.</param>
/// <param name="PeakResidentMb">Peak resident set so far (VmHWM) in MB.</param>
public readonly record struct MemorySnapshot(double ManagedMb, double ResidentMb, double PeakResidentMb);

/// <summary>Memory over a long run of steps (see <see cref="StepBenchmark.Soak"/>).</summary>
/// <param name="Steps">Steps run.</param>
/// <param name="Samples">(step index, memory) after a full collection, at regular intervals.</param>
public sealed record SoakResult(int Steps, IReadOnlyList<(int Step, MemorySnapshot Memory)> Samples);

/// <summary>
/// Measures guided steps: runs warm-up plus K steps of a strategy at a fixed x_t and timestep (device-synchronised
/// wall time per step), and reads the passes from the step traces. The library side of <c>zmagic bench</c> and of the
/// benchmark suite.
/// </summary>
public static class StepBenchmark
{
    internal static readonly JsonSerializerOptions JsonIndented = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    internal static readonly JsonSerializerOptions JsonCompact = new(JsonIndented) { WriteIndented = false };

    /// <summary>Waits for queued device work (CUDA) so that a wall-clock reading covers it; no-op on the CPU.</summary>
    public static void Synchronize(Device? device)
    {
        if (device is not null && device.type == DeviceType.CUDA) torch.cuda.synchronize(device);
    }

    /// <summary>Parses "cpu", "cuda" or "cuda:N".</summary>
    /// <exception cref="ArgumentException">Another string, or CUDA asked for where the TorchSharp backend has none.</exception>
    public static Device ParseDevice(string device)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(device);
        var d = device.Trim().ToLowerInvariant();
        if (d == "cpu") return torch.CPU;
        if (d == "cuda" || d.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
                throw new ArgumentException($"Device '{device}' needs a CUDA TorchSharp backend (e.g. the libtorch-cuda-12.8-linux-x64 package) and a GPU; this process has none.", nameof(device));
            if (d == "cuda") return torch.CUDA;
            if (!int.TryParse(d.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out int index) || index >= torch.cuda.device_count())
                throw new ArgumentException($"Device '{device}': expected cuda:N with N below {torch.cuda.device_count()}.", nameof(device));
            return torch.device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"Unknown device '{device}'; expected cpu, cuda or cuda:N.", nameof(device));
    }

    /// <summary>Current process memory.</summary>
    public static MemorySnapshot Memory()
    {
        double managed = GC.GetTotalMemory(false) / 1048576.0;
        double rss = double.NaN, hwm = double.NaN;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kb(line) / 1024.0;
                else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = Kb(line) / 1024.0;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        if (double.IsNaN(rss) || double.IsNaN(hwm))
        {
            using var p = Process.GetCurrentProcess();
            rss = p.WorkingSet64 / 1048576.0;
            hwm = p.PeakWorkingSet64 / 1048576.0;
        }
        return new MemorySnapshot(managed, rss, hwm);
    }

    private static double Kb(string line) =>
        double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);

    /// <summary>Measures <paramref name="strategy"/> with <paramref name="combiner"/> on <paramref name="conditions"/>.</summary>
    public static StepBenchmarkResult Run(IDenoiser denoiser, IReadOnlyList<IGuidanceCondition> conditions, IGuidanceStrategy strategy,
        IGradientCombiner combiner, StepBenchmarkOptions? options = null, string? label = null)
    {
        var results = Compare(denoiser, new[] { new StepBenchmarkCase(label ?? $"{strategy.Name}/{combiner.Name}/{conditions.Count}", strategy, combiner, conditions) }, options);
        return results[0];
    }

    /// <summary>
    /// Measures several cases side by side: after the warm-up of every case, rounds run one step of each case in
    /// turn (K rounds), so that background load drifts affect all cases alike; ratios of the medians are then fair.
    /// </summary>
    public static IReadOnlyList<StepBenchmarkResult> Compare(IDenoiser denoiser, IReadOnlyList<StepBenchmarkCase> cases,
        StepBenchmarkOptions? options = null, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(denoiser);
        ArgumentNullException.ThrowIfNull(cases);
        var o = options ?? new StepBenchmarkOptions();
        if (o.Steps < 1) throw new ArgumentException($"StepBenchmarkOptions.Steps must be at least 1; got {o.Steps}.", nameof(options));
        if (o.Warmup < 0) throw new ArgumentException($"StepBenchmarkOptions.Warmup must not be negative; got {o.Warmup}.", nameof(options));
        if (o.Timestep - o.Stride < -1 || o.Timestep >= denoiser.Schedule.TrainSteps)
            throw new ArgumentException($"Timestep {o.Timestep} with stride {o.Stride} is outside the schedule's 0..{denoiser.Schedule.TrainSteps - 1}.", nameof(options));
        var device = o.Device ?? torch.CPU;
        var shape = new long[] { o.BatchSize, denoiser.Channels, denoiser.SampleSize, denoiser.SampleSize };

        using var inputs = torch.NewDisposeScope();
        var gen = new TorchSharp.torch.Generator((ulong)o.Seed);
        var x = torch.randn(shape, generator: gen).to(o.DType, device);
        var noise = torch.randn(shape, generator: gen).to(o.DType, device);
        var tt = torch.full(o.BatchSize, (float)o.Timestep, ScalarType.Float32, device);
        var pair = new TimestepPair(o.Timestep, o.Timestep - o.Stride);
        double a = denoiser.Schedule.AlphaBar(pair.T), an = denoiser.Schedule.AlphaBar(pair.Next);

        var times = cases.Select(_ => new List<double>()).ToArray();
        var traces = cases.Select(_ => new List<StepTrace>()).ToArray();

        void One(int c, bool record)
        {
            var cs = cases[c];
            var trace = new StepTrace { Index = 0, T = pair.T, Next = pair.Next };
            Synchronize(device);
            var sw = Stopwatch.StartNew();
            using (torch.NewDisposeScope())
            {
                var step = new GuidedStep
                {
                    Denoiser = denoiser, X = x, TimestepTensor = tt, Timesteps = pair, AlphaBar = a, AlphaBarNext = an,
                    Sampler = o.SamplerStep, Noise = o.SamplerStep.UsesNoise ? noise : null, Conditions = cs.Conditions,
                    Combiner = cs.Combiner, Trace = trace,
                };
                var next = cs.Strategy.Step(step);
                Synchronize(device);
                trace.Timings.TotalMs = sw.Elapsed.TotalMilliseconds;
                if (!next.shape.SequenceEqual(shape))
                    throw new InvalidOperationException($"Strategy '{cs.Strategy.Name}' returned shape [{string.Join(", ", next.shape)}]; expected [{string.Join(", ", shape)}].");
            }
            if (!record) return;
            times[c].Add(trace.Timings.TotalMs);
            traces[c].Add(trace);
            log?.Invoke(string.Create(CultureInfo.InvariantCulture, $"{cs.Label}: {trace.Timings.TotalMs:F1} ms (fwd {trace.Passes.DenoiserForwards}, bwd {trace.Passes.DenoiserBackwards}, vjp {trace.Passes.Vjps}, items {trace.Passes.DenoiserForwardItems}/{trace.Passes.BackwardItems}; ms fwd {trace.Timings.ForwardMs:F0}, bwd {trace.Timings.BackwardMs:F0}, vjp {trace.Timings.VjpMs:F0}, enc {trace.Timings.EncoderMs:F0}, comb {trace.Timings.CombinerMs:F0})"));
        }

        for (int w = 0; w < o.Warmup; w++)
            for (int c = 0; c < cases.Count; c++) One(c, record: false);
        for (int k = 0; k < o.Steps; k++)
            for (int c = 0; c < cases.Count; c++) One(c, record: true);

        var mem = Memory();
        var results = new List<StepBenchmarkResult>();
        for (int c = 0; c < cases.Count; c++)
        {
            var ms = times[c].ToArray();
            double median = Median(ms);
            double combinerMedian = Median(traces[c].Select(t => t.Timings.CombinerMs).ToArray());
            var last = traces[c][^1].Passes;
            results.Add(new StepBenchmarkResult
            {
                Label = cases[c].Label,
                Method = cases[c].Strategy.Name,
                Combiner = cases[c].Combiner.Name,
                Conditions = cases[c].Conditions.Count,
                Steps = o.Steps,
                Device = device.ToString(),
                SampleShape = shape,
                MsPerStepMedian = median,
                MsPerStepMin = ms.Min(),
                MsPerStepMax = ms.Max(),
                MsPerStepMad = Median(ms.Select(v => Math.Abs(v - median)).ToArray()),
                MsPerStep = ms,
                ForwardPassesPerStep = last.DenoiserForwards,
                BackwardPassesPerStep = last.DenoiserBackwards + last.Vjps,
                VjpsPerStep = last.Vjps,
                EncoderCallsPerStep = last.EncoderCalls,
                ForwardItemsPerStep = last.DenoiserForwardItems,
                BackwardItemsPerStep = last.BackwardItems,
                CombinerMsMedian = combinerMedian,
                ForwardMsMedian = Median(traces[c].Select(t => t.Timings.ForwardMs).ToArray()),
                BackwardMsMedian = Median(traces[c].Select(t => t.Timings.BackwardMs).ToArray()),
                VjpMsMedian = Median(traces[c].Select(t => t.Timings.VjpMs).ToArray()),
                EncoderMsMedian = Median(traces[c].Select(t => t.Timings.EncoderMs).ToArray()),
                CombinerFraction = median > 0 ? combinerMedian / median : 0,
                PeakMemoryMb = mem.PeakResidentMb,
                ManagedMemoryMb = mem.ManagedMb,
                ResidentMemoryMb = mem.ResidentMb,
            });
        }
        return results;
    }

    /// <summary>
    /// Runs <paramref name="steps"/> steps of one case and samples memory (after a full garbage collection) every
    /// <paramref name="every"/> steps: flat managed and resident figures mean no per-step leak.
    /// </summary>
    public static SoakResult Soak(IDenoiser denoiser, StepBenchmarkCase @case, int steps, int every, StepBenchmarkOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(@case);
        if (steps < 1 || every < 1) throw new ArgumentException($"Soak needs steps >= 1 and every >= 1; got {steps}, {every}.");
        var o = (options ?? new StepBenchmarkOptions()) with { Warmup = 0, Steps = 1 };
        var samples = new List<(int, MemorySnapshot)>();
        for (int s = 0; s < steps; s++)
        {
            Compare(denoiser, new[] { @case }, o);
            if (s % every == 0 || s + 1 == steps)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                GC.Collect();
                samples.Add((s + 1, Memory()));
            }
        }
        return new SoakResult(steps, samples);
    }

    /// <summary>The median of <paramref name="values"/> (mean of the middle two for an even count); NaN when empty.</summary>
    public static double Median(IEnumerable<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var s = values.Order().ToArray();
        if (s.Length == 0) return double.NaN;
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }
}
