using System.CommandLine;
using ZMagic.Cli.CommandLine;
using System.Globalization;
using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic generate</c>: guided generation with any preset and any set of conditions.</summary>
public static class GenerateCommand
{
    private const string Summary = "Generate images with a backbone checkpoint and any set of conditions";

    // Built when help is shown: the condition kinds are a registry that can grow.
    private static string Details => $"""
        Samples images from a backbone preset (zmagic models) steered by conditions. Conditions are applied in the
        order given (Z-Magic conditions sequentially: the first one proposes the step; --order auto picks the first
        condition per sample by a short trial of each). Writes DIR/sample_NNN.png,
        DIR/grid.png, DIR/trace.csv and DIR/trace.json; each file appears complete or not at all.
        Stable Diffusion 1.x has options of its own: zmagic generate --preset sd15 --help. The paper's recipes and the
        face and text conditions too: zmagic generate --recipe NAME --help (docs/recipes.md).

        Conditions (--condition NAME:key=value,...):
        {string.Join(Environment.NewLine, ConditionRegistry.All.Select(k => "  " + k.Help))}
        """;

    private const string Examples = """
        Examples:
          zmagic generate --preset digits --condition digit:class=7 --condition thickness:ink=0.2,scale=2 --method zmagic --combiner cagrad
          zmagic generate --preset digits --weights my-prior.safetensors --condition style:ref=ref.png --method vanilla --samples 16
        """;

    /// <summary>The guidance methods of <c>generate</c>.</summary>
    internal static readonly string[] Methods = { "vanilla", "zmagic", "unguided" };

    /// <summary>Every option of <c>zmagic generate</c>: declared here once (help, default, checks), read in <see cref="Run"/>.</summary>
    private sealed class Options(Command c)
    {
        public readonly Option<string> Preset = c.Declare(CommonOptions.Preset());
        public readonly Option<string?> Weights = c.Declare(CliOptions.Text("--weights",
            "checkpoint (.safetensors, .pt, .pth, .ckpt); default: the preset's embedded weights", null, "FILE", "-w"));
        public readonly Option<bool> RandomWeights = c.Declare(CliOptions.Flag("--random-weights", "random (seeded) weights instead of a checkpoint: for trying the pipeline"));
        public readonly Option<string[]> Condition = c.Declare(CliOptions.Repeatable("--condition",
            "a condition NAME:key=value,... (repeatable, applied in the order given; default: none, which only --method unguided takes)", "SPEC", "-c"));
        public readonly Option<string> Method = c.Declare(CliOptions.Choice("--method",
            "vanilla (independent, FreeDoM-style), zmagic (sequential) or unguided", "zmagic", Methods, null, "-m"));
        public readonly Option<string> Combiner = c.Declare(CliOptions.Choice("--combiner", "how task gradients combine (cagrad needs a guided method)", "sum", new[] { "sum", "cagrad" }));
        public readonly Option<double> CAGradC = c.Declare(CliOptions.Double("--cagrad-c", "CAGrad's c (only with --combiner cagrad)", 0.5, "C"));
        public readonly Option<int> Steps = c.Declare(CliOptions.Int("--steps", "sampler steps (at most the preset's training timesteps)", 50, 1, 1000, "K"));
        public readonly Option<string> Order = c.Declare(CliOptions.Choice("--order",
            "condition order of zmagic: as given, or auto (per sample, the order whose first --order-steps steps end at the lowest summed energy; writes order.csv)",
            "given", new[] { "given", "auto" }));
        public readonly Option<int> OrderSteps = c.Declare(CliOptions.Int("--order-steps", "steps each candidate order is tried for (only with --order auto)", 3, 1, 1000, "K"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(0, "run seed; sample i depends only on (S, i)"));
        public readonly Option<int> Samples = c.Declare(CommonOptions.Samples(8, 100_000));
        public readonly Option<int> Batch = c.Declare(CliOptions.Int("--batch", "images per sampler call; without --batch, fewer when 8 do not fit in memory (1 on adm-256-uncond)", 8, 1, 4096, "B"));
        public readonly Option<string> Device = c.Declare(CommonOptions.Device());
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads());
        public readonly Option<string?> Out = c.Declare(CommonOptions.Out("zmagic-out"));
        public readonly Option<bool> Quiet = c.Declare(CommonOptions.Quiet());
    }

    internal static Command Create(CliContext context)
    {
        var command = new Command("generate", Summary);
        var options = new Options(command);
        command.SetAction(r => Run(r, options, context));
        // Details are built now, after the condition kinds have registered.
        return command.WithHelp(Details, Examples);
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        var (stdout, stderr, ct) = (context.Out, context.Err, context.Cancellation);
        context.CheckNumerics();
        var preset = Presets.Get(p.GetValue(o.Preset)!);
        string? weights = p.GetValue(o.Weights);
        bool random = p.GetValue(o.RandomWeights);
        if (weights is not null && random) throw new UsageException("--weights and --random-weights contradict each other; give one.");
        string method = p.GetValue(o.Method)!;
        string combinerName = p.GetValue(o.Combiner)!;
        double c = p.GetValue(o.CAGradC);
        if (p.IsGiven(o.CAGradC) && combinerName != "cagrad") throw new UsageException("--cagrad-c only applies with --combiner cagrad.");
        if (!(c >= 0)) throw new UsageException($"--cagrad-c must be non-negative; got {c}.");
        var specs = (p.GetValue(o.Condition) ?? Array.Empty<string>()).Select(ConditionSpec.Parse).ToList();
        if (method == "unguided" && specs.Count > 0) throw new UsageException("--method unguided ignores conditions; drop --condition or choose vanilla/zmagic.");
        if (method == "unguided" && combinerName != "sum") throw new UsageException("--combiner cagrad needs a guided method (vanilla or zmagic).");
        if (method != "unguided" && specs.Count == 0) throw new UsageException($"--method {method} needs at least one --condition.");
        int trainSteps = TrainSteps(preset);
        int steps = CliOptions.InRange(p.GetValue(o.Steps), 1, trainSteps, "--steps");
        bool autoOrder = p.GetValue(o.Order) == "auto";
        if (autoOrder && method != "zmagic") throw new UsageException($"--order auto needs --method zmagic: {method} does not depend on the order of the conditions.");
        if (p.IsGiven(o.OrderSteps) && !autoOrder) throw new UsageException("--order-steps only applies with --order auto.");
        var orderOptions = new ConditionOrderOptions { TrialSteps = p.GetValue(o.OrderSteps) };
        long seed = p.GetValue(o.Seed);
        int samples = p.GetValue(o.Samples);
        // Without --batch, the default of 8 shrinks to what fits in memory; a --batch that cannot fit is an error.
        int batch = p.IsGiven(o.Batch) ? p.GetValue(o.Batch) : FittingBatch(preset, p.GetValue(o.Batch));
        CheckMemory(preset, Math.Min(batch, samples));
        var device = ParseDevice(p.GetValue(o.Device)!);
        App.SetThreads(p.GetValue(o.Threads));
        if (weights is not null) RequireFile(weights, "--weights");
        // The output folder is checked (and its staging folder made) before anything is loaded or sampled.
        using var run = RunFolder.Prepare(p.GetValue(o.Out)!);

        using var resources = new ConditionResources();
        // Conditions first: a bad condition or reference image fails fast, before a large checkpoint is read.
        var conditions = ConditionRegistry.Build(specs, new ConditionContext(preset.Channels, preset.Size, device, resources));
        var denoiser = Presets.Load(preset, weights, random, device);
        try
        {
            if (device.type != DeviceType.CPU && specs.Count > 0) resources.Guide.to(device);
            // Vanilla with per-condition gradients, so that the trace carries every condition's gradient norm and cosines.
            IGuidanceStrategy strategy = GuidanceMethods.Strategy(method == "vanilla" ? "vanilla-percondition" : method);
            IGradientCombiner combiner = GuidanceMethods.Combiner(combinerName, c);
            var sampler = new ConditionalSampler(denoiser);
            var all = new List<Tensor>();
            var trace = new SamplingTrace();
            var orderRows = new List<string>();
            int candidates = autoOrder ? ConditionOrder.Candidates(conditions.Count, allPermutations: false).Count : 0;
            int done = 0, total = ((samples + batch - 1) / batch) * (steps + candidates * Math.Min(orderOptions.TrialSteps, steps));
            bool quiet = p.GetValue(o.Quiet);
            var bar = new Demo.TextProgressBar(quiet ? null : stderr, total);
            for (int first = 0; first < samples; first += batch)
            {
                int n = Math.Min(batch, samples - first);
                var options = new SamplerOptions { Steps = steps, Seed = seed, BatchSize = n, FirstItem = first, Strategy = strategy, Combiner = combiner, Device = device };
                var progress = new Demo.SyncProgress<SamplingProgress>(_ => bar.Advance(method));
                if (autoOrder)
                {
                    using var ordered = sampler.SampleWithBestOrder(conditions, options, orderOptions, progress, ct);
                    all.Add(ordered.Images.detach().to(torch.CPU).clone());
                    foreach (var r in ordered.Runs)
                        if (trace.Steps.Count == 0) trace = r.Trace;
                        else trace.Steps.AddRange(r.Trace.Steps);
                    orderRows.AddRange(OrderRows(ordered, conditions, first));
                }
                else
                {
                    using var result = sampler.Sample(conditions, options, progress, ct);
                    all.Add(result.Images.detach().to(torch.CPU).clone());
                    if (first == 0) { trace = result.Trace; }
                    else trace.Steps.AddRange(result.Trace.Steps);
                }
                done += n;
            }
            bar.Done();
            using var images = torch.cat(all, 0);
            foreach (var t in all) t.Dispose();
            if (!quiet) stderr.WriteLine($"Writing {samples} image(s) to {Terminal.Escape(run.Target)}...");
            for (int i = 0; i < samples; i++)
            {
                ct.ThrowIfCancellationRequested();
                using var one = images[i].unsqueeze(0);
                CliImages.WriteGrid(one, run.File(string.Create(CultureInfo.InvariantCulture, $"sample_{i:D3}.png")), 1, gap: 0, ct: ct);
            }
            CliImages.WriteGrid(images, run.File("grid.png"), Math.Min(8, samples), scale: images.shape[2] < 64 ? 3 : 1, ct: ct);
            CliImages.WriteText(run.File("trace.csv"), trace.ToCsv(), ct);
            CliImages.WriteText(run.File("trace.json"), trace.ToJson(), ct);
            if (autoOrder) CliImages.WriteText(run.File("order.csv"), OrderHeader(conditions) + string.Concat(orderRows), ct);
            run.Publish(ct);
            stdout.WriteLine($"Wrote {samples} images, grid.png, trace.csv{(autoOrder ? ", order.csv" : "")} and trace.json to {Terminal.Escape(run.Target)}.");
            return ExitCodes.Ok;
        }
        finally
        {
            if (denoiser is IDisposable d) d.Dispose();
        }
    }

    /// <summary>order.csv's header: the sample, its chosen order, then the trial energy of every candidate order.</summary>
    private static string OrderHeader(IReadOnlyList<IGuidanceCondition> conditions) =>
        "sample,order," + string.Join(",", ConditionOrder.Candidates(conditions.Count, allPermutations: false)
            .Select(c => "energy:" + string.Join(">", c.Select(i => conditions[i].Name)))) + "\n";

    /// <summary>order.csv's rows for one batch.</summary>
    private static IEnumerable<string> OrderRows(OrderedSamplingResult r, IReadOnlyList<IGuidanceCondition> conditions, int first) =>
        r.Choice.Select((c, i) => string.Create(CultureInfo.InvariantCulture,
            $"{first + i},{string.Join(">", r.Candidates[c].Select(k => conditions[k].Name))},{string.Join(",", r.TrialEnergies.Select(e => e[i].ToString("R", CultureInfo.InvariantCulture)))}\n"));

    /// <summary>The preset's training timesteps: more sampler steps than that cannot be taken.</summary>
    internal static int TrainSteps(BackbonePreset preset) =>
        preset.Config is ZMagic.Models.Ddpm.DdpmUNetConfig ddpm ? ddpm.NumDiffusionTimesteps : 1000;

    /// <summary>The largest power of two up to <paramref name="max"/> whose guided step fits (1 at least).</summary>
    private static int FittingBatch(BackbonePreset preset, int max)
    {
        // No memory model for other architectures (ADM at 256: 550M parameters): one image unless --batch says more.
        if (preset.Config is not ZMagic.Models.Ddpm.DdpmUNetConfig ddpm) return 1;
        int b = max;
        while (b > 1 && MemoryBudget.DdpmBytes(ddpm, b) > 0.8 * MemoryBudget.Available) b /= 2;
        return b;
    }

    /// <summary>Refuses a batch whose guided step would not fit in memory (usage error naming the figures).</summary>
    internal static void CheckMemory(BackbonePreset preset, int batch)
    {
        if (preset.Config is not ZMagic.Models.Ddpm.DdpmUNetConfig ddpm) return;
        double need = MemoryBudget.DdpmBytes(ddpm, batch);
        long have = MemoryBudget.Available;
        if (need <= 0.8 * have) return;
        int fits = 1;
        while (fits < batch && MemoryBudget.DdpmBytes(ddpm, fits * 2) <= 0.8 * have) fits *= 2;
        throw new UsageException($"--batch {batch} on preset '{preset.Name}' needs about {MemoryBudget.Format(need)} for a guided step; " +
            $"this machine has {MemoryBudget.Format(have)} (80 % usable). " +
            (MemoryBudget.DdpmBytes(ddpm, 1) <= 0.8 * have ? $"Use --batch {fits} or less." : "Even one image does not fit: use a machine with more memory."));
    }

    /// <summary>Checks that an input file named by <paramref name="flag"/> is a regular file (exit 3 otherwise).</summary>
    internal static void RequireFile(string path, string flag)
    {
        try { ZMagic.Core.IO.RegularFile.Check(path, "the file"); }
        catch (FileNotFoundException) { throw new InputException($"{flag}: file '{path}' does not exist."); }
        catch (ZMagic.Core.IO.NotARegularFileException e) { throw new InputException($"{flag}: {e.Message}", e); }
    }

    /// <summary>Parses cpu, cuda or cuda:N, checking the backend is present.</summary>
    internal static Device ParseDevice(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t == "cpu") return torch.CPU;
        if (t == "cuda" || t.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
                throw new UsageException($"--device {text}: CUDA is not available (this build references the CPU libtorch backend; reference a CUDA backend package to use a GPU).");
            return torch.device(t);
        }
        throw new UsageException($"--device must be cpu, cuda or cuda:N; got '{text}'.");
    }
}
