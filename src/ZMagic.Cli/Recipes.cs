using System.Globalization;
using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Encoders.Clip;
using ZMagic.Encoders.Face;
using ZMagic.Encoders.FaceApi;
using ZMagic.Encoders.Vgg;
using ZMagic.Guidance.FaceAttributes;
using ZMagic.Guidance.Recipes;
using ZMagic.Guidance.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Cli;

/// <summary>
/// Everything <c>zmagic generate --recipe</c> (and <c>generate</c> with the face and text condition flags) takes, as
/// plain values. The command-line parser fills it (<see cref="Commands.RecipeCommand"/>); <see cref="RecipeRunner.Run"/>
/// checks and runs it. Null means "the recipe's value" or "not given".
/// </summary>
public sealed record RecipeCliOptions
{
    /// <summary>The recipe (<see cref="RecipeCatalog"/>); null builds one from the condition flags, in their order.</summary>
    public string? Recipe { get; init; }

    /// <summary>The condition flags in the order given (for a recipe built from them).</summary>
    public IReadOnlyList<RecipeConditionKind> Order { get; init; } = [];

    /// <summary>The backbone preset (must fit the recipe; default: the recipe's).</summary>
    public string? Preset { get; init; }

    /// <summary>The diffusion checkpoint (CelebA-HQ DDPM).</summary>
    public string? Weights { get; init; }

    /// <summary>Random weights for every network (timing and tests only).</summary>
    public bool RandomWeights { get; init; }

    /// <summary>A diffusers Stable Diffusion folder (SD recipes).</summary>
    public string? Model { get; init; }

    /// <summary>The folder where the condition networks are found under their published names (default: the folder of --weights).</summary>
    public string? ModelsDir { get; init; }

    /// <summary>Explicit condition-network files (override the models folder).</summary>
    public string? ArcFace { get; init; }

    /// <summary>MobileFaceNet landmarks checkpoint.</summary>
    public string? MobileFaceNet { get; init; }

    /// <summary>BiSeNet parsing checkpoint.</summary>
    public string? BiSeNet { get; init; }

    /// <summary>CLIP ViT-B/16 (Hugging Face folder or OpenAI-layout file).</summary>
    public string? Clip { get; init; }

    /// <summary>torchvision VGG16 weights.</summary>
    public string? Vgg { get; init; }

    /// <summary>The face-api model folder (age, gender, expression).</summary>
    public string? FaceApi { get; init; }

    /// <summary>Reference images.</summary>
    public string? Identity { get; init; }

    /// <summary>Landmarks reference image.</summary>
    public string? Landmarks { get; init; }

    /// <summary>Parsing reference image.</summary>
    public string? Parsing { get; init; }

    /// <summary>Style reference image.</summary>
    public string? Style { get; init; }

    /// <summary>Content reference image.</summary>
    public string? Content { get; init; }

    /// <summary>The text prompt (CLIP on faces; classifier-free guidance on Stable Diffusion).</summary>
    public string? Text { get; init; }

    /// <summary>The negative prompt (Stable Diffusion).</summary>
    public string? NegativePrompt { get; init; }

    /// <summary>The landmark crop box (top, bottom, left, right); null: <see cref="FaceRecipeBuilder.DefaultLandmarksBox"/>.</summary>
    public FaceCropBox? LandmarksBox { get; init; }

    /// <summary>Face attributes (face-api): target age in years.</summary>
    public double? Age { get; init; }

    /// <summary>Target gender.</summary>
    public FaceGender? Gender { get; init; }

    /// <summary>Target expression.</summary>
    public FaceExpression? Expression { get; init; }

    /// <summary>Step-size scale of the face attributes (norm-relative; default 0.02).</summary>
    public double AttributeScale { get; init; } = 0.02;

    /// <summary>Per-condition scales.</summary>
    public IReadOnlyDictionary<RecipeConditionKind, double> Scales { get; init; } = new Dictionary<RecipeConditionKind, double>();

    /// <summary>Overrides of the recipe.</summary>
    public int? Stop { get; init; }

    /// <summary>Sampler steps.</summary>
    public int? Steps { get; init; }

    /// <summary>zmagic or vanilla.</summary>
    public RecipeMethod? Method { get; init; }

    /// <summary>true: CAGrad, false: the sum, null: the recipe's (CAGrad for Z-Magic, the sum for Vanilla).</summary>
    public bool? CAGrad { get; init; }

    /// <summary>CAGrad's c.</summary>
    public double? CAGradC { get; init; }

    /// <summary>Classifier-free guidance scale (SD).</summary>
    public double? Cfg { get; init; }

    /// <summary>Time-travel repeats.</summary>
    public int? TimeTravel { get; init; }

    /// <summary>The research code's update rule and CAGrad scaling.</summary>
    public bool ResearchParity { get; init; }

    /// <summary>Run seed.</summary>
    public long Seed { get; init; }

    /// <summary>Number of images.</summary>
    public int Samples { get; init; } = 1;

    /// <summary>Images per sampler call (faces); null: 1.</summary>
    public int? Batch { get; init; }

    /// <summary>Image side (SD); null: the model's.</summary>
    public int? Size { get; init; }

    /// <summary>cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>libtorch threads.</summary>
    public int Threads { get; init; } = 2;

    /// <summary>Output folder.</summary>
    public string Out { get; init; } = "zmagic-out";

    /// <summary>No progress bar.</summary>
    public bool Quiet { get; init; }
}

/// <summary>Runs a recipe from <see cref="RecipeCliOptions"/>: checks, loads the networks, samples, writes the run folder.</summary>
public static class RecipeRunner
{
    /// <summary>The condition networks' published file names, looked up in the models folder.</summary>
    public static IReadOnlyDictionary<string, string> DefaultFiles { get; } = new Dictionary<string, string>
    {
        ["--arcface"] = "model_ir_se50.pth",
        ["--mobilefacenet"] = "mobilefacenet_model_best.pth.tar",
        ["--bisenet"] = "79999_iter.pth",
        ["--clip"] = "clip-vit-base-patch16",
        ["--vgg"] = "vgg16-397923af.pth",
        ["--faceapi"] = "face-api",
    };

    /// <summary>Runs the options; returns the exit code.</summary>
    public static int Run(RecipeCliOptions o, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(o);
        Recipe recipe;
        if (o.Recipe is { } name)
        {
            recipe = RecipeCatalog.All.FirstOrDefault(r => string.Equals(r.Name, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new UsageException($"Unknown recipe '{name}'. Known recipes: {string.Join(", ", RecipeCatalog.All.Select(r => r.Name))} (docs/recipes.md).");
        }
        else
        {
            var kinds = o.Order.Where(k => k is not (RecipeConditionKind.Style or RecipeConditionKind.Content)).ToList();
            if (o.Order.Any(k => k is RecipeConditionKind.Style or RecipeConditionKind.Content))
                throw new UsageException("--style and --content act on Stable Diffusion: use --preset sd15 or --recipe sd-text-style / sd-text-style-content.");
            if (kinds.Count == 0 && o.Age is null && o.Gender is null && o.Expression is null)
                throw new UsageException("Give --recipe NAME or at least one condition (--identity, --landmarks, --parsing, --text, --age, --gender, --expression).");
            recipe = RecipeCatalog.Custom(kinds);
        }
        var overrides = new RecipeOverrides
        {
            Steps = o.Steps, Scales = o.Scales, Stop = o.Stop, Method = o.Method, CAGrad = o.CAGrad, CAGradC = o.CAGradC,
            Cfg = o.Cfg, TimeTravelRepeats = o.TimeTravel, Parity = o.ResearchParity ? GuidanceParity.ResearchCode : GuidanceParity.Library,
        };
        foreach (var kind in o.Scales.Keys)
            if (recipe.Condition(kind) is null)
                throw new UsageException($"--{Flag(kind)}-scale: recipe '{recipe.Name}' has no {Flag(kind)} condition.");
        return recipe.Backbone == RecipeBackbone.StableDiffusion
            ? RunStableDiffusion(recipe, overrides, o, stdout, stderr, ct)
            : RunFaces(recipe, overrides, o, stdout, stderr, ct);
    }

    /// <summary>The flag of a condition kind (<c>identity</c>, <c>landmarks</c>, ...).</summary>
    public static string Flag(RecipeConditionKind kind) => kind.ToString().ToLowerInvariant();

    private static string? Given(RecipeConditionKind kind, RecipeCliOptions o) => kind switch
    {
        RecipeConditionKind.Identity => o.Identity,
        RecipeConditionKind.Landmarks => o.Landmarks,
        RecipeConditionKind.Parsing => o.Parsing,
        RecipeConditionKind.Text => o.Text,
        RecipeConditionKind.Style => o.Style,
        RecipeConditionKind.Content => o.Content,
        _ => null,
    };

    /// <summary>Every condition the recipe has needs its flag; a condition flag the recipe does not use is an error.</summary>
    private static void CheckConditionFlags(Recipe recipe, RecipeCliOptions o)
    {
        foreach (var c in recipe.Conditions)
            if (Given(c.Kind, o) is null)
                throw new UsageException(c.Kind == RecipeConditionKind.Text
                    ? $"Recipe '{recipe.Name}' needs --text PROMPT."
                    : $"Recipe '{recipe.Name}' needs --{Flag(c.Kind)} IMAGE (the {Flag(c.Kind)} reference).");
        foreach (var kind in Enum.GetValues<RecipeConditionKind>())
            if (Given(kind, o) is not null && recipe.Condition(kind) is null && !(kind == RecipeConditionKind.Text && recipe.Backbone == RecipeBackbone.StableDiffusion))
                throw new UsageException($"--{(kind == RecipeConditionKind.Text ? "text" : Flag(kind))}: recipe '{recipe.Name}' has no {Flag(kind)} condition (it has {string.Join(", ", recipe.Conditions.Select(c => Flag(c.Kind)))}).");
    }

    private static int RunFaces(Recipe recipe, RecipeOverrides overrides, RecipeCliOptions o, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var preset = Presets.Get(o.Preset ?? ZMagic.Models.BackbonePresets.CelebAHqDdpm);
        if (preset.Channels != 3 || preset.Size != 256)
            throw new UsageException($"Recipe '{recipe.Name}' works on 3x256x256 faces (--preset celebahq-ddpm); preset '{preset.Name}' makes {preset.Channels}x{preset.Size}x{preset.Size} images.");
        if (o.Model is not null) throw new UsageException("--model is for Stable Diffusion recipes; face recipes take --weights.");
        if (o.Style is not null || o.Content is not null) throw new UsageException("--style and --content act on Stable Diffusion recipes.");
        if (o.Cfg is not null) throw new UsageException("--cfg is for Stable Diffusion recipes.");
        if (o.Weights is not null && o.RandomWeights) throw new UsageException("--weights and --random-weights contradict each other; give one.");
        if (o.Weights is null && !o.RandomWeights) throw new UsageException($"Recipe '{recipe.Name}' needs --weights FILE (celeba_hq.ckpt, docs/models.md).");
        CheckConditionFlags(recipe, o);
        bool attributes = o.Age is not null || o.Gender is not null || o.Expression is not null;
        int trainSteps = Commands.GenerateCommand.TrainSteps(preset);
        if (o.Steps is int s && (s < 1 || s > trainSteps)) throw new UsageException($"--steps must be in [1, {trainSteps}]; got {s}.");
        int batch = Math.Min(o.Batch ?? 1, o.Samples);
        Commands.GenerateCommand.CheckMemory(preset, batch);
        var device = Commands.GenerateCommand.ParseDevice(o.Device);
        App.SetThreads(o.Threads);
        if (o.Weights is not null) Commands.GenerateCommand.RequireFile(o.Weights, "--weights");
        string? modelsDir = o.ModelsDir ?? (o.Weights is null ? null : Path.GetDirectoryName(Path.GetFullPath(o.Weights)));
        if (o.ModelsDir is not null && !Directory.Exists(o.ModelsDir)) throw new InputException($"--models '{o.ModelsDir}' is not a folder.");

        // Network files are resolved and references read before anything large is loaded.
        string? arcPath = recipe.Condition(RecipeConditionKind.Identity) is null ? null : NetworkFile(o.ArcFace, "--arcface", modelsDir, o.RandomWeights);
        string? lmPath = recipe.Condition(RecipeConditionKind.Landmarks) is null ? null : NetworkFile(o.MobileFaceNet, "--mobilefacenet", modelsDir, o.RandomWeights);
        string? parsePath = recipe.Condition(RecipeConditionKind.Parsing) is null ? null : NetworkFile(o.BiSeNet, "--bisenet", modelsDir, o.RandomWeights);
        string? clipPath = recipe.Condition(RecipeConditionKind.Text) is null ? null : NetworkFile(o.Clip, "--clip", modelsDir, o.RandomWeights, folder: true);
        string? faceApiDir = attributes ? (o.FaceApi ?? (modelsDir is null ? null : Path.Combine(modelsDir, DefaultFiles["--faceapi"]))) : null;
        if (attributes && !o.RandomWeights && (faceApiDir is null || !Directory.Exists(faceApiDir)))
            throw new InputException($"--age/--gender/--expression need the face-api models: give --faceapi DIR (npm pack @vladmandic/face-api@1.7.15, docs/models.md){(faceApiDir is null ? "" : $"; '{faceApiDir}' is not a folder")}.");
        using var run = RunFolder.Prepare(o.Out);
        var owned = new List<IDisposable>();
        try
        {
            Tensor? Ref(string? path, string flag)
            {
                if (path is null) return null;
                var t = CliImages.ReadReference(path, flag, 3, preset.Size);
                owned.Add(t);
                return t.to(device);
            }
            var inputs = new FaceRecipeInputs
            {
                IdentityReference = Ref(o.Identity, "--identity"),
                LandmarksReference = Ref(o.Landmarks, "--landmarks"),
                ParsingReference = Ref(o.Parsing, "--parsing"),
                Prompt = o.Text,
                LandmarksBox = o.LandmarksBox,
            };
            inputs = inputs with
            {
                IdentityEncoder = arcPath is null && !(o.RandomWeights && recipe.Condition(RecipeConditionKind.Identity) is not null) ? null
                    : Own(owned, Network(() => arcPath is null ? new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, true) : FaceCheckpoints.LoadIrSe50(arcPath), "--arcface", arcPath), device),
                Landmarker = lmPath is null && !(o.RandomWeights && recipe.Condition(RecipeConditionKind.Landmarks) is not null) ? null
                    : Own(owned, Network(() => lmPath is null ? new MobileFaceNet(136) : FaceCheckpoints.LoadMobileFaceNet(lmPath), "--mobilefacenet", lmPath), device),
                Parser = parsePath is null && !(o.RandomWeights && recipe.Condition(RecipeConditionKind.Parsing) is not null) ? null
                    : Own(owned, Network(() => parsePath is null ? new BiSeNet(19) : FaceCheckpoints.LoadBiSeNet(parsePath), "--bisenet", parsePath), device),
            };
            if (recipe.Condition(RecipeConditionKind.Text) is not null)
            {
                var clip = Own(owned, Network(() => clipPath is null ? new ClipModel(ClipConfig.VitB16) : ClipWeights.LoadModel(clipPath), "--clip", clipPath), device);
                FaceCheckpoints.Freeze(clip);
                inputs = inputs with { Clip = clip, Tokenizer = Tokenizer(clipPath) };
                CheckPromptLength(inputs.Tokenizer!, o.Text!);
            }
            if (recipe.Conditions.Count == 0 && !attributes) throw new UsageException("No condition to apply.");
            var built = FaceRecipeBuilder.Build(recipe, inputs, overrides);
            owned.Add(built);
            var conditions = built.Conditions.ToList();
            if (attributes) conditions.AddRange(AttributeConditions(o, faceApiDir, device, owned));
            var denoiser = Presets.Load(preset, o.Weights, o.RandomWeights, device);
            if (denoiser is IDisposable dd) owned.Add(dd);
            var options = built.Options;
            if (!o.Quiet)
                stderr.WriteLine($"Recipe {recipe.Name}: {built.Recipe.Steps} steps, {options.SamplerStep.Name}, {options.Strategy?.Name}, {options.Combiner?.Name}" +
                                 $"{(options.TimeTravel is { } tt ? $", time travel {tt.Repeats}x" : "")}; conditions {string.Join(", ", conditions.Select(c => c.Name))}.");
            return Sample(denoiser, conditions, options with { Seed = o.Seed, Device = device }, o.Samples, batch, run, recipe.Name, o.Quiet, stdout, stderr, ct);
        }
        finally
        {
            for (int i = owned.Count - 1; i >= 0; i--) owned[i].Dispose();
        }
    }

    private static IEnumerable<IGuidanceCondition> AttributeConditions(RecipeCliOptions o, string? faceApiDir, Device device, List<IDisposable> owned)
    {
        var b = FaceRecipeBuilder.DefaultLandmarksBox;
        var box = o.LandmarksBox is { } lb ? new FaceBox(lb.Top, lb.Bottom, lb.Left, lb.Right) : new FaceBox(b.Top, b.Bottom, b.Left, b.Right);
        var schedule = new GuidanceSchedule(new NormRelativeStepSize(o.AttributeScale));
        T Load<T>(T net) where T : nn.Module, IFaceApiNetwork
        {
            owned.Add(net);
            if (!o.RandomWeights) net.LoadWeights(faceApiDir!);
            foreach (var p in net.parameters()) p.requires_grad_(false);
            net.eval();
            net.to(device);
            return net;
        }
        if (o.Age is not null || o.Gender is not null)
        {
            var ageGender = Load(new AgeGenderNet());
            if (o.Age is double age) yield return new TargetAgeCondition(ageGender, box, age, schedule);
            if (o.Gender is FaceGender g) yield return new TargetGenderCondition(ageGender, box, g, schedule);
        }
        if (o.Expression is FaceExpression e) yield return new TargetExpressionCondition(Load(new FaceExpressionNet()), box, e, schedule);
    }

    private static int Sample(ZMagic.Core.Diffusion.IDenoiser denoiser, IReadOnlyList<IGuidanceCondition> conditions, SamplerOptions options, int samples, int batch,
        RunFolder run, string label, bool quiet, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var sampler = new ConditionalSampler(denoiser);
        var all = new List<Tensor>();
        var trace = new SamplingTrace();
        int stepsPerCall = options.Timesteps?.Count ?? options.Steps;
        int repeats = options.TimeTravel is { } tt ? tt.Repeats : 1;
        var bar = new Demo.TextProgressBar(quiet ? null : stderr, ((samples + batch - 1) / batch) * stepsPerCall * repeats);
        try
        {
            for (int first = 0; first < samples; first += batch)
            {
                int n = Math.Min(batch, samples - first);
                using var result = sampler.Sample(conditions, options with { BatchSize = n, FirstItem = first }, new Demo.SyncProgress<SamplingProgress>(_ => bar.Advance(label)), ct);
                all.Add(result.Images.detach().to(torch.CPU).clone());
                if (first == 0) trace = result.Trace;
                else trace.Steps.AddRange(result.Trace.Steps);
            }
            bar.Done();
            using var images = torch.cat(all, 0);
            for (int i = 0; i < samples; i++)
            {
                ct.ThrowIfCancellationRequested();
                using var one = images[i].unsqueeze(0);
                CliImages.WriteGrid(one, run.File(string.Create(CultureInfo.InvariantCulture, $"sample_{i:D3}.png")), 1, gap: 0, ct: ct);
            }
            CliImages.WriteGrid(images, run.File("grid.png"), Math.Min(8, samples), ct: ct);
            CliImages.WriteText(run.File("trace.csv"), trace.ToCsv(), ct);
            CliImages.WriteText(run.File("trace.json"), trace.ToJson(), ct);
            run.Publish(ct);
            stdout.WriteLine($"Wrote {samples} images, grid.png, trace.csv and trace.json to {Terminal.Escape(run.Target)}.");
            return ExitCodes.Ok;
        }
        finally
        {
            foreach (var t in all) t.Dispose();
        }
    }

    private static int RunStableDiffusion(Recipe recipe, RecipeOverrides overrides, RecipeCliOptions o, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (o.Preset is { } p && !string.Equals(p, Commands.SdGenerateCommand.Preset, StringComparison.OrdinalIgnoreCase))
            throw new UsageException($"Recipe '{recipe.Name}' runs on Stable Diffusion (--preset {Commands.SdGenerateCommand.Preset}); got --preset {p}.");
        string model = o.Model ?? throw new UsageException($"Recipe '{recipe.Name}' needs --model DIR (a diffusers Stable Diffusion 1.x folder).");
        if (o.Weights is not null || o.RandomWeights) throw new UsageException("--weights/--random-weights are for face recipes; Stable Diffusion recipes take --model DIR.");
        string prompt = o.Text ?? throw new UsageException($"Recipe '{recipe.Name}' needs --text PROMPT (classifier-free guidance).");
        if (o.Age is not null || o.Gender is not null || o.Expression is not null) throw new UsageException("--age/--gender/--expression act on the face recipes.");
        CheckConditionFlags(recipe, o);
        if (o.Steps is int s && (s < 1 || s > 1000)) throw new UsageException($"--steps must be in [1, 1000]; got {s}.");
        if (o.Size is int sz && (sz < 8 || sz > Commands.SdGenerateCommand.MaxSize || sz % 8 != 0))
            throw new UsageException($"--size must be a multiple of 8 in [8, {Commands.SdGenerateCommand.MaxSize}]; got {sz}.");
        var device = Commands.GenerateCommand.ParseDevice(o.Device);
        App.SetThreads(o.Threads);
        if (!Directory.Exists(model)) throw new InputException($"--model '{model}' is not a folder (expected a diffusers Stable Diffusion folder).");
        string modelsDir = o.ModelsDir ?? Path.GetDirectoryName(Path.GetFullPath(model.TrimEnd('/', Path.DirectorySeparatorChar)))!;
        string vggPath = NetworkFile(o.Vgg, "--vgg", modelsDir, random: false)!;
        int pixels = o.Size ?? Commands.SdGenerateCommand.NativeSize(model);
        Commands.SdGenerateCommand.CheckMemory(model, pixels, guided: true, sizeGiven: o.Size is not null);
        Commands.SdGenerateCommand.CheckPrompt(model, prompt, "--text");
        if (o.NegativePrompt is { } negative) Commands.SdGenerateCommand.CheckPrompt(model, negative, "--negative-prompt");
        using var run = RunFolder.Prepare(o.Out);
        using var styleRef = o.Style is null ? null : CliImages.ReadReference(o.Style, "--style", 3, pixels);
        using var contentRef = o.Content is null ? null : CliImages.ReadReference(o.Content, "--content", 3, pixels);
        StableDiffusionModel sd;
        try { sd = StableDiffusionModel.LoadDiffusersFolder(model); }
        catch (Exception e) when (e is IOException or FormatException or ZMagic.Core.IO.CheckpointFormatException or ArgumentException
                                   or System.Text.Json.JsonException or UnauthorizedAccessException or InvalidDataException)
        {
            throw new InputException($"Could not load '{model}': {e.Message}", e);
        }
        using (sd)
        using (var vgg = new VggFeatures(VggKind.Vgg16, device: device))
        {
            sd.To(device);
            try { vgg.LoadWeights(ZMagic.Core.IO.Checkpoint.LoadStateDict(vggPath), vggPath); }
            catch (ZMagic.Core.IO.CheckpointFormatException e) { throw new InputException($"--vgg '{vggPath}': {e.Message}", e); }
            foreach (var q in vgg.parameters()) q.requires_grad_(false);
            using var built = StableDiffusionRecipeBuilder.Build(recipe, new StableDiffusionRecipeInputs
            {
                Prompt = prompt, NegativePrompt = o.NegativePrompt ?? "", Vgg = vgg, StyleReference = styleRef?.to(device), ContentReference = contentRef?.to(device),
            }, overrides);
            var request = built.Request with { Size = pixels };
            if (!o.Quiet)
                stderr.WriteLine($"Recipe {recipe.Name}: {request.Steps} steps, CFG {request.GuidanceScale}, {request.SamplerStep?.Name}, {request.Method}, {request.Combiner?.Name}" +
                                 $"{(request.TimeTravel is { } tt ? $", time travel {tt.Repeats}x" : "")}.");
            var generator = new StableDiffusionGenerator(sd);
            int repeats = request.TimeTravel?.Repeats ?? 1;
            var bar = new Demo.TextProgressBar(o.Quiet ? null : stderr, o.Samples * request.Steps * repeats);
            var trace = new SamplingTrace();
            for (int i = 0; i < o.Samples; i++)
            {
                using var result = generator.Generate(request with { Seed = o.Seed + i }, new Demo.SyncProgress<SamplingProgress>(_ => bar.Advance(recipe.Name)), ct);
                CliImages.WriteGrid(result.Images.cpu(), run.File(string.Create(CultureInfo.InvariantCulture, $"sample_{i:D3}.png")), 1, gap: 0, ct: ct);
                trace.Steps.AddRange(result.Trace.Steps);
                trace.Strategy = result.Trace.Strategy;
                trace.Combiner = result.Trace.Combiner;
            }
            bar.Done();
            CliImages.WriteText(run.File("trace.csv"), trace.ToCsv(), ct);
            CliImages.WriteText(run.File("trace.json"), trace.ToJson(), ct);
            run.Publish(ct);
            stdout.WriteLine($"Wrote {o.Samples} image(s), trace.csv and trace.json to {Terminal.Escape(run.Target)}.");
            return ExitCodes.Ok;
        }
    }

    /// <summary>The file of a condition network: the explicit flag, else its published name in the models folder.</summary>
    private static string? NetworkFile(string? given, string flag, string? modelsDir, bool random, bool folder = false)
    {
        if (given is not null)
        {
            if (folder && Directory.Exists(given)) return given;
            Commands.GenerateCommand.RequireFile(given, flag);
            return given;
        }
        if (random) return null;
        string name = DefaultFiles[flag];
        string? path = modelsDir is null ? null : Path.Combine(modelsDir, name);
        if (path is not null && (File.Exists(path) || (folder && Directory.Exists(path)))) return path;
        throw new InputException($"{flag}: no {name} {(modelsDir is null ? "(no models folder)" : $"in '{modelsDir}'")}; give {flag} {(folder ? "PATH" : "FILE")} or --models DIR (docs/models.md lists where to get it).");
    }

    private static T Network<T>(Func<T> load, string flag, string? path)
    {
        try { return load(); }
        catch (Exception e) when (e is ZMagic.Core.IO.CheckpointFormatException or InvalidDataException or FormatException or System.Text.Json.JsonException)
        {
            throw new InputException($"{flag} '{path}': {e.Message}", e);
        }
    }

    private static T Own<T>(List<IDisposable> owned, T module, Device device) where T : nn.Module
    {
        owned.Add(module);
        FaceCheckpoints.Freeze(module);
        module.to(device);
        return module;
    }

    /// <summary>The CLIP tokenizer: the Hugging Face folder's, else the vocabulary shipped with the golden data or the library.</summary>
    private static ClipTokenizer Tokenizer(string? clipPath)
    {
        if (clipPath is not null && Directory.Exists(clipPath) && File.Exists(Path.Combine(clipPath, "vocab.json")))
            return ClipTokenizer.FromFolder(clipPath, new ClipTokenizerOptions(Truncate: false));
        string? bpe = clipPath is null ? null : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(clipPath))!, "bpe_simple_vocab_16e6.txt.gz");
        if (bpe is not null && File.Exists(bpe)) return ClipTokenizer.FromSimpleVocab(bpe);
        string? env = Environment.GetEnvironmentVariable("ZMAGIC_CLIP_VOCAB");
        if (env is not null && File.Exists(env)) return ClipTokenizer.FromSimpleVocab(env);
        throw new InputException("--clip: no tokenizer found: give a Hugging Face CLIP folder (with vocab.json and merges.txt), put OpenAI's bpe_simple_vocab_16e6.txt.gz next to the CLIP file, or set ZMAGIC_CLIP_VOCAB.");
    }

    private static void CheckPromptLength(ClipTokenizer tokenizer, string prompt)
    {
        int count = tokenizer.EncodeIds(prompt).Count;
        if (count > 75) throw new UsageException($"--text is too long: {count} tokens; at most 75 fit CLIP's context (77 with the start and end tokens).");
    }
}
