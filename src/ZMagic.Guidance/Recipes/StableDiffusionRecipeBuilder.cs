using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Encoders.Vgg;
using ZMagic.Guidance.StableDiffusion;
using ZMagic.Guidance.TextStyleContent;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Recipes;

/// <summary>What a Stable Diffusion recipe needs: the prompt, VGG16 features and the reference images.</summary>
public sealed record StableDiffusionRecipeInputs
{
    /// <summary>The prompt (classifier-free guidance; the Z-Magic anchor).</summary>
    public required string Prompt { get; init; }

    /// <summary>The negative / unconditional prompt.</summary>
    public string NegativePrompt { get; init; } = "";

    /// <summary>VGG16 features (torchvision weights) for style and content; owned by the caller.</summary>
    public VggFeatures? Vgg { get; init; }

    /// <summary>The style reference, [1, 3, H, W] in [-1, 1].</summary>
    public Tensor? StyleReference { get; init; }

    /// <summary>The content reference, [1, 3, H, W] in [-1, 1].</summary>
    public Tensor? ContentReference { get; init; }
}

/// <summary>A Stable Diffusion recipe made ready: the request and the conditions it owns. Dispose it after the run.</summary>
public sealed class StableDiffusionRecipeRun : IDisposable
{
    private readonly List<IDisposable> _owned;

    internal StableDiffusionRecipeRun(Recipe recipe, StableDiffusionRequest request, List<IDisposable> owned)
    {
        Recipe = recipe;
        Request = request;
        _owned = owned;
    }

    /// <summary>The recipe with the overrides applied.</summary>
    public Recipe Recipe { get; }

    /// <summary>The request (set Seed, Size, BatchSize with <c>with</c>).</summary>
    public StableDiffusionRequest Request { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
    }
}

/// <summary>Turns a Stable Diffusion recipe into a <see cref="StableDiffusionRequest"/>.</summary>
public static class StableDiffusionRecipeBuilder
{
    /// <summary>Builds the request of <paramref name="recipe"/> (a <see cref="RecipeBackbone.StableDiffusion"/> recipe).</summary>
    /// <exception cref="ArgumentException">Not a Stable Diffusion recipe, or a missing input.</exception>
    public static StableDiffusionRecipeRun Build(Recipe recipe, StableDiffusionRecipeInputs inputs, RecipeOverrides? overrides = null)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        ArgumentNullException.ThrowIfNull(inputs);
        if (recipe.Backbone != RecipeBackbone.StableDiffusion)
            throw new ArgumentException($"Recipe '{recipe.Name}' runs on {recipe.Backbone}; use {nameof(FaceRecipeBuilder)}.", nameof(recipe));
        var effective = RecipeGuidance.Apply(recipe, overrides);
        var parity = overrides?.Parity ?? GuidanceParity.Library;
        var owned = new List<IDisposable>();
        var conditions = new List<IGuidanceCondition>();
        var guidance = new List<CfgRelativeGuidance>();
        try
        {
            foreach (var c in effective.Conditions)
            {
                if (c.Rule != RecipeStepRule.CfgRelative)
                    throw new ArgumentException($"Recipe '{recipe.Name}': condition {c.Kind} must use the CFG-relative rule on Stable Diffusion.", nameof(recipe));
                var vgg = inputs.Vgg ?? throw new ArgumentException($"Recipe '{recipe.Name}' needs VGG16 features for its {c.Kind} condition.", nameof(inputs));
                IGuidanceCondition condition = c.Kind switch
                {
                    RecipeConditionKind.Style => StyleCondition.Vgg(vgg, inputs.StyleReference ?? throw new ArgumentException($"Recipe '{recipe.Name}' needs a style reference image.", nameof(inputs))),
                    RecipeConditionKind.Content => new ContentCondition(vgg, inputs.ContentReference ?? throw new ArgumentException($"Recipe '{recipe.Name}' needs a content reference image.", nameof(inputs))),
                    _ => throw new ArgumentException($"Recipe '{recipe.Name}': {c.Kind} is not a Stable Diffusion image condition (the prompt is CFG).", nameof(recipe)),
                };
                if (condition is IDisposable d) owned.Add(d);
                conditions.Add(condition);
                guidance.Add(new CfgRelativeGuidance(c.Scale, c.Window));
            }
            bool zmagic = effective.Method == RecipeMethod.ZMagic;
            var request = new StableDiffusionRequest
            {
                Prompt = inputs.Prompt,
                NegativePrompt = inputs.NegativePrompt,
                Steps = effective.Steps,
                GuidanceScale = effective.Cfg ?? 7.5,
                Conditions = conditions,
                ConditionGuidance = guidance,
                Method = zmagic ? SdGuidanceMethod.ZMagic : SdGuidanceMethod.Vanilla,
                Combiner = RecipeGuidance.Combiner(effective, parity, overrides?.CAGrad),
                SamplerStep = RecipeGuidance.SamplerStep(effective.SamplerStep),
                TimeTravel = RecipeGuidance.TimeTravel(effective),
                ZMagicOptions = zmagic ? RecipeGuidance.ZMagicOptions(parity, anchorOnBaseStep: true) : null,
            };
            return new StableDiffusionRecipeRun(effective, request, owned);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }
}
