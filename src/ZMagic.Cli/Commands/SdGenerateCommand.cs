using System.CommandLine;
using System.Globalization;
using ZMagic.Cli.CommandLine;
using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Encoders.Vgg;
using ZMagic.Guidance.StableDiffusion;
using ZMagic.Guidance.TextStyleContent;
using static TorchSharp.torch;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic generate --preset sd15</c>: Stable Diffusion with a prompt (CFG) plus style/content guidance.</summary>
public static class SdGenerateCommand
{
    /// <summary>The preset name that selects this command.</summary>
    public const string Preset = Presets.StableDiffusion;

    private const string Summary = "Generate images with Stable Diffusion 1.x (--preset sd15): a prompt plus style/content guidance";

    private const string Details = """
        Stable Diffusion 1.x in latent space: DDIM with the model's scheduler config and classifier-free guidance for the
        prompt; style (Gram matrices of VGG features) and content (normalised VGG relu2_2) are energies of the
        VAE-decoded estimate. Z-Magic takes the CFG step as the proposal, evaluates style and content there and pulls
        them back with one vector-Jacobian product each, combined per latent channel by CAGrad; vanilla (FreeDoM)
        sums the independent gradients. Writes DIR/sample_NNN.png, DIR/trace.csv and DIR/trace.json.
        """;

    private const string Examples = """
        Example:
          zmagic generate --preset sd15 --model ./stable-diffusion-v1-5 --prompt "cat wearing glasses" \
              --style starry.png --vgg vgg16-397923af.pth --method zmagic --steps 50 --out out
        """;

    /// <summary>Largest --size accepted at all (the memory check usually refuses less).</summary>
    public const int MaxSize = 2048;

    /// <summary>Every option of <c>zmagic generate --preset sd15</c>: declared here once (help, default, checks), read in <see cref="Run"/>.</summary>
    private sealed class Options(Command c)
    {
        public readonly Option<string> Preset = c.Declare(CommonOptions.Preset($"backbone preset: {SdGenerateCommand.Preset} for these options"));
        public readonly Option<string> Model = c.Declare(CliOptions.RequiredText("--model",
            "a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)", "DIR"));
        public readonly Option<string> Prompt = c.Declare(CliOptions.RequiredText("--prompt", "the prompt (at most 75 tokens)", "TEXT"));
        public readonly Option<string?> NegativePrompt = c.Declare(CliOptions.Text("--negative-prompt", "what to steer away from (default: none)", null, "TEXT"));
        public readonly Option<string?> Style = c.Declare(CliOptions.Text("--style", "style reference image (needs --vgg; default: none)", null, "IMG"));
        public readonly Option<string?> Content = c.Declare(CliOptions.Text("--content", "content reference image (needs --vgg; default: none)", null, "IMG"));
        public readonly Option<string?> Vgg = c.Declare(CliOptions.Text("--vgg",
            "torchvision vgg16 weights (vgg16-397923af.pth or a .safetensors with features.N.* keys; default: none)", null, "FILE"));
        public readonly Option<string> Method = c.Declare(CliOptions.Choice("--method", "zmagic or vanilla", "zmagic", new[] { "vanilla", "zmagic" }, null, "-m"));
        public readonly Option<string?> Combiner = c.Declare(CliOptions.OptionalChoice("--combiner",
            "cagrad (per latent channel) or sum (default: cagrad with zmagic, sum with vanilla)", new[] { "sum", "cagrad" }));
        public readonly Option<int> Steps = c.Declare(CliOptions.Int("--steps", "DDIM steps", 50, 1, 1000, "K"));
        public readonly Option<double> Cfg = c.Declare(CliOptions.Double("--cfg", "classifier-free guidance scale", 7.5, "S"));
        public readonly Option<double> GuidanceScale = c.Declare(CliOptions.Double("--guidance-scale",
            "step size as a fraction of the CFG correction's RMS (FreeDoM's)", 0.2, "F"));
        public readonly Option<int?> Size = c.Declare(CliOptions.OptionalInt("--size",
            $"image side, a multiple of 8 (default: the model's native size)", 8, MaxSize, "PX"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(0, "seed (sample i depends only on S and i)"));
        public readonly Option<int> Samples = c.Declare(CommonOptions.Samples(1, 10_000));
        public readonly Option<string> Device = c.Declare(CommonOptions.Device());
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads());
        public readonly Option<string?> Out = c.Declare(CommonOptions.Out("zmagic-out"));
        public readonly Option<bool> Quiet = c.Declare(CommonOptions.Quiet());
    }

    /// <summary>Whether the arguments select the SD preset.</summary>
    public static bool Handles(IReadOnlyList<string> args)
    {
        for (int i = 0; i < args.Count; i++)
        {
            if (args[i] is "--preset" or "-p" && i + 1 < args.Count) return string.Equals(args[i + 1], Preset, StringComparison.OrdinalIgnoreCase);
            foreach (var prefix in new[] { "--preset=", "--preset:", "-p=", "-p:" })
                if (args[i].StartsWith(prefix, StringComparison.Ordinal)) return string.Equals(args[i][prefix.Length..], Preset, StringComparison.OrdinalIgnoreCase);
        }
        return false;
    }

    /// <summary>The <c>generate</c> command with the Stable Diffusion options (chosen when the arguments say <c>--preset sd15</c>).</summary>
    internal static Command Create(CliContext context)
    {
        var command = new Command("generate", Summary).WithHelp(Details, Examples);
        var options = new Options(command);
        command.SetAction(r => Run(r, options, context));
        return command;
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        var (stdout, stderr, ct) = (context.Out, context.Err, context.Cancellation);
        context.CheckNumerics();
        string model = p.GetValue(o.Model)!;
        string prompt = p.GetValue(o.Prompt)!;
        string? style = p.GetValue(o.Style), content = p.GetValue(o.Content), vggPath = p.GetValue(o.Vgg);
        if ((style is not null || content is not null) && vggPath is null)
            throw new UsageException("--style and --content need --vgg FILE (torchvision vgg16 weights).");
        if (vggPath is not null && style is null && content is null) throw new UsageException("--vgg is only used with --style or --content.");
        string method = p.GetValue(o.Method)!;
        string combinerName = p.GetValue(o.Combiner) ?? (method == "zmagic" ? "cagrad" : "sum");
        int steps = p.GetValue(o.Steps);
        double cfg = p.GetValue(o.Cfg);
        double fraction = p.GetValue(o.GuidanceScale);
        int? size = p.GetValue(o.Size);
        if (size is int sz && sz % 8 != 0) throw new UsageException($"--size must be a multiple of 8 (the VAE's downsampling factor); got {sz}.");
        long seed = p.GetValue(o.Seed);
        int samples = p.GetValue(o.Samples);
        var device = GenerateCommand.ParseDevice(p.GetValue(o.Device)!);
        App.SetThreads(p.GetValue(o.Threads));
        string? negative = p.GetValue(o.NegativePrompt);
        if (!Directory.Exists(model)) throw new InputException($"--model '{model}' is not a folder (expected a diffusers Stable Diffusion folder).");
        if (style is not null) GenerateCommand.RequireFile(style, "--style");
        if (content is not null) GenerateCommand.RequireFile(content, "--content");
        if (vggPath is not null) GenerateCommand.RequireFile(vggPath, "--vgg");
        int nativeSize = NativeSize(model);
        int pixels = size ?? nativeSize;
        CheckMemory(model, pixels, guided: style is not null || content is not null, sizeGiven: size is not null);
        CheckPrompt(model, prompt, "--prompt");
        if (negative is not null) CheckPrompt(model, negative, "--negative-prompt");
        // The output folder is checked (and its staging folder made) before the model is loaded.
        using var run = RunFolder.Prepare(p.GetValue(o.Out)!);
        // References are read (through the hardened reader) before gigabytes of weights are loaded.
        using var styleRef = style is null ? null : CliImages.ReadReference(style, "--style", 3, pixels);
        using var contentRef = content is null ? null : CliImages.ReadReference(content, "--content", 3, pixels);

        StableDiffusionModel sd;
        try { sd = StableDiffusionModel.LoadDiffusersFolder(model); }
        catch (Exception e) when (e is IOException or FormatException or ZMagic.Core.IO.CheckpointFormatException or ArgumentException
                                   or System.Text.Json.JsonException or UnauthorizedAccessException or InvalidDataException)
        {
            throw new InputException($"Could not load '{model}': {e.Message}", e);
        }
        using (sd)
        {
            sd.To(device);
            var disposables = new List<IDisposable>();
            var conditions = new List<IGuidanceCondition>();
            try
            {
                if (vggPath is not null)
                {
                    var vgg = new VggFeatures(VggKind.Vgg16, device: device);
                    disposables.Add(vgg);
                    try { vgg.LoadWeights(ZMagic.Core.IO.Checkpoint.LoadStateDict(vggPath), vggPath); }
                    catch (ZMagic.Core.IO.CheckpointFormatException e) { throw new InputException($"--vgg '{vggPath}': {e.Message}", e); }
                    foreach (var q in vgg.parameters()) q.requires_grad_(false);
                    if (styleRef is not null)
                    {
                        var c = StyleCondition.Vgg(vgg, styleRef.to(device));
                        disposables.Add(c);
                        conditions.Add(c);
                    }
                    if (contentRef is not null)
                    {
                        var c = new ContentCondition(vgg, contentRef.to(device));
                        disposables.Add(c);
                        conditions.Add(c);
                    }
                }
                var generator = new StableDiffusionGenerator(sd);
                var bar = new Demo.TextProgressBar(p.GetValue(o.Quiet) ? null : stderr, samples * steps);
                var trace = new SamplingTrace();
                for (int i = 0; i < samples; i++)
                {
                    var request = new StableDiffusionRequest
                    {
                        Prompt = prompt,
                        NegativePrompt = negative ?? "",
                        Steps = steps,
                        GuidanceScale = cfg,
                        Size = pixels,
                        Seed = seed + i,
                        Conditions = conditions,
                        Method = method == "zmagic" ? SdGuidanceMethod.ZMagic : SdGuidanceMethod.Vanilla,
                        Combiner = combinerName == "cagrad" ? new CAGradCombiner(0.5, perChannel: true) : SumCombiner.Instance,
                        CfgRelativeScale = fraction,
                    };
                    using var result = generator.Generate(request, new Demo.SyncProgress<SamplingProgress>(_ => bar.Advance(method)), ct);
                    CliImages.WriteGrid(result.Images.cpu(), run.File(string.Create(CultureInfo.InvariantCulture, $"sample_{i:D3}.png")), 1, gap: 0, ct: ct);
                    trace.Steps.AddRange(result.Trace.Steps);
                    trace.Strategy = result.Trace.Strategy;
                    trace.Combiner = result.Trace.Combiner;
                }
                bar.Done();
                CliImages.WriteText(run.File("trace.csv"), trace.ToCsv(), ct);
                CliImages.WriteText(run.File("trace.json"), trace.ToJson(), ct);
                run.Publish(ct);
                stdout.WriteLine($"Wrote {samples} image(s), trace.csv and trace.json to {Terminal.Escape(run.Target)}.");
                return ExitCodes.Ok;
            }
            finally
            {
                foreach (var d in disposables) d.Dispose();
            }
        }
    }

    /// <summary>The model's native image side from unet/config.json (sample_size x 8), read before the weights.</summary>
    internal static int NativeSize(string model)
    {
        string path = Path.Combine(model, "unet", "config.json");
        try
        {
            ZMagic.Core.IO.RegularFile.Check(path, "unet/config.json");
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.TryGetProperty("sample_size", out var ss) && ss.TryGetInt32(out int latent) && latent is >= 1 and <= MaxSize / 8)
                return latent * 8;
            throw new InputException($"--model '{model}': {path} has no sample_size between 1 and {MaxSize / 8}.");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            throw new InputException($"--model '{model}': {path} could not be read: {e.Message}", e);
        }
    }

    /// <summary>Refuses a size whose step would not fit in memory, naming the estimate and the largest size that fits.</summary>
    internal static void CheckMemory(string model, int pixels, bool guided, bool sizeGiven)
    {
        long weights = WeightBytes(model);
        double need = MemoryBudget.StableDiffusionBytes(pixels, guided, weights);
        long have = MemoryBudget.Available;
        if (need <= 0.8 * have) return;
        int fits = 0;
        for (int s = 8; s <= MaxSize && MemoryBudget.StableDiffusionBytes(s, guided, weights) <= 0.8 * have; s += 8) fits = s;
        string what = guided ? "with --style/--content (the VAE decoder's backward pass at full size)" : "for the prompt alone";
        throw new UsageException($"{(sizeGiven ? "--size" : "the model's native size")} {pixels} needs about {MemoryBudget.Format(need)} {what}; " +
            $"this machine has {MemoryBudget.Format(have)} (80 % usable). " +
            (fits > 0 ? $"Use --size {fits} or less." : "No size fits; use a machine with more memory."));
    }

    /// <summary>Float32 bytes of the UNet, VAE and text encoder weights, from the safetensors headers (no data read).</summary>
    private static long WeightBytes(string model)
    {
        long total = 0;
        foreach (var part in new[] { "unet", "vae", "text_encoder" })
        {
            string dir = Path.Combine(model, part);
            if (!Directory.Exists(dir)) continue;
            foreach (var f in Directory.EnumerateFiles(dir, "*.safetensors"))
            {
                try { total += ZMagic.Core.IO.Checkpoint.ReadSummary(f).Entries.Sum(e => 4 * e.Shape.Aggregate(1L, (a, b) => a * b)); }
                catch (Exception e) when (e is IOException or ZMagic.Core.IO.CheckpointFormatException or OverflowException) { /* reported when the model loads */ }
            }
        }
        return total;
    }

    /// <summary>Counts the prompt's tokens with the model's tokenizer before the model is loaded (exit 2 when too long).</summary>
    internal static void CheckPrompt(string model, string prompt, string flag)
    {
        string vocab = Path.Combine(model, "tokenizer", "vocab.json"), merges = Path.Combine(model, "tokenizer", "merges.txt");
        ZMagic.Encoders.Clip.ClipTokenizer tokenizer;
        try
        {
            ZMagic.Core.IO.RegularFile.Check(vocab, "tokenizer/vocab.json");
            ZMagic.Core.IO.RegularFile.Check(merges, "tokenizer/merges.txt");
            tokenizer = ZMagic.Encoders.Clip.ClipTokenizer.FromVocabAndMerges(vocab, merges);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or System.Text.Json.JsonException or InvalidDataException)
        {
            throw new InputException($"--model '{model}': the tokenizer could not be read: {e.Message}", e);
        }
        int context = 77;
        string textConfig = Path.Combine(model, "text_encoder", "config.json");
        try
        {
            if (File.Exists(textConfig))
            {
                using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(textConfig));
                if (doc.RootElement.TryGetProperty("max_position_embeddings", out var m) && m.TryGetInt32(out int n) && n >= 2) context = n;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            throw new InputException($"--model '{model}': {textConfig} could not be read: {e.Message}", e);
        }
        int count = tokenizer.EncodeIds(prompt).Count;
        if (count > context - 2)
            throw new UsageException($"{flag} is too long: {count} tokens; at most {context - 2} fit the text encoder ({context} with the start and end tokens). Shorten it.");
    }
}
