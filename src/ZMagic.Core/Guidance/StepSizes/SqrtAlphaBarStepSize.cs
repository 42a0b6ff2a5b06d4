namespace ZMagic.Core.Guidance;

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
