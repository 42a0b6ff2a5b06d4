using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>What a step-size rule may look at when it computes rho for one condition at one step.</summary>
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

/// <summary>Computes a condition's step size rho at one step.</summary>
public interface IStepSizeRule
{
    /// <summary>The step size for this step.</summary>
    double StepSize(in StepSizeContext context);

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
    public bool UsesGradient => false;
}

/// <summary>A constant step size.</summary>
/// <param name="Scale">rho.</param>
public sealed record ConstantStepSize(double Scale) : IStepSizeRule
{
    /// <inheritdoc />
    public double StepSize(in StepSizeContext context) => Scale;

    /// <inheritdoc />
    public bool UsesGradient => false;
}

/// <summary>
/// FreeDoM's CLIP rule (norm-relative): <c>rho = scale * l1 / rms(g)</c> with
/// <c>l1 = rms(eps) sqrt(1 - abar) / sqrt(abar) * C1</c>, C1 being the DDPM-posterior x0 coefficient. The step's size
/// then tracks how far the sampler itself moves x0, whatever the gradient's magnitude.
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
