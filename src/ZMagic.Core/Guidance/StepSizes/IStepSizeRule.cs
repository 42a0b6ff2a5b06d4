namespace ZMagic.Core.Guidance;

/// <summary>Computes a condition's step size rho at one step, one value per batch item.</summary>
/// <remarks>
/// A batch item's step size depends on that item alone, so that a sample is the same alone or in a batch (the
/// sampler's promise). The engine calls <see cref="StepSizes"/>; its default calls <see cref="StepSize"/> once per
/// item with that item's slices of the epsilon and the gradient, so a rule written for one item is per item in a
/// batch without further work. FreeDoM's research code takes norm-based step sizes over the whole batch; this library
/// deliberately does not (docs/strategies.md).
/// </remarks>
public interface IStepSizeRule
{
    /// <summary>
    /// The step size for this step, from whatever the context holds (the engine passes one item at a time through
    /// the default <see cref="StepSizes"/>).
    /// </summary>
    double StepSize(in StepSizeContext context);

    /// <summary>
    /// The step sizes of the batch items [B] (B = <c>context.Epsilon.shape[0]</c>): item i's value may depend on item
    /// i's slices only. The default calls <see cref="StepSize"/> on each item's slices ([1, ...]; the whole context when
    /// B = 1, so single-item numbers are exactly those of <see cref="StepSize"/>).
    /// </summary>
    double[] StepSizes(in StepSizeContext context) => StepSizeRules.PerItem(this, context);

    /// <summary>
    /// Whether <see cref="StepSize"/> reads <see cref="StepSizeContext.Gradient"/>. True by default (safe); rules
    /// that do not need it return false, which lets Vanilla guidance take one backward pass for all conditions.
    /// </summary>
    bool UsesGradient => true;
}
