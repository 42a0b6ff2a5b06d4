using System.Globalization;
using ZMagic.Encoders.Face;
using ZMagic.Encoders.FaceApi;
using ZMagic.Guidance.Recipes;

namespace ZMagic.Cli.Commands;

/// <summary>
/// The command line of <c>zmagic generate --recipe NAME</c> and of <c>generate</c> with the face/text condition
/// flags: parsed into <see cref="RecipeCliOptions"/> (plain values) and run by <see cref="RecipeRunner"/>. Kept apart
/// from <see cref="GenerateCommand"/> so that the parsing can move to another parser without touching the runner.
/// </summary>
public static class RecipeArgs
{
    private static readonly string[] ConditionFlags = ["identity", "landmarks", "parsing", "text", "age", "gender", "expression"];

    private static readonly string[] ValueOptions =
    [
        "recipe", "preset", "weights", "model", "models", "arcface", "mobilefacenet", "bisenet", "clip", "vgg", "faceapi",
        "identity", "landmarks", "parsing", "text", "style", "content", "negative-prompt", "landmarks-box", "age", "gender", "expression",
        "identity-scale", "landmarks-scale", "parsing-scale", "text-scale", "style-scale", "content-scale", "attribute-scale",
        "stop", "steps", "method", "combiner", "cagrad-c", "cfg", "time-travel", "seed", "samples", "batch", "size", "device", "threads", "out",
    ];

    /// <summary>Help text (appended to <c>zmagic generate --help</c>).</summary>
    public static string Help => $"""
        Recipes and face/text conditions:
          zmagic generate --recipe NAME [--weights FILE | --model DIR] [--identity IMG] [--landmarks IMG] [--parsing IMG]
                          [--text PROMPT] [--style IMG] [--content IMG] [--age YEARS] [--gender male|female]
                          [--expression NAME] [--research-parity] [overrides] [--out DIR]

          --recipe NAME       one of: {string.Join(", ", RecipeCatalog.All.Select(r => r.Name))}
                              (docs/recipes.md: settings and their source); the flags below override its settings
          --weights FILE      the CelebA-HQ DDPM (celeba_hq.ckpt) for face recipes; --model DIR for Stable Diffusion ones
          --models DIR        where the condition networks are, under their published names (default: the folder of
                              --weights, or the folder holding --model): model_ir_se50.pth, mobilefacenet_model_best.pth.tar,
                              79999_iter.pth, clip-vit-base-patch16/, vgg16-397923af.pth, face-api/
          --arcface/--mobilefacenet/--bisenet/--clip/--vgg/--faceapi PATH   one network's file (overrides --models)
          --identity IMG      identity reference (ArcFace IR-SE50)
          --landmarks IMG     landmarks reference (MobileFaceNet); --landmarks-box T,B,L,R sets the face crop
                              (default {FaceRecipeBuilder.DefaultLandmarksBox}, for aligned CelebA-HQ faces)
          --parsing IMG       parsing reference (BiSeNet)
          --text PROMPT       CLIP text guidance on faces; the classifier-free-guidance prompt on Stable Diffusion
          --style/--content IMG   Stable Diffusion recipes (VGG16)
          --age/--gender/--expression   face attributes (face-api), added after the recipe's conditions
          --NAME-scale S      a condition's scale (identity, landmarks, parsing, text, style, content, attribute)
          --stop T            the face conditions act only at t > T (research code: 200)
          --steps K, --method zmagic|vanilla, --combiner cagrad|sum, --cagrad-c C, --cfg S, --time-travel N
          --research-parity   the research code's update rule and CAGrad scaling: about 2.5x the library's default
                              update at the same scales (the default gives 40 % of it with two conditions, 42 % with three)
          Without --recipe, --identity/--landmarks/--parsing/--text/--age/--gender/--expression build a recipe from the
          conditions in the order given, each with its research setting.

        Example:
          zmagic generate --recipe face-id-landmarks --weights celeba_hq.ckpt --identity ref.png --landmarks ref.png
        """;

    /// <summary>Whether the arguments are for the recipe runner: --recipe, or a face/text condition flag on a non-SD preset.</summary>
    public static bool Handles(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        bool Has(string name) => args.Any(a => a == "--" + name || a.StartsWith("--" + name + "=", StringComparison.Ordinal));
        if (Has("recipe")) return true;
        if (SdGenerateCommand.Handles(args)) return false;
        return ConditionFlags.Any(Has);
    }

    /// <summary>Parses the arguments (usage errors as <see cref="UsageException"/>).</summary>
    public static RecipeCliOptions Parse(IReadOnlyList<string> args, out bool help)
    {
        var p = ParsedArgs.Parse(args, ValueOptions, ["quiet", "random-weights", "research-parity"]);
        help = p.Help;
        if (p.Positionals.Count > 0) throw new UsageException($"Unexpected argument '{p.Positionals[0]}'.");
        var scales = new Dictionary<RecipeConditionKind, double>();
        foreach (var kind in Enum.GetValues<RecipeConditionKind>())
        {
            string flag = RecipeRunner.Flag(kind) + "-scale";
            if (!p.Has(flag)) continue;
            double s = p.Double(flag, 0);
            if (s < 0) throw new UsageException($"--{flag} must be non-negative; got {s}.");
            scales[kind] = s;
        }
        // The order of the condition flags on the command line (a recipe built from them applies them in that order).
        var order = new List<RecipeConditionKind>();
        foreach (var a in args)
            foreach (var kind in Enum.GetValues<RecipeConditionKind>())
                if ((a == "--" + RecipeRunner.Flag(kind) || a.StartsWith("--" + RecipeRunner.Flag(kind) + "=", StringComparison.Ordinal)) && !order.Contains(kind))
                    order.Add(kind);
        string? combiner = p.Has("combiner") ? p.Choice("combiner", "cagrad", "cagrad", "sum") : null;
        if (p.Has("cagrad-c") && combiner == "sum") throw new UsageException("--cagrad-c only applies with CAGrad; drop --combiner sum.");
        double? c = p.Has("cagrad-c") ? p.Double("cagrad-c", 0.5) : null;
        if (c is < 0) throw new UsageException($"--cagrad-c must be non-negative; got {c}.");
        return new RecipeCliOptions
        {
            Recipe = p.String("recipe"),
            Order = order,
            Preset = p.String("preset"),
            Weights = p.String("weights"),
            RandomWeights = p.Flag("random-weights"),
            Model = p.String("model"),
            ModelsDir = p.String("models"),
            ArcFace = p.String("arcface"), MobileFaceNet = p.String("mobilefacenet"), BiSeNet = p.String("bisenet"),
            Clip = p.String("clip"), Vgg = p.String("vgg"), FaceApi = p.String("faceapi"),
            Identity = p.String("identity"), Landmarks = p.String("landmarks"), Parsing = p.String("parsing"),
            Text = p.String("text"), Style = p.String("style"), Content = p.String("content"), NegativePrompt = p.String("negative-prompt"),
            LandmarksBox = p.String("landmarks-box") is { } box ? Box(box) : null,
            Age = p.Has("age") ? Age(p.Double("age", 0)) : null,
            Gender = p.Has("gender") ? (p.Choice("gender", "female", "female", "male") == "male" ? FaceGender.Male : FaceGender.Female) : null,
            Expression = p.Has("expression") ? Expression(p.String("expression")!) : null,
            AttributeScale = p.Double("attribute-scale", 0.02),
            Scales = scales,
            Stop = p.Has("stop") ? p.Int("stop", 200, -1, 1000) : null,
            Steps = p.Has("steps") ? p.Int("steps", 100, 1, 1000) : null,
            Method = p.Has("method") ? (p.Choice("method", "zmagic", "zmagic", "vanilla") == "vanilla" ? RecipeMethod.Vanilla : RecipeMethod.ZMagic) : null,
            CAGrad = combiner is null ? null : combiner == "cagrad",
            CAGradC = c,
            Cfg = p.Has("cfg") ? p.Double("cfg", 5) : null,
            TimeTravel = p.Has("time-travel") ? p.Int("time-travel", 1, 1, 100) : null,
            ResearchParity = p.Flag("research-parity"),
            Seed = p.Long("seed", 0),
            Samples = p.Int("samples", 1, 1, 100_000),
            Batch = p.Has("batch") ? p.Int("batch", 1, 1, 4096) : null,
            Size = p.Has("size") ? p.Int("size", 512, 8, SdGenerateCommand.MaxSize) : null,
            Device = p.String("device") ?? "cpu",
            Threads = p.Int("threads", 2, 1, 256),
            Out = p.String("out") ?? "zmagic-out",
            Quiet = p.Flag("quiet"),
        };
    }

    private static FaceCropBox Box(string text)
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

    private static double Age(double years) =>
        years is >= 0 and <= 120 ? years : throw new UsageException($"--age must be in [0, 120] years; got {years}.");

    private static FaceExpression Expression(string text) =>
        Enum.TryParse<FaceExpression>(text, ignoreCase: true, out var e) && Enum.IsDefined(e) && !int.TryParse(text, out _)
            ? e
            : throw new UsageException($"--expression must be one of {string.Join(", ", Enum.GetNames<FaceExpression>().Select(n => n.ToLowerInvariant()))}; got '{text}'.");
}
