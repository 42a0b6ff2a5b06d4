using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

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
