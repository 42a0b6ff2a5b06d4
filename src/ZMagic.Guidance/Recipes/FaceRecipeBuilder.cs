using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Encoders.Clip;
using ZMagic.Encoders.Face;
using ZMagic.Guidance.Face;
using ZMagic.Guidance.TextStyleContent;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Recipes;

/// <summary>
/// What a face recipe's conditions need: the loaded networks and the reference inputs. The networks stay owned by
/// the caller; references are [1 or B, 3, H, W] in [-1, 1], framed like the generated faces (aligned CelebA-HQ).
/// </summary>
public sealed record FaceRecipeInputs
{
    /// <summary>ArcFace IR-SE50 (or iresnet) for the identity condition.</summary>
    public IFaceEmbedder? IdentityEncoder { get; init; }

    /// <summary>The identity reference.</summary>
    public Tensor? IdentityReference { get; init; }

    /// <summary>MobileFaceNet for the landmarks condition.</summary>
    public MobileFaceNet? Landmarker { get; init; }

    /// <summary>The landmarks reference.</summary>
    public Tensor? LandmarksReference { get; init; }

    /// <summary>The landmark crop box in pixels of the generated image; null: <see cref="FaceRecipeBuilder.DefaultLandmarksBox"/>.</summary>
    public FaceCropBox? LandmarksBox { get; init; }

    /// <summary>BiSeNet for the parsing condition.</summary>
    public BiSeNet? Parser { get; init; }

    /// <summary>The parsing reference.</summary>
    public Tensor? ParsingReference { get; init; }

    /// <summary>CLIP (ViT-B/16 in the research code) for the text condition.</summary>
    public ClipModel? Clip { get; init; }

    /// <summary>CLIP's tokenizer.</summary>
    public ClipTokenizer? Tokenizer { get; init; }

    /// <summary>The prompt of the text condition.</summary>
    public string? Prompt { get; init; }
}

/// <summary>A recipe made ready to sample: its conditions and sampler options. Dispose it to free the conditions.</summary>
public sealed class RecipeRun : IDisposable
{
    private readonly List<IDisposable> _owned;

    internal RecipeRun(Recipe recipe, GuidanceParity parity, IReadOnlyList<IGuidanceCondition> conditions, SamplerOptions options, List<IDisposable> owned)
    {
        Recipe = recipe;
        Parity = parity;
        Conditions = conditions;
        Options = options;
        _owned = owned;
    }

    /// <summary>The recipe with the overrides applied.</summary>
    public Recipe Recipe { get; }

    /// <summary>The update rule and CAGrad scaling the options use.</summary>
    public GuidanceParity Parity { get; }

    /// <summary>The conditions, in the recipe's order.</summary>
    public IReadOnlyList<IGuidanceCondition> Conditions { get; }

    /// <summary>Steps, sampler step, strategy, combiner and time travel (set Seed, BatchSize, FirstItem, Device with <c>with</c>).</summary>
    public SamplerOptions Options { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
    }
}

/// <summary>Turns a CelebA-HQ face recipe into conditions and sampler options.</summary>
public static class FaceRecipeBuilder
{
    /// <summary>
    /// The landmark crop used when the caller gives none: FreeDoM's crop rule (<see cref="FaceCropBox.FromDetection"/>)
    /// applied to the detection [x1 64, y1 70, x2 192, y2 214], where RetinaFace puts an aligned CelebA-HQ face in a
    /// 256x256 frame. FreeDoM detects the box on its landmark reference; pass the box of your own reference when it is
    /// framed differently.
    /// </summary>
    public static FaceCropBox DefaultLandmarksBox { get; } = FaceCropBox.FromDetection(64, 70, 192, 214);

    /// <summary>Builds the conditions and options of <paramref name="recipe"/> (a <see cref="RecipeBackbone.CelebAHqDdpm"/> recipe).</summary>
    /// <exception cref="ArgumentException">The recipe is not a face recipe, or an input a condition needs is missing.</exception>
    public static RecipeRun Build(Recipe recipe, FaceRecipeInputs inputs, RecipeOverrides? overrides = null)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        ArgumentNullException.ThrowIfNull(inputs);
        if (recipe.Backbone != RecipeBackbone.CelebAHqDdpm)
            throw new ArgumentException($"Recipe '{recipe.Name}' runs on {recipe.Backbone}; use {nameof(StableDiffusionRecipeBuilder)}.", nameof(recipe));
        var effective = RecipeGuidance.Apply(recipe, overrides);
        var parity = overrides?.Parity ?? GuidanceParity.Library;
        var owned = new List<IDisposable>();
        var conditions = new List<IGuidanceCondition>();
        try
        {
            foreach (var c in effective.Conditions)
            {
                var condition = Create(c, inputs, effective.Name);
                if (condition is IDisposable d) owned.Add(d);
                conditions.Add(condition);
            }
            var options = new SamplerOptions
            {
                Steps = effective.Steps,
                SamplerStep = RecipeGuidance.SamplerStep(effective.SamplerStep),
                Strategy = RecipeGuidance.Strategy(effective, parity),
                Combiner = RecipeGuidance.Combiner(effective, parity, overrides?.CAGrad),
                TimeTravel = RecipeGuidance.TimeTravel(effective),
            };
            return new RecipeRun(effective, parity, conditions, options, owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>The step-size rule of a recipe condition on a pixel backbone.</summary>
    public static IStepSizeRule StepSize(RecipeCondition condition)
    {
        ArgumentNullException.ThrowIfNull(condition);
        return condition.Rule switch
        {
            RecipeStepRule.SqrtAlphaBar => new SqrtAlphaBarStepSize(condition.Scale),
            RecipeStepRule.NormRelative => new NormRelativeStepSize(condition.Scale),
            _ => throw new ArgumentException($"Step rule {condition.Rule} needs Stable Diffusion's CFG denoiser.", nameof(condition)),
        };
    }

    private static IGuidanceCondition Create(RecipeCondition c, FaceRecipeInputs inputs, string recipe)
    {
        var rule = StepSize(c);
        switch (c.Kind)
        {
            case RecipeConditionKind.Identity:
                return new IdentityCondition(Need(inputs.IdentityEncoder, "an identity encoder (ArcFace IR-SE50)", recipe), Need(inputs.IdentityReference, "an identity reference image", recipe),
                    new IdentityOptions { Scale = c.Scale, StepSize = rule, Window = c.Window });
            case RecipeConditionKind.Landmarks:
                return new LandmarksCondition(Need(inputs.Landmarker, "a landmark network (MobileFaceNet)", recipe), Need(inputs.LandmarksReference, "a landmarks reference image", recipe),
                    inputs.LandmarksBox ?? DefaultLandmarksBox, new LandmarksOptions { Scale = c.Scale, StepSize = rule, Window = c.Window });
            case RecipeConditionKind.Parsing:
                return new ParsingCondition(Need(inputs.Parser, "a face parser (BiSeNet)", recipe), Need(inputs.ParsingReference, "a parsing reference image", recipe),
                    new ParsingOptions { Scale = c.Scale, StepSize = rule, Window = c.Window });
            case RecipeConditionKind.Text:
                return new TextCondition(Need(inputs.Clip, "a CLIP model", recipe), Need(inputs.Tokenizer, "a CLIP tokenizer", recipe), Need(inputs.Prompt, "a prompt", recipe),
                    new TextConditionOptions { Schedule = new GuidanceSchedule(rule, c.Window) });
            default:
                throw new ArgumentException($"Recipe '{recipe}': condition {c.Kind} is not a face condition.");
        }
    }

    private static T Need<T>(T? value, string what, string recipe) where T : class =>
        value ?? throw new ArgumentException($"Recipe '{recipe}' needs {what}.");
}
