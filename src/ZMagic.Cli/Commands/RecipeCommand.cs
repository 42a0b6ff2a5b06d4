using System.CommandLine;
using System.Globalization;
using ZMagic.Cli.CommandLine;
using ZMagic.Encoders.Face;
using ZMagic.Encoders.FaceApi;
using ZMagic.Guidance.Recipes;

namespace ZMagic.Cli.Commands;

/// <summary>
/// <c>zmagic generate --recipe NAME</c> (and <c>generate</c> with the face/text condition flags): the option
/// definitions and their mapping to <see cref="RecipeCliOptions"/>; <see cref="RecipeRunner"/> does the work.
/// Chosen by <see cref="Handles"/> like the Stable Diffusion variant of <c>generate</c>.
/// </summary>
public static class RecipeCommand
{
    private const string Summary = "Generate images with one of the paper's recipes (--recipe NAME), or with face and text conditions";

    private static readonly string[] ConditionFlags = ["--identity", "--landmarks", "--parsing", "--text", "--age", "--gender", "--expression"];

    private static string Details => $"""
        Recipes are the paper's experiments with the research code's settings (docs/recipes.md lists each with its
        source): {string.Join(", ", RecipeCatalog.All.Select(r => r.Name))}. Options override the recipe's settings.
        Face recipes take the CelebA-HQ DDPM (--weights) and find the condition networks under their published names in
        --models DIR (default: the folder of --weights): model_ir_se50.pth, mobilefacenet_model_best.pth.tar,
        79999_iter.pth, clip-vit-base-patch16/, face-api/. Stable Diffusion recipes take --model DIR and
        vgg16-397923af.pth (next to the model folder, or --vgg). Without --recipe, --identity, --landmarks, --parsing
        and --text build a recipe from the conditions in the order given; --age, --gender and --expression (face-api)
        are added after the recipe's conditions. --research-parity selects the research code's update rule and CAGrad
        scaling: the default update has about 40 % of its strength at the same scales (42 % with three conditions).
        """;

    private const string Examples = """
        Examples:
          zmagic generate --recipe face-id-landmarks --weights celeba_hq.ckpt --identity ref.png --landmarks ref.png
          zmagic generate --recipe face-text-parsing-identity --weights celeba_hq.ckpt --text "blonde beauty" --parsing a.png --identity b.png
          zmagic generate --recipe sd-text-style --model ./stable-diffusion-v1-5 --text "a cat wearing glasses." --style starry.png
        """;

    private sealed class Options(Command c)
    {
        public readonly Option<string?> Recipe = c.Declare(Completed(CliOptions.Text("--recipe",
            "a recipe (docs/recipes.md; default: one built from the condition options)", null, "NAME"), RecipeCatalog.All.Select(r => r.Name)));
        public readonly Option<string?> Preset = c.Declare(CliOptions.Text("--preset", "backbone preset (default: the recipe's)", null, "NAME", "-p"));
        public readonly Option<string?> Weights = c.Declare(CliOptions.Text("--weights", "the CelebA-HQ DDPM checkpoint (celeba_hq.ckpt) of face recipes (default: none; needed unless --random-weights)", null, "FILE", "-w"));
        public readonly Option<bool> RandomWeights = c.Declare(CliOptions.Flag("--random-weights", "random weights for every network: for trying the pipeline"));
        public readonly Option<string?> Model = c.Declare(CliOptions.Text("--model", "a diffusers Stable Diffusion 1.x folder (Stable Diffusion recipes; default: none)", null, "DIR"));
        public readonly Option<string?> Models = c.Declare(CliOptions.Text("--models",
            "folder of the condition networks under their published names (default: the folder of --weights or of --model)", null, "DIR"));
        public readonly Option<string?> ArcFace = c.Declare(CliOptions.Text("--arcface", "ArcFace IR-SE50 weights (default: model_ir_se50.pth in --models)", null, "FILE"));
        public readonly Option<string?> MobileFaceNet = c.Declare(CliOptions.Text("--mobilefacenet", "MobileFaceNet landmark weights (default: mobilefacenet_model_best.pth.tar in --models)", null, "FILE"));
        public readonly Option<string?> BiSeNet = c.Declare(CliOptions.Text("--bisenet", "BiSeNet parsing weights (default: 79999_iter.pth in --models)", null, "FILE"));
        public readonly Option<string?> Clip = c.Declare(CliOptions.Text("--clip", "CLIP ViT-B/16, a Hugging Face folder or file (default: clip-vit-base-patch16 in --models)", null, "PATH"));
        public readonly Option<string?> Vgg = c.Declare(CliOptions.Text("--vgg", "torchvision vgg16 weights (default: vgg16-397923af.pth in --models)", null, "FILE"));
        public readonly Option<string?> FaceApi = c.Declare(CliOptions.Text("--faceapi", "the face-api model folder (default: face-api in --models)", null, "DIR"));
        public readonly Option<string?> Identity = c.Declare(CliOptions.Text("--identity", "identity reference image (ArcFace; default: none)", null, "IMG"));
        public readonly Option<string?> Landmarks = c.Declare(CliOptions.Text("--landmarks", "landmarks reference image (MobileFaceNet; default: none)", null, "IMG"));
        public readonly Option<string?> LandmarksBox = c.Declare(CliOptions.Text("--landmarks-box",
            $"the landmark face crop TOP,BOTTOM,LEFT,RIGHT in pixels (default: {Box(FaceRecipeBuilder.DefaultLandmarksBox)}, aligned CelebA-HQ)", null, "T,B,L,R"));
        public readonly Option<string?> Parsing = c.Declare(CliOptions.Text("--parsing", "parsing reference image (BiSeNet; default: none)", null, "IMG"));
        public readonly Option<string?> Text = c.Declare(CliOptions.Text("--text", "the prompt: CLIP guidance on faces, classifier-free guidance on Stable Diffusion (default: none)", null, "TEXT"));
        public readonly Option<string?> NegativePrompt = c.Declare(CliOptions.Text("--negative-prompt", "what to steer away from (Stable Diffusion; default: none)", null, "TEXT"));
        public readonly Option<string?> Style = c.Declare(CliOptions.Text("--style", "style reference image (Stable Diffusion recipes; default: none)", null, "IMG"));
        public readonly Option<string?> Content = c.Declare(CliOptions.Text("--content", "content reference image (Stable Diffusion recipes; default: none)", null, "IMG"));
        public readonly Option<double?> Age = c.Declare(OptionalDouble("--age", "target age in years, 0..120 (face-api; default: none)", "YEARS"));
        public readonly Option<string?> Gender = c.Declare(CliOptions.OptionalChoice("--gender", "target gender (face-api; default: none)", ["female", "male"]));
        public readonly Option<string?> Expression = c.Declare(CliOptions.OptionalChoice("--expression", "target expression (face-api; default: none)",
            Enum.GetNames<FaceExpression>().Select(n => n.ToLowerInvariant()).ToArray()));
        public readonly Dictionary<RecipeConditionKind, Option<double?>> Scales = Enum.GetValues<RecipeConditionKind>().ToDictionary(k => k,
            k => c.Declare(OptionalDouble($"--{RecipeRunner.Flag(k)}-scale", $"the {RecipeRunner.Flag(k)} condition's scale (default: the recipe's)", "S")));
        public readonly Option<double> AttributeScale = c.Declare(CliOptions.Double("--attribute-scale", "the face attributes' norm-relative scale", 0.02, "S"));
        public readonly Option<int?> Stop = c.Declare(CliOptions.OptionalInt("--stop", "face conditions act only at t > T (default: the recipe's, 200)", -1, 1000, "T"));
        public readonly Option<int?> Steps = c.Declare(CliOptions.OptionalInt("--steps", "sampler steps (default: the recipe's, 100)", 1, 1000, "K"));
        public readonly Option<string?> Method = c.Declare(CliOptions.OptionalChoice("--method", "zmagic or vanilla (FreeDoM; default: the recipe's, zmagic)", ["zmagic", "vanilla"], null, "-m"));
        public readonly Option<string?> Combiner = c.Declare(CliOptions.OptionalChoice("--combiner", "cagrad or sum (default: cagrad with zmagic, sum with vanilla)", ["cagrad", "sum"]));
        public readonly Option<double?> CAGradC = c.Declare(OptionalDouble("--cagrad-c", "CAGrad's c (default: the recipe's, 0.5)", "C"));
        public readonly Option<double?> Cfg = c.Declare(OptionalDouble("--cfg", "classifier-free guidance scale (Stable Diffusion; default: the recipe's, 5)", "S"));
        public readonly Option<int?> TimeTravel = c.Declare(CliOptions.OptionalInt("--time-travel", "time-travel repeats per step (default: the recipe's)", 1, 100, "N"));
        public readonly Option<bool> ResearchParity = c.Declare(CliOptions.Flag("--research-parity",
            "the research code's update rule and CAGrad scaling (about 2.5x the default's update at the same scales)"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(0, "run seed; sample i depends only on (S, i)"));
        public readonly Option<int> Samples = c.Declare(CommonOptions.Samples(1, 100_000));
        public readonly Option<int> Batch = c.Declare(CliOptions.Int("--batch", "images per sampler call (face recipes)", 1, 1, 4096, "B"));
        public readonly Option<int?> Size = c.Declare(CliOptions.OptionalInt("--size", "image side, a multiple of 8 (Stable Diffusion; default: the model's)", 8, SdGenerateCommand.MaxSize, "PX"));
        public readonly Option<string> Device = c.Declare(CommonOptions.Device());
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads());
        public readonly Option<string?> Out = c.Declare(CommonOptions.Out("zmagic-out"));
        public readonly Option<bool> Quiet = c.Declare(CommonOptions.Quiet());
    }

    /// <summary>Whether the arguments are for this variant: --recipe, or a face/text condition option on a non-SD preset.</summary>
    public static bool Handles(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        bool Has(string name) => args.Any(a => a == name || a.StartsWith(name + "=", StringComparison.Ordinal) || a.StartsWith(name + ":", StringComparison.Ordinal));
        if (Has("--recipe")) return true;
        if (SdGenerateCommand.Handles(args)) return false;
        return ConditionFlags.Any(Has);
    }

    /// <summary>The <c>generate</c> command with the recipe options.</summary>
    internal static Command Create(CliContext context)
    {
        var command = new Command("generate", Summary).WithHelp(Details, Examples);
        var options = new Options(command);
        command.SetAction(r => Run(r, options, context));
        return command;
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        context.CheckNumerics();
        var scales = new Dictionary<RecipeConditionKind, double>();
        foreach (var (kind, option) in o.Scales)
            if (p.GetValue(option) is double s)
                scales[kind] = s >= 0 ? s : throw new UsageException($"--{RecipeRunner.Flag(kind)}-scale must be non-negative; got {s}.");
        // The order of the condition options on the command line (a recipe built from them applies them in that order).
        var order = new List<RecipeConditionKind>();
        foreach (var a in context.Args)
            foreach (var kind in Enum.GetValues<RecipeConditionKind>())
            {
                string flag = "--" + RecipeRunner.Flag(kind);
                if ((a == flag || a.StartsWith(flag + "=", StringComparison.Ordinal) || a.StartsWith(flag + ":", StringComparison.Ordinal)) && !order.Contains(kind)) order.Add(kind);
            }
        string? combiner = p.GetValue(o.Combiner);
        double? c = p.GetValue(o.CAGradC);
        if (c is not null && combiner == "sum") throw new UsageException("--cagrad-c only applies with CAGrad; drop --combiner sum.");
        if (c is < 0) throw new UsageException($"--cagrad-c must be non-negative; got {c}.");
        double? age = p.GetValue(o.Age);
        if (age is < 0 or > 120) throw new UsageException($"--age must be in [0, 120] years; got {age}.");
        var options = new RecipeCliOptions
        {
            Recipe = p.GetValue(o.Recipe),
            Order = order,
            Preset = p.GetValue(o.Preset),
            Weights = p.GetValue(o.Weights),
            RandomWeights = p.GetValue(o.RandomWeights),
            Model = p.GetValue(o.Model),
            ModelsDir = p.GetValue(o.Models),
            ArcFace = p.GetValue(o.ArcFace), MobileFaceNet = p.GetValue(o.MobileFaceNet), BiSeNet = p.GetValue(o.BiSeNet),
            Clip = p.GetValue(o.Clip), Vgg = p.GetValue(o.Vgg), FaceApi = p.GetValue(o.FaceApi),
            Identity = p.GetValue(o.Identity), Landmarks = p.GetValue(o.Landmarks), Parsing = p.GetValue(o.Parsing),
            Text = p.GetValue(o.Text), Style = p.GetValue(o.Style), Content = p.GetValue(o.Content), NegativePrompt = p.GetValue(o.NegativePrompt),
            LandmarksBox = p.GetValue(o.LandmarksBox) is { } box ? ParseBox(box) : null,
            Age = age,
            Gender = p.GetValue(o.Gender) is { } g ? (g == "male" ? FaceGender.Male : FaceGender.Female) : null,
            Expression = p.GetValue(o.Expression) is { } e ? Enum.Parse<FaceExpression>(e, ignoreCase: true) : null,
            AttributeScale = p.GetValue(o.AttributeScale),
            Scales = scales,
            Stop = p.GetValue(o.Stop),
            Steps = p.GetValue(o.Steps),
            Method = p.GetValue(o.Method) is { } m ? (m == "vanilla" ? RecipeMethod.Vanilla : RecipeMethod.ZMagic) : null,
            CAGrad = combiner is null ? null : combiner == "cagrad",
            CAGradC = c,
            Cfg = p.GetValue(o.Cfg),
            TimeTravel = p.GetValue(o.TimeTravel),
            ResearchParity = p.GetValue(o.ResearchParity),
            Seed = p.GetValue(o.Seed),
            Samples = p.GetValue(o.Samples),
            Batch = p.IsGiven(o.Batch) ? p.GetValue(o.Batch) : null,
            Size = p.GetValue(o.Size),
            Device = p.GetValue(o.Device)!,
            Threads = p.GetValue(o.Threads),
            Out = p.GetValue(o.Out)!,
            Quiet = p.GetValue(o.Quiet),
        };
        return RecipeRunner.Run(options, context.Out, context.Err, context.Cancellation);
    }

    private static Option<T> Completed<T>(Option<T> option, IEnumerable<string> values)
    {
        option.CompletionSources.Add(values.ToArray());
        return option;
    }

    /// <summary>A finite number, null when not given.</summary>
    private static Option<double?> OptionalDouble(string name, string description, string valueName) =>
        new(name)
        {
            Description = description,
            HelpName = valueName,
            CustomParser = r =>
            {
                string s = r.Tokens.Count == 1 ? r.Tokens[0].Value : "";
                if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)) return v;
                r.AddError($"Option {name} needs a finite number; got '{s}'.");
                return null;
            },
        };

    private static string Box(FaceCropBox b) => string.Create(CultureInfo.InvariantCulture, $"{b.Top},{b.Bottom},{b.Left},{b.Right}");

    private static FaceCropBox ParseBox(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        if (parts.Length != 4 || !parts.All(x => int.TryParse(x, NumberStyles.Integer, CultureInfo.InvariantCulture, out _)))
            throw new UsageException($"--landmarks-box needs four integers TOP,BOTTOM,LEFT,RIGHT (pixels of the 256x256 image); got '{text}'.");
        var v = parts.Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
        var box = new FaceCropBox(v[0], v[1], v[2], v[3]);
        try { box.Validate(256, 256, "--landmarks-box"); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        return box;
    }
}
