using Xunit.Abstractions;
using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Encoders.FaceApi;
using ZMagic.Guidance.FaceAttributes;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.FaceAttributes;

/// <summary>The face-api conditions with the real weights on the astronaut photo.</summary>
[Collection(FaceAttributesCollection.Name)]
[Trait("Category", "Slow")]
public sealed class FaceAttributeConditionTests(FaceAttributesFixture f, ITestOutputHelper output)
{
    /// <summary>The photo plus seeded Gaussian noise (sigma 0.1), as a leaf tensor.</summary>
    private Tensor Noisy(long seed)
    {
        using var g = new Generator((ulong)seed);
        return (f.Astronaut + 0.1f * randn(f.Astronaut.shape, generator: g)).detach();
    }

    /// <summary>Takes normalised gradient steps on x0 (max |step| = lr per pixel) and returns the energies seen.</summary>
    private static List<double> Descend(IGuidanceCondition c, Tensor x, int steps, float lr)
    {
        var energies = new List<double>();
        for (int k = 0; k <= steps; k++)
        {
            using var scope = NewDisposeScope();
            var leaf = x.detach().requires_grad_(true);
            var e = c.Energy(leaf);
            Assert.Equal(new long[] { 1 }, e.shape);
            energies.Add(e.item<float>());
            if (k == steps) break;
            var g = autograd.grad(new[] { e.sum() }, new[] { leaf }, retain_graph: false)[0];
            Assert.True(g.isfinite().all().item<bool>(), "non-finite gradient");
            var step = g / g.abs().max().clamp_min(1e-20) * lr;
            x = (x - step).detach().MoveToOuterDisposeScope();
        }
        return energies;
    }

    private void AssertDecreases(IGuidanceCondition c, int steps = 4, float lr = 0.02f)
    {
        var x = Noisy(1234);
        var e = Descend(c, x, steps, lr);
        output.WriteLine($"{c.Name}: energies {string.Join(" -> ", e.Select(v => v.ToString("G5")))}");
        Assert.True(e[^1] < e[0], $"{c.Name}: energy did not decrease: {string.Join(", ", e)}");
        Assert.True(e[^1] < 0.97 * e[0], $"{c.Name}: energy barely moved: {string.Join(", ", e)}");
    }

    [Fact]
    public void ReferenceBox_FoundByDetector()
    {
        output.WriteLine($"box {f.Box}");
        Assert.InRange(f.Box.Width, 80, 160);
        Assert.InRange(f.Box.Height, 80, 160);
    }

    [Fact]
    public void TargetAge_EnergyDecreases()
    {
        var c = new TargetAgeCondition(f.AgeGender, f.Box, 70);
        using (no_grad()) output.WriteLine($"age of the clean photo {c.PredictAge(f.Astronaut).item<float>():F2}");
        AssertDecreases(c);
    }

    [Fact]
    public void TargetGender_EnergyDecreases()
    {
        var c = new TargetGenderCondition(f.AgeGender, f.Box, FaceGender.Male);
        using (no_grad()) output.WriteLine($"p(male, female) of the clean photo {string.Join(", ", c.Probabilities(f.Astronaut)[0].data<float>().ToArray())}");
        AssertDecreases(c);
    }

    [Fact]
    public void TargetExpression_EnergyDecreases()
    {
        var c = new TargetExpressionCondition(f.Expression, f.Box, FaceExpression.Surprised);
        AssertDecreases(c);
    }

    [Fact]
    public void Landmarks_EnergyDecreases_TowardsReference()
    {
        // Reference: the photo shifted 6 px right, so the landmarks of the noisy photo must move.
        var reference = f.Astronaut.roll(6, 3);
        var c = new FaceApiLandmarksCondition(f.Landmarks, f.Box, reference);
        AssertDecreases(c);
    }

    [Fact]
    public void DescriptorIdentity_EnergyDecreases()
    {
        // Reference: the mirrored photo (same person, different descriptor), with its own box.
        var reference = f.Astronaut.flip(3);
        var refBox = FaceBoxFinder.Find(f.Detector, reference);
        var c = new FaceDescriptorIdentityCondition(f.Recognition, f.Box, reference, refBox);
        AssertDecreases(c);
    }

    [Fact]
    public void Batch_EnergiesEqualPerItem()
    {
        using var scope = NewDisposeScope();
        var a = Noisy(1);
        var b = Noisy(2);
        var c = new TargetAgeCondition(f.AgeGender, f.Box, 50);
        using var _ = no_grad();
        var both = c.Energy(cat(new[] { a, b }, 0));
        Assert.Equal(new long[] { 2 }, both.shape);
        Assert.Equal(c.Energy(a).item<float>(), both[0].item<float>(), 3);
        Assert.Equal(c.Energy(b).item<float>(), both[1].item<float>(), 3);
    }

    [Fact]
    public void Energy_AndGradient_LeakNoTensors()
    {
        var conditions = new IGuidanceCondition[]
        {
            new TargetAgeCondition(f.AgeGender, f.Box, 40),
            new TargetGenderCondition(f.AgeGender, f.Box, FaceGender.Male),
            new TargetExpressionCondition(f.Expression, f.Box, FaceExpression.Sad),
        };
        var x = Noisy(5);
        // Warm-up (lazy allocations), then count live tensors across energy + gradient inside a scope.
        Descend(conditions[0], x, 1, 0.01f);
        DisposeScopeManager.Statistics.Reset();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        foreach (var c in conditions)
        {
            using var scope = NewDisposeScope();
            var leaf = x.detach().requires_grad_(true);
            var e = c.Energy(leaf).sum();
            autograd.grad(new[] { e }, new[] { leaf }, retain_graph: false);
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void NoFaceInReference_ClearError()
    {
        var gray = zeros(1, 3, 256, 256);
        var e = Assert.Throws<InvalidOperationException>(() => FaceBoxFinder.Find(f.Detector, gray));
        Assert.Contains("no face found", e.Message);
    }
}

/// <summary>Argument checks that need no weights.</summary>
public sealed class FaceAttributeConditionInputTests
{
    private static readonly FaceBox Box = new(10, 50, 20, 60);

    [Fact]
    public void WrongImageShapes_ClearErrors()
    {
        using var net = new AgeGenderNet();
        var c = new TargetAgeCondition(net, Box, 30);
        var e1 = Assert.Throws<ArgumentException>(() => c.Energy(zeros(1, 1, 64, 64)));
        Assert.Contains("[B, 3, H, W]", e1.Message);
        var e2 = Assert.Throws<ArgumentException>(() => c.Energy(zeros(1, 3, 40, 64)));
        Assert.Contains("does not lie inside the 64x40", e2.Message);
        Assert.Throws<ArgumentException>(() => c.Energy(zeros(3, 64, 64)));
        Assert.Throws<ArgumentException>(() => c.Energy(zeros(new long[] { 1, 3, 64, 64 }, ScalarType.Int64)));
    }

    [Fact]
    public void BadArguments_ClearErrors()
    {
        using var net = new AgeGenderNet();
        Assert.Throws<ArgumentOutOfRangeException>(() => new TargetAgeCondition(net, Box, -5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TargetAgeCondition(net, Box, double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TargetGenderCondition(net, Box, (FaceGender)7));
        using var expr = new FaceExpressionNet();
        Assert.Throws<ArgumentOutOfRangeException>(() => new TargetExpressionCondition(expr, Box, (FaceExpression)9));
        Assert.Throws<ArgumentException>(() => new TargetAgeCondition(net, new FaceBox(10, 10, 0, 5), 30));
    }

    [Fact]
    public void ReferenceOutOfRange_ClearError()
    {
        using var det = new TinyFaceDetector();
        var e = Assert.Throws<ArgumentException>(() => FaceBoxFinder.Find(det, full(new long[] { 1, 3, 64, 64 }, 200f)));
        Assert.Contains("must be in [-1, 1]", e.Message);
        Assert.Contains("0..255", e.Message);
        Assert.Throws<ArgumentException>(() => FaceBoxFinder.Find(det, zeros(2, 3, 64, 64)));
        using var lm = new FaceLandmark68Net();
        Assert.Throws<ArgumentException>(() => new FaceApiLandmarksCondition(lm, Box, full(new long[] { 1, 3, 64, 64 }, 3f)));
    }
}
