using ZMagic.Core.Guidance;
using ZMagic.Guidance.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.StableDiffusion;

/// <summary><see cref="CfgRelativeStepSize"/> reads the CFG correction from its context, item by item.</summary>
public class CfgRelativeStepSizeTests
{
    private static StepSizeContext Context(Tensor gradient, Tensor? correction) =>
        new(500, 480, 0.5, 0.6, zeros_like(gradient), gradient) { CfgCorrection = correction };

    [Fact]
    public void Step_size_is_the_scale_times_the_ratio_of_rms_values_per_item()
    {
        var g = tensor(new double[] { 1, 1, 1, 1, 2, 2, 2, 2 }).reshape(2, 1, 2, 2);
        var c = tensor(new double[] { 3, 3, 3, 3, 1, 1, 1, 1 }).reshape(2, 1, 2, 2);
        var rule = new CfgRelativeStepSize(0.2);
        var rho = rule.StepSizes(Context(g, c));
        Assert.Equal(2, rho.Length);
        Assert.Equal(0.2 * 3 / 1, rho[0], 12);
        Assert.Equal(0.2 * 1 / 2, rho[1], 12);
        Assert.Equal(0.2 * 3, rule.StepSizes(Context(g.narrow(0, 0, 1), c.narrow(0, 0, 1)))[0], 12);
        Assert.Equal(0.0, rule.StepSizes(Context(zeros(1, 1, 2, 2, ScalarType.Float64), c.narrow(0, 0, 1)))[0]);
    }

    [Fact]
    public void Without_a_correction_it_says_which_denoiser_is_needed()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => new CfgRelativeStepSize(0.2).StepSizes(Context(ones(1, 1, 2, 2), null)));
        Assert.Contains("IClassifierFreeDenoiser", ex.Message);
    }
}
