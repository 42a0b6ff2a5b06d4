using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// What a step-size rule may look at when it computes rho for one condition at one step. <see cref="Epsilon"/> and
/// <see cref="Gradient"/> cover the whole batch [B, ...] when passed to <see cref="IStepSizeRule.StepSizes"/>, and one
/// item [1, ...] when its default implementation passes them on to <see cref="IStepSizeRule.StepSize"/>.
/// </summary>
/// <param name="T">Current timestep.</param>
/// <param name="Next">Target timestep.</param>
/// <param name="AlphaBar">abar_t.</param>
/// <param name="AlphaBarNext">abar_t'.</param>
/// <param name="Epsilon">The noise prediction at x_t (detached).</param>
/// <param name="Gradient">
/// The condition's task gradient (detached): g_k with respect to x_t, or Z-Magic's pulled-back d_k. Rules whose
/// <see cref="IStepSizeRule.UsesGradient"/> is false may receive an empty tensor here (the strategy then never
/// computes per-condition gradients just for the rule).
/// </param>
public readonly record struct StepSizeContext(int T, int Next, double AlphaBar, double AlphaBarNext, Tensor Epsilon, Tensor Gradient);

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

/// <summary>FreeDoM's face rule: <c>rho = sqrt(abar_t) * scale</c>.</summary>
/// <param name="Scale">The condition's scale (FreeDoM: ID 100, landmarks 500, parsing 0.2).</param>
public sealed record SqrtAlphaBarStepSize(double Scale) : IStepSizeRule
{
    /// <inheritdoc />
    public double StepSize(in StepSizeContext context) => Math.Sqrt(context.AlphaBar) * Scale;

    /// <inheritdoc />
    public double[] StepSizes(in StepSizeContext context) => StepSizeRules.Uniform(StepSize(context), context);

    /// <inheritdoc />
    public bool UsesGradient => false;
}

/// <summary>A constant step size.</summary>
/// <param name="Scale">rho.</param>
public sealed record ConstantStepSize(double Scale) : IStepSizeRule
{
    /// <inheritdoc />
    public double StepSize(in StepSizeContext context) => Scale;

    /// <inheritdoc />
    public double[] StepSizes(in StepSizeContext context) => StepSizeRules.Uniform(Scale, context);

    /// <inheritdoc />
    public bool UsesGradient => false;
}

/// <summary>
/// FreeDoM's CLIP rule (norm-relative): <c>rho = scale * l1 / rms(g)</c> with
/// <c>l1 = rms(eps) sqrt(1 - abar) / sqrt(abar) * C1</c>, C1 being the DDPM-posterior x0 coefficient. The step's size
/// then tracks how far the sampler itself moves x0, whatever the gradient's magnitude. Both RMS values are taken per
/// batch item (FreeDoM takes them over the whole batch, which makes a sample depend on its batch mates).
/// </summary>
/// <param name="Scale">FreeDoM uses 0.02.</param>
public sealed record NormRelativeStepSize(double Scale) : IStepSizeRule
{
    /// <inheritdoc />
    public double StepSize(in StepSizeContext context)
    {
        double a = context.AlphaBar, an = context.AlphaBarNext;
        double c1 = Math.Sqrt(an) * (1 - a / an) / (1 - a);
        double rmsEps = Math.Sqrt(context.Epsilon.to(TorchSharp.torch.ScalarType.Float64).square().mean().item<double>());
        double l1 = rmsEps * Math.Sqrt(1 - a) / Math.Sqrt(a) * c1;
        double rmsG = Math.Sqrt(context.Gradient.to(TorchSharp.torch.ScalarType.Float64).square().mean().item<double>());
        return rmsG > 0 ? Scale * l1 / rmsG : 0.0;
    }
}

/// <summary>Helpers for per-item step sizes.</summary>
public static class StepSizeRules
{
    /// <summary>The batch size a context describes (the leading dimension of its epsilon).</summary>
    public static int Items(in StepSizeContext context) => context.Epsilon.dim() == 0 ? 1 : (int)context.Epsilon.shape[0];

    /// <summary>One value for every item (rules that look at neither epsilon nor the gradient).</summary>
    public static double[] Uniform(double value, in StepSizeContext context)
    {
        var r = new double[Items(context)];
        Array.Fill(r, value);
        return r;
    }

    /// <summary>
    /// <paramref name="rule"/>'s <see cref="IStepSizeRule.StepSize"/> on each item's slices ([1, ...]; an empty gradient
    /// stays empty). With one item the context is passed on unchanged.
    /// </summary>
    public static double[] PerItem(IStepSizeRule rule, in StepSizeContext context)
    {
        ArgumentNullException.ThrowIfNull(rule);
        int b = Items(context);
        if (b == 1) return new[] { rule.StepSize(context) };
        var r = new double[b];
        bool hasGradient = context.Gradient.numel() > 0;
        for (int i = 0; i < b; i++)
        {
            using var scope = NewDisposeScope();
            var item = context with
            {
                Epsilon = context.Epsilon.narrow(0, i, 1),
                Gradient = hasGradient ? context.Gradient.narrow(0, i, 1) : context.Gradient,
            };
            r[i] = rule.StepSize(item);
        }
        return r;
    }
}
