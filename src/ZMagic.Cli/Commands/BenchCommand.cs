using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using TorchSharp;
using ZMagic.Cli.CommandLine;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Benchmarking;
using ZMagic.Demo.Digits;
using static TorchSharp.torch;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic bench</c>: times guided sampler steps and prints one JSON object.</summary>
public static class BenchCommand
{
    private const string Summary = "Time guided steps (JSON)";

    private const string Details = """
        METHOD: vanilla, zmagic (exact), unguided, or any other benchmark method: zmagic-full, zmagic-firstorder,
        zmagic-reuse, zmagic-firstorder-reuse, vanilla-percondition, vanilla-batched, zmagic-percondition,
        zmagic-batched, zmagic-full-percondition (docs/performance.md explains each).

        Runs K guided sampler steps (after W warm-up steps) and prints one JSON object: ms_per_step_median,
        ms_per_step_p10/p90, forward_passes_per_step, backward_passes_per_step (backwards + VJPs), the median time per
        step in forwards, backwards and VJPs (forward_ms_median, backward_ms_median, vjp_ms_median), peak_memory_mb.
        Conditions: on the digits preset up to 3 are the digit conditions (class, thickness, style); otherwise (and
        beyond 3) cheap quadratic toy energies, so that the denoiser's passes dominate as in the reference timings.
        """;

    private const string Examples = """
        Example:
          zmagic bench --preset digits --method zmagic --combiner cagrad --conditions 3 --steps 10
        """;

    /// <summary>Every option of <c>zmagic bench</c>: declared here once (help, default, checks), read in <see cref="Run"/>.</summary>
    private sealed class Options(Command c)
    {
        public readonly Option<string> Preset = c.Declare(CommonOptions.Preset());
        public readonly Option<string?> Weights = c.Declare(CliOptions.Text("--weights",
            "checkpoint; default: the preset's embedded weights, else random weights", null, "FILE", "-w"));
        public readonly Option<bool> RandomWeights = c.Declare(CliOptions.Flag("--random-weights", "random (seeded) weights instead of a checkpoint"));
        public readonly Option<string> Method = c.Declare(CliOptions.Choice("--method", "the guidance method (see below)", "vanilla", GuidanceMethods.Methods.ToArray(), "METHOD", "-m"));
        public readonly Option<string> Combiner = c.Declare(CliOptions.Choice("--combiner", "how task gradients combine", "sum", GuidanceMethods.Combiners.ToArray()));
        public readonly Option<int> Conditions = c.Declare(CliOptions.Int("--conditions", "number of conditions", 2, 0, 16, "N"));
        public readonly Option<int> Steps = c.Declare(CliOptions.Int("--steps", "timed sampler steps", 5, 1, 100_000, "K"));
        public readonly Option<int> Warmup = c.Declare(CliOptions.Int("--warmup", "untimed warm-up steps before them", 1, 0, 1000, "W"));
        public readonly Option<int> Batch = c.Declare(CliOptions.Int("--batch", "images per step", 1, 1, 4096, "B"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(0));
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads());
    }

    internal static Command Create(CliContext context)
    {
        var command = new Command("bench", Summary).WithHelp(Details, Examples);
        var options = new Options(command);
        command.SetAction(r => Run(r, options, context));
        return command;
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        var (stdout, ct) = (context.Out, context.Cancellation);
        context.CheckNumerics();
        var preset = Presets.Get(p.GetValue(o.Preset)!);
        string? weights = p.GetValue(o.Weights);
        bool random = p.GetValue(o.RandomWeights);
        if (weights is not null && random) throw new UsageException("--weights and --random-weights contradict each other; give one.");
        string method = p.GetValue(o.Method)!;
        string combinerName = p.GetValue(o.Combiner)!;
        int n = p.GetValue(o.Conditions);
        if (method != "unguided" && n == 0) throw new UsageException($"--method {method} needs --conditions of at least 1.");
        int steps = p.GetValue(o.Steps), warmup = p.GetValue(o.Warmup), batch = p.GetValue(o.Batch);
        App.SetThreads(p.GetValue(o.Threads));
        GenerateCommand.CheckMemory(preset, batch);
        if (weights is not null) GenerateCommand.RequireFile(weights, "--weights");

        var denoiser = Presets.Load(preset, weights, random || (weights is null && preset.Embedded is null), torch.CPU);
        using var resources = new ConditionResources();
        try
        {
            var conditions = new List<IGuidanceCondition>();
            bool digits = denoiser.Channels == 1 && denoiser.SampleSize == MnistData.Size && DigitsWeights.HasEmbedded(DigitsWeights.GuideResource);
            for (int k = 0; k < n; k++)
            {
                var schedule = new GuidanceSchedule(new SqrtAlphaBarStepSize(0.1));
                if (digits && k == 0) conditions.Add(new DigitClassCondition(resources.Guide, 3, schedule));
                else if (digits && k == 1) conditions.Add(new StrokeThicknessCondition(0.17, 0.025, schedule));
                else if (digits && k == 2)
                {
                    var (img, lab) = DigitsModels.LoadHeldOut();
                    using var reference = img[0].unsqueeze(0).clone();
                    conditions.Add(new DigitStyleCondition(resources.Guide, reference, schedule));
                    img.Dispose(); lab.Dispose();
                }
                else conditions.Add(new ToyQuadraticCondition($"toy{k}", k, preset.Channels, preset.Size, schedule));
            }
            IGuidanceStrategy strategy = GuidanceMethods.Strategy(method);
            IGradientCombiner combiner = GuidanceMethods.Combiner(combinerName);
            // Steps are spread over the whole trajectory; warm-up steps are the first ones and are not timed.
            var options = new SamplerOptions { Steps = warmup + steps, Seed = p.GetValue(o.Seed), BatchSize = batch, Strategy = strategy, Combiner = combiner };
            using var result = new ConditionalSampler(denoiser).Sample(method == "unguided" ? Array.Empty<IGuidanceCondition>() : conditions, options, null, ct);
            // FreeDoM's uniform spacing can give one timestep more than asked for (range(0, T, T // n)); time exactly K.
            var timed = result.Trace.Steps.Skip(warmup).Take(steps).ToList();
            var ms = timed.Select(s => s.Timings.TotalMs).Order().ToArray();
            double Q(double q) => ms[(int)Math.Round(q * (ms.Length - 1))];
            var json = new JsonObject
            {
                ["preset"] = preset.Name,
                ["method"] = method,
                ["combiner"] = combiner.Name,
                ["conditions"] = n,
                ["steps"] = ms.Length,
                ["batch"] = batch,
                ["threads"] = torch.get_num_threads(),
                ["ms_per_step_median"] = Q(0.5),
                ["ms_per_step_p10"] = Q(0.1),
                ["ms_per_step_p90"] = Q(0.9),
                ["forward_passes_per_step"] = timed.Average(s => s.Passes.DenoiserForwards),
                ["backward_passes_per_step"] = timed.Average(s => s.Passes.DenoiserBackwards + s.Passes.Vjps),
                ["vjps_per_step"] = timed.Average(s => s.Passes.Vjps),
                ["encoder_calls_per_step"] = timed.Average(s => s.Passes.EncoderCalls),
                ["forward_ms_median"] = StepBenchmark.Median(timed.Select(s => s.Timings.ForwardMs)),
                ["backward_ms_median"] = StepBenchmark.Median(timed.Select(s => s.Timings.BackwardMs)),
                ["vjp_ms_median"] = StepBenchmark.Median(timed.Select(s => s.Timings.VjpMs)),
                ["peak_memory_mb"] = Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024.0),
            };
            stdout.WriteLine(json.ToJsonString());
            return ExitCodes.Ok;
        }
        finally
        {
            if (denoiser is IDisposable d) d.Dispose();
        }
    }
}

/// <summary>A cheap quadratic energy <c>mean((x0 - target)^2)</c> against a fixed pseudo-random target, for timing.</summary>
internal sealed class ToyQuadraticCondition : IGuidanceCondition, IDisposable
{
    private readonly Tensor _target;

    public ToyQuadraticCondition(string name, int index, int channels, int size, GuidanceSchedule schedule)
    {
        Name = name;
        Schedule = schedule;
        using var g = new Generator((ulong)(1000 + index));
        _target = torch.rand(new long[] { 1, channels, size, size }, generator: g) * 2 - 1;
    }

    public string Name { get; }

    public GuidanceSchedule Schedule { get; }

    public Tensor Energy(Tensor x0) => (x0 - _target).square().flatten(1).mean(new long[] { 1 });

    public void Dispose() => _target.Dispose();
}
