using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Demo.Digits;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits.Tests;

public class DigitConditionTests
{
    private static readonly GuidanceSchedule AnySchedule = new(new ConstantStepSize(1));

    /// <summary>
    /// Normalised gradient descent on x0 (each item moves a decaying L2 distance along its own gradient): the energy must
    /// fall, i.e. the condition's gradient is informative.
    /// </summary>
    private static (double Before, double After) Descend(IGuidanceCondition c, Tensor x0, double lr, int steps)
    {
        using var scope = NewDisposeScope();
        var x = x0.detach().clone().requires_grad_(true);
        double before = c.Energy(x).sum().item<float>();
        for (int i = 0; i < steps; i++)
        {
            var e = c.Energy(x).sum();
            var g = torch.autograd.grad(new[] { e }, new[] { x }, retain_graph: false)[0];
            using (no_grad())
            {
                var norm = g.flatten(1).norm(1).clamp_min(1e-12).view(-1, 1, 1, 1);
                x = (x - lr / (1 + i / 3.0) * g / norm).detach().requires_grad_(true);
            }
        }
        double after = c.Energy(x).sum().item<float>();
        return (before, after);
    }

    private static Tensor Noise(int b, long seed)
    {
        using var g = new Generator((ulong)seed);
        return (torch.randn(new long[] { b, 1, 32, 32 }, generator: g) * 0.5).clamp(-1, 1);
    }

    [Fact]
    public void Thickness_EnergyIsZeroAtTargetAndFallsUnderDescent()
    {
        var c = new StrokeThicknessCondition(0.2, 0.02, AnySchedule);
        using var x = torch.full(new long[] { 2, 1, 32, 32 }, 2 * 0.2 - 1.0);
        Assert.Equal(0.0, c.Energy(x).abs().max().item<float>(), 5);
        using var n = Noise(2, 1);
        var (before, after) = Descend(c, n, lr: 3, steps: 10);
        Assert.True(after < 0.5 * before, $"thickness energy {before} -> {after}");
    }

    [Fact]
    public void DigitClass_EnergyFallsUnderDescent()
    {
        using var guide = DigitsModels.LoadGuide();
        var c = new DigitClassCondition(guide, 3, AnySchedule);
        using var n = Noise(4, 2);
        var (before, after) = Descend(c, n, lr: 3, steps: 10);
        Assert.True(after < 0.7 * before, $"class energy {before} -> {after}");
    }

    [Fact]
    public void Style_EnergyIsZeroOnTheReferenceAndFallsUnderDescent()
    {
        using var guide = DigitsModels.LoadGuide();
        var (images, labels) = DigitsModels.LoadHeldOut();
        using var _i = images;
        using var _l = labels;
        using var reference = images[0].unsqueeze(0).clone();
        var c = new DigitStyleCondition(guide, reference, AnySchedule);
        Assert.Equal(0.0, c.Energy(reference).item<float>(), 4);
        using var other = images.narrow(0, 1, 4).clone();
        var (before, after) = Descend(c, other, lr: 3, steps: 10);
        Assert.True(after < 0.7 * before, $"style energy {before} -> {after}");
    }

    [Fact]
    public void Conditions_RejectBadArguments()
    {
        using var guide = new GuideClassifier();
        Assert.Throws<ArgumentOutOfRangeException>(() => new DigitClassCondition(guide, 10, AnySchedule));
        Assert.Throws<ArgumentOutOfRangeException>(() => new StrokeThicknessCondition(1.5, 0.02, AnySchedule));
        using var wrong = torch.zeros(1, 1, 28, 28);
        var e = Assert.Throws<ArgumentException>(() => new DigitStyleCondition(guide, wrong, AnySchedule));
        Assert.Contains("[1, 1, 28, 28]", e.Message);
    }

    [Fact]
    public void SpaceToDepth_RoundTripsAndKeepsEveryPixel()
    {
        using var x = torch.arange(2 * 32 * 32, dtype: ScalarType.Float32).reshape(2, 1, 32, 32);
        using var s = DigitsDenoiser.SpaceToDepth(x);
        Assert.Equal(new long[] { 2, 16, 8, 8 }, s.shape);
        Assert.Equal(x[0, 0, 0, 1].item<float>(), s[0, 1, 0, 0].item<float>());
        Assert.Equal(x[0, 0, 1, 0].item<float>(), s[0, 4, 0, 0].item<float>());
        Assert.Equal(x[1, 0, 5, 6].item<float>(), s[1, 4 * 1 + 2, 1, 1].item<float>());
        using var back = DigitsDenoiser.DepthToSpace(s);
        Assert.True(back.eq(x).all().item<bool>());
    }
}
