using System.Globalization;
using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic generate</c>: guided generation with any preset and any set of conditions.</summary>
public static class GenerateCommand
{
    /// <summary>Help text.</summary>
    public static string Help => $"""
        Usage: zmagic generate --preset NAME [--weights FILE] --condition SPEC [--condition SPEC ...]
                               [--method vanilla|zmagic|unguided] [--combiner sum|cagrad] [--cagrad-c C]
                               [--steps K] [--seed S] [--samples N] [--batch B] [--device cpu|cuda|cuda:N]
                               [--threads T] [--out DIR] [--quiet]

        Samples images from a backbone preset (zmagic models) steered by conditions. Conditions are applied in the
        order given (Z-Magic conditions sequentially: the first one proposes the step). Writes DIR/sample_NNN.png, DIR/grid.png,
        DIR/trace.csv and DIR/trace.json; each file appears complete or not at all.

        Conditions (--condition NAME:key=value,...):
        {string.Join(Environment.NewLine, ConditionRegistry.All.Select(k => "  " + k.Help))}

        Options:
          --preset NAME       backbone preset (required)
          --weights FILE      checkpoint (.safetensors, .pt, .pth, .ckpt); default: the preset's embedded weights
          --method M          vanilla (independent, FreeDoM-style), zmagic (sequential), unguided (default zmagic)
          --combiner C        sum or cagrad (default sum; cagrad needs a guided method)
          --cagrad-c C        CAGrad's c (default 0.5)
          --steps K           sampler steps (default 50)
          --seed S            run seed (default 0); sample i depends only on (S, i)
          --samples N         number of images (default 8)
          --batch B           images per sampler call (default 8, or fewer when 8 do not fit in memory)
          --device D          cpu, cuda or cuda:N (default cpu)
          --out DIR           output folder (default zmagic-out)

        Examples:
          zmagic generate --preset digits --condition digit:class=7 --condition thickness:ink=0.2,scale=2 --method zmagic --combiner cagrad
          zmagic generate --preset digits --weights my-prior.safetensors --condition style:ref=ref.png --method vanilla --samples 16

        {RecipeArgs.Help}
        """;

    /// <summary>Runs the command.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (RecipeArgs.Handles(args))
        {
            var recipe = RecipeArgs.Parse(args, out bool help);
            if (help) { stdout.WriteLine(Help); return ExitCodes.Ok; }
            return RecipeRunner.Run(recipe, stdout, stderr, ct);
        }
        if (SdGenerateCommand.Handles(args)) return SdGenerateCommand.Run(args, stdout, stderr, ct);
        var p = ParsedArgs.Parse(args,
            new[] { "preset", "weights", "condition", "method", "combiner", "cagrad-c", "steps", "seed", "samples", "batch", "device", "threads", "out" },
            new[] { "quiet", "random-weights" });
        if (p.Help) { stdout.WriteLine(Help); return ExitCodes.Ok; }
        if (p.Positionals.Count > 0) throw new UsageException($"Unexpected argument '{p.Positionals[0]}'.");
        var preset = Presets.Get(p.String("preset") ?? throw new UsageException("--preset is required (zmagic models lists them)."));
        string? weights = p.String("weights");
        bool random = p.Flag("random-weights");
        if (weights is not null && random) throw new UsageException("--weights and --random-weights contradict each other; give one.");
        string method = p.Choice("method", "zmagic", "vanilla", "zmagic", "unguided");
        string combinerName = p.Choice("combiner", "sum", "sum", "cagrad");
        double c = p.Double("cagrad-c", 0.5);
        if (p.Has("cagrad-c") && combinerName != "cagrad") throw new UsageException("--cagrad-c only applies with --combiner cagrad.");
        if (!(c >= 0)) throw new UsageException($"--cagrad-c must be non-negative; got {c}.");
        var specs = p.All("condition").Select(ConditionSpec.Parse).ToList();
        if (method == "unguided" && specs.Count > 0) throw new UsageException("--method unguided ignores conditions; drop --condition or choose vanilla/zmagic.");
        if (method == "unguided" && combinerName != "sum") throw new UsageException("--combiner cagrad needs a guided method (vanilla or zmagic).");
        if (method != "unguided" && specs.Count == 0) throw new UsageException($"--method {method} needs at least one --condition.");
        int trainSteps = TrainSteps(preset);
        int steps = p.Int("steps", 50, 1, trainSteps);
        long seed = p.Long("seed", 0);
        int samples = p.Int("samples", 8, 1, 100_000);
        // Without --batch, the default of 8 shrinks to what fits in memory; a --batch that cannot fit is an error.
        int batch = p.Has("batch") ? p.Int("batch", 8, 1, 4096) : FittingBatch(preset, 8);
        CheckMemory(preset, Math.Min(batch, samples));
        var device = ParseDevice(p.String("device") ?? "cpu");
        App.SetThreads(p.Int("threads", 2, 1, 256));
        if (weights is not null) RequireFile(weights, "--weights");
        // The output folder is checked (and its staging folder made) before anything is loaded or sampled.
        using var run = RunFolder.Prepare(p.String("out") ?? "zmagic-out");

        using var resources = new ConditionResources();
        // Conditions first: a bad condition or reference image fails fast, before a large checkpoint is read.
        var conditions = ConditionRegistry.Build(specs, new ConditionContext(preset.Channels, preset.Size, device, resources));
        var denoiser = Presets.Load(preset, weights, random, device);
        try
        {
            if (device.type != DeviceType.CPU && specs.Count > 0) resources.Guide.to(device);
            IGuidanceStrategy strategy = method switch
            {
                "vanilla" => new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }),
                "zmagic" => new ZMagicStrategy(new ZMagicOptions()),
                _ => UnguidedStrategy.Instance,
            };
            IGradientCombiner combiner = combinerName == "cagrad" ? new CAGradCombiner(c) : SumCombiner.Instance;
            var sampler = new ConditionalSampler(denoiser);
            var all = new List<Tensor>();
            var trace = new SamplingTrace();
            int done = 0, total = ((samples + batch - 1) / batch) * steps;
            bool quiet = p.Flag("quiet");
            var bar = new Demo.TextProgressBar(quiet ? null : stderr, total);
            for (int first = 0; first < samples; first += batch)
            {
                int n = Math.Min(batch, samples - first);
                var options = new SamplerOptions { Steps = steps, Seed = seed, BatchSize = n, FirstItem = first, Strategy = strategy, Combiner = combiner, Device = device };
                using var result = sampler.Sample(conditions, options, new Demo.SyncProgress<SamplingProgress>(_ => bar.Advance(method)), ct);
                all.Add(result.Images.detach().to(torch.CPU).clone());
                if (first == 0) { trace = result.Trace; }
                else trace.Steps.AddRange(result.Trace.Steps);
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
            run.Publish(ct);
            stdout.WriteLine($"Wrote {samples} images, grid.png, trace.csv and trace.json to {Terminal.Escape(run.Target)}.");
            return ExitCodes.Ok;
        }
        finally
        {
            if (denoiser is IDisposable d) d.Dispose();
        }
    }

    /// <summary>The preset's training timesteps: more sampler steps than that cannot be taken.</summary>
    internal static int TrainSteps(BackbonePreset preset) =>
        preset.Config is ZMagic.Models.Ddpm.DdpmUNetConfig ddpm ? ddpm.NumDiffusionTimesteps : 1000;

    /// <summary>The largest power of two up to <paramref name="max"/> whose guided step fits (1 at least).</summary>
    private static int FittingBatch(BackbonePreset preset, int max)
    {
        if (preset.Config is not ZMagic.Models.Ddpm.DdpmUNetConfig ddpm) return max;
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
