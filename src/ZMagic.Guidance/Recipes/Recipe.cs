using ZMagic.Core.Guidance;

namespace ZMagic.Guidance.Recipes;

/// <summary>The diffusion backbone a recipe was run on.</summary>
public enum RecipeBackbone
{
    /// <summary>The CelebA-HQ 256x256 pixel DDPM (SDEdit's <c>celeba_hq.ckpt</c>, 1000 training timesteps).</summary>
    CelebAHqDdpm,

    /// <summary>Stable Diffusion 1.x in latent space (classifier-free guidance for the prompt).</summary>
    StableDiffusion,
}

/// <summary>A built-in condition a recipe names.</summary>
public enum RecipeConditionKind
{
    /// <summary>Face identity (ArcFace IR-SE50, <see cref="Face.IdentityCondition"/>).</summary>
    Identity,

    /// <summary>68 facial landmarks (MobileFaceNet, <see cref="Face.LandmarksCondition"/>).</summary>
    Landmarks,

    /// <summary>Face parsing (BiSeNet, <see cref="Face.ParsingCondition"/>).</summary>
    Parsing,

    /// <summary>A text prompt through CLIP (<see cref="TextStyleContent.TextCondition"/>); on Stable Diffusion the prompt is classifier-free guidance instead.</summary>
    Text,

    /// <summary>Style of a reference image (Gram matrices, <see cref="TextStyleContent.StyleCondition"/>).</summary>
    Style,

    /// <summary>Content of a reference image (VGG features, <see cref="TextStyleContent.ContentCondition"/>).</summary>
    Content,
}

/// <summary>How a recipe's condition computes its step size.</summary>
public enum RecipeStepRule
{
    /// <summary>FreeDoM's face rule <c>rho = sqrt(abar_t) * scale</c> (<see cref="SqrtAlphaBarStepSize"/>).</summary>
    SqrtAlphaBar,

    /// <summary>FreeDoM's CLIP rule, relative to how far the sampler moves (<see cref="NormRelativeStepSize"/>).</summary>
    NormRelative,

    /// <summary>Stable Diffusion: <c>scale * rms(CFG correction) / rms(g)</c> (<see cref="StableDiffusion.CfgRelativeStepSize"/>).</summary>
    CfgRelative,
}

/// <summary>The base sampler step of a recipe.</summary>
public enum RecipeSamplerStep
{
    /// <summary>FreeDoM's eta step with eta 0.5 (<see cref="ZMagic.Core.Diffusion.FreeDoMEtaStep"/>).</summary>
    FreeDoMEta,

    /// <summary>The DDPM posterior (ancestral) step (<see cref="ZMagic.Core.Diffusion.DdpmPosteriorStep"/>).</summary>
    DdpmPosterior,

    /// <summary>Deterministic DDIM (eta 0, <see cref="ZMagic.Core.Diffusion.DdimStep"/>).</summary>
    Ddim,
}

/// <summary>How the conditions of a recipe are applied.</summary>
public enum RecipeMethod
{
    /// <summary>Z-Magic: sequential conditioning, CAGrad per channel (c = 0.5).</summary>
    ZMagic,

    /// <summary>FreeDoM-style independent guidance: the gradients summed.</summary>
    Vanilla,
}

/// <summary>
/// Which update rule and CAGrad scaling a recipe runs with. <see cref="Library"/> (the default) uses the paper's
/// reading (the combined update replaces the individual terms; CAGrad scaled to equal the plain sum when the tasks
/// agree). <see cref="ResearchCode"/> uses the Z-Magic research code's rule (<see cref="ZMagicUpdateRule.ResearchCode"/>:
/// every term subtracted once, then again together with CAGrad's direction), its CAGrad constants and rescaling
/// (<see cref="CAGradOptions.ResearchCode"/>) and, for three conditions, its per-branch noise. At the same scales the
/// library's update has 40 % of the research code's length for two conditions and 42 % for three when the tasks agree or are unrelated, 27-32 % when they conflict (docs/recipes.md).
/// </summary>
public enum GuidanceParity
{
    /// <summary>The library's update rule and CAGrad scaling (the paper's reading).</summary>
    Library,

    /// <summary>The research code's update rule, CAGrad variant and branch noise.</summary>
    ResearchCode,
}

/// <summary>One condition of a recipe, in the order the recipe applies them (Z-Magic: the first one is the anchor).</summary>
/// <param name="Kind">Which built-in condition.</param>
/// <param name="Scale">Its scale (the meaning depends on <paramref name="Rule"/>).</param>
/// <param name="Rule">The step-size rule.</param>
/// <param name="Window">Where it acts, in the backbone's timesteps (FreeDoM's <c>if not i &lt;= stop</c> is <c>Stop: stop</c>).</param>
/// <param name="Source">Where its scale, rule and window come from.</param>
public sealed record RecipeCondition(RecipeConditionKind Kind, double Scale, RecipeStepRule Rule, GuidanceWindow Window, string Source);

/// <summary>Time travel as a recipe gives it: repeats per step for timesteps in [From, To].</summary>
/// <param name="Repeats">Total passes per step.</param>
/// <param name="From">Lowest timestep (inclusive).</param>
/// <param name="To">Highest timestep (inclusive).</param>
public sealed record RecipeTimeTravel(int Repeats, int From, int To);

/// <summary>
/// A named setting of the paper's experiments, with the values the research code ran it with and where each comes
/// from. Recipes are data: <see cref="FaceRecipeBuilder"/> and <see cref="StableDiffusionRecipeBuilder"/> turn one into
/// conditions and sampler options; <see cref="RecipeOverrides"/> changes any value.
/// </summary>
public sealed record Recipe
{
    /// <summary>The name (<c>zmagic generate --recipe NAME</c>).</summary>
    public required string Name { get; init; }

    /// <summary>One line: what it makes.</summary>
    public required string Description { get; init; }

    /// <summary>The backbone the recipe was run on.</summary>
    public required RecipeBackbone Backbone { get; init; }

    /// <summary>The research run it reproduces: repository, file, function and line range.</summary>
    public required string Source { get; init; }

    /// <summary>The research code's command line for this run (its run.sh line).</summary>
    public required string Command { get; init; }

    /// <summary>Sampler steps (of the backbone's 1000 training timesteps).</summary>
    public required int Steps { get; init; }

    /// <summary>The base sampler step.</summary>
    public required RecipeSamplerStep SamplerStep { get; init; }

    /// <summary>The conditions, in application order.</summary>
    public required IReadOnlyList<RecipeCondition> Conditions { get; init; }

    /// <summary>Z-Magic or the Vanilla baseline.</summary>
    public RecipeMethod Method { get; init; } = RecipeMethod.ZMagic;

    /// <summary>CAGrad per channel (one dual per image or latent channel), as the research code.</summary>
    public bool PerChannelCAGrad { get; init; } = true;

    /// <summary>CAGrad's c.</summary>
    public double CAGradC { get; init; } = 0.5;

    /// <summary>Classifier-free guidance scale (Stable Diffusion only).</summary>
    public double? Cfg { get; init; }

    /// <summary>Time travel, or null for none.</summary>
    public RecipeTimeTravel? TimeTravel { get; init; }

    /// <summary>What the paper reports for this setting (FreeDoM -> Z-Magic), for orientation.</summary>
    public string? Reported { get; init; }

    /// <summary>Notes: what differs from the research code and why.</summary>
    public string? Notes { get; init; }

    /// <summary>The condition of a kind, or null when the recipe has none.</summary>
    public RecipeCondition? Condition(RecipeConditionKind kind) => Conditions.FirstOrDefault(c => c.Kind == kind);
}

/// <summary>Changes to a recipe's settings (null keeps the recipe's value).</summary>
public sealed record RecipeOverrides
{
    /// <summary>Sampler steps.</summary>
    public int? Steps { get; init; }

    /// <summary>Per-condition scales.</summary>
    public IReadOnlyDictionary<RecipeConditionKind, double>? Scales { get; init; }

    /// <summary>The lowest timestep where the face conditions act (FreeDoM's <c>--stop</c>), for every condition with a stop.</summary>
    public int? Stop { get; init; }

    /// <summary>Z-Magic or Vanilla.</summary>
    public RecipeMethod? Method { get; init; }

    /// <summary>Use CAGrad (true) or the plain sum (false).</summary>
    public bool? CAGrad { get; init; }

    /// <summary>CAGrad's c.</summary>
    public double? CAGradC { get; init; }

    /// <summary>The library's or the research code's update rule and CAGrad scaling.</summary>
    public GuidanceParity Parity { get; init; } = GuidanceParity.Library;

    /// <summary>Classifier-free guidance scale (Stable Diffusion).</summary>
    public double? Cfg { get; init; }

    /// <summary>Time-travel repeats (1 = none).</summary>
    public int? TimeTravelRepeats { get; init; }
}
