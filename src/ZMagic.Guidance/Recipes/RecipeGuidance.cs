using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;

namespace ZMagic.Guidance.Recipes;

/// <summary>Applies overrides to a recipe and picks its strategy, combiner, sampler step and time travel.</summary>
public static class RecipeGuidance
{
    /// <summary>
    /// The recipe with <paramref name="overrides"/> applied: steps, per-condition scales, the stop timestep of every
    /// condition that has one, method, CAGrad's c, CFG and time-travel repeats.
    /// </summary>
    /// <exception cref="ArgumentException">An override out of range, or a scale for a condition the recipe lacks.</exception>
    public static Recipe Apply(Recipe recipe, RecipeOverrides? overrides)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        if (overrides is null) return recipe;
        if (overrides.Steps is int s && s < 1) throw new ArgumentOutOfRangeException(nameof(overrides), s, "Steps must be at least 1.");
        if (overrides.CAGradC is double c && !(c >= 0 && double.IsFinite(c))) throw new ArgumentOutOfRangeException(nameof(overrides), c, "CAGrad's c must be finite and non-negative.");
        if (overrides.TimeTravelRepeats is int r && r < 1) throw new ArgumentOutOfRangeException(nameof(overrides), r, "Time-travel repeats must be at least 1.");
        if (overrides.Stop is int stop && stop < -1) throw new ArgumentOutOfRangeException(nameof(overrides), stop, "The stop timestep must be -1 (never stop) or more.");
        var conditions = recipe.Conditions.ToList();
        if (overrides.Scales is { } scales)
            foreach (var (kind, scale) in scales)
            {
                int i = conditions.FindIndex(x => x.Kind == kind);
                if (i < 0) throw new ArgumentException($"Recipe '{recipe.Name}' has no {kind} condition to scale (it has {string.Join(", ", conditions.Select(x => x.Kind))}).", nameof(overrides));
                if (!(scale >= 0 && double.IsFinite(scale))) throw new ArgumentOutOfRangeException(nameof(overrides), scale, $"The {kind} scale must be finite and non-negative.");
                conditions[i] = conditions[i] with { Scale = scale };
            }
        if (overrides.Stop is int newStop)
            for (int i = 0; i < conditions.Count; i++)
                if (conditions[i].Window.Stop > 0) conditions[i] = conditions[i] with { Window = conditions[i].Window with { Stop = newStop } };
        return recipe with
        {
            Steps = overrides.Steps ?? recipe.Steps,
            Conditions = conditions,
            Method = overrides.Method ?? recipe.Method,
            CAGradC = overrides.CAGradC ?? recipe.CAGradC,
            Cfg = overrides.Cfg ?? recipe.Cfg,
            TimeTravel = overrides.TimeTravelRepeats is int repeats
                ? (repeats == 1 ? null : (recipe.TimeTravel ?? new RecipeTimeTravel(repeats, 0, 1000)) with { Repeats = repeats })
                : recipe.TimeTravel,
        };
    }

    /// <summary>The base sampler step.</summary>
    public static ISamplerStep SamplerStep(RecipeSamplerStep step) => step switch
    {
        RecipeSamplerStep.FreeDoMEta => new FreeDoMEtaStep(0.5),
        RecipeSamplerStep.DdpmPosterior => new DdpmPosteriorStep(),
        RecipeSamplerStep.Ddim => new DdimStep(0),
        _ => throw new ArgumentOutOfRangeException(nameof(step), step, "Unknown sampler step."),
    };

    /// <summary>
    /// The Z-Magic options: the library's defaults, or <see cref="ZMagicOptions.ResearchCodeParity"/> under
    /// <see cref="GuidanceParity.ResearchCode"/>; <paramref name="anchorOnBaseStep"/> for Stable Diffusion (the CFG step
    /// is the proposal). The research code's Stable Diffusion content + style rule nets out to the replacement form
    /// (it subtracts each term, then <c>CAGrad - sum</c>), so there parity keeps <see cref="ZMagicUpdateRule.Replacement"/>
    /// and only adds the style branch's own noise.
    /// </summary>
    public static ZMagicOptions ZMagicOptions(GuidanceParity parity, bool anchorOnBaseStep = false) => (parity, anchorOnBaseStep) switch
    {
        (GuidanceParity.Library, false) => new ZMagicOptions(),
        (GuidanceParity.Library, true) => new ZMagicOptions { AnchorOnBaseStep = true },
        (GuidanceParity.ResearchCode, false) => Core.Guidance.ZMagicOptions.ResearchCodeParity,
        (GuidanceParity.ResearchCode, true) => new ZMagicOptions { AnchorOnBaseStep = true, BranchNoise = true },
        _ => throw new ArgumentOutOfRangeException(nameof(parity), parity, "Unknown parity."),
    };

    /// <summary>The strategy of a recipe: Vanilla (FreeDoM) or Z-Magic with <paramref name="parity"/>'s options.</summary>
    public static IGuidanceStrategy Strategy(Recipe recipe, GuidanceParity parity)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        return recipe.Method == RecipeMethod.Vanilla
            ? new VanillaStrategy(new VanillaOptions { PerConditionGradients = true })
            : new ZMagicStrategy(ZMagicOptions(parity, recipe.Backbone == RecipeBackbone.StableDiffusion));
    }

    /// <summary>
    /// The combiner: for Z-Magic CAGrad with the recipe's c and per-channel setting (the library's exact dual, scaled
    /// to equal the plain sum when the tasks agree; under <see cref="GuidanceParity.ResearchCode"/> the research
    /// code's constants and rescaling); for Vanilla, or when <paramref name="cagrad"/> is false, the plain sum.
    /// </summary>
    public static IGradientCombiner Combiner(Recipe recipe, GuidanceParity parity, bool? cagrad = null)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        bool useCAGrad = cagrad ?? recipe.Method == RecipeMethod.ZMagic;
        if (!useCAGrad) return SumCombiner.Instance;
        var options = parity == GuidanceParity.ResearchCode
            ? CAGradOptions.ResearchCode with { C = recipe.CAGradC, PerChannel = recipe.PerChannelCAGrad }
            : new CAGradOptions { C = recipe.CAGradC, PerChannel = recipe.PerChannelCAGrad };
        return new CAGradCombiner(options);
    }

    /// <summary>The time travel, or null.</summary>
    public static TimeTravel? TimeTravel(Recipe recipe)
    {
        ArgumentNullException.ThrowIfNull(recipe);
        return recipe.TimeTravel is { Repeats: > 1 } t ? new TimeTravel(t.Repeats, t.From, t.To) : null;
    }
}
