namespace ZMagic.Core.Guidance;

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
