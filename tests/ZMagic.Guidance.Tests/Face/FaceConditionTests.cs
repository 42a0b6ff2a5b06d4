using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.Guidance;
using ZMagic.Encoders.Face;
using ZMagic.Guidance.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Face;

/// <summary>
/// The face conditions' gradients point downhill: a few normalised gradient steps taken directly on x0 (the astronaut
/// photo plus noise) lower each energy. The reference is the clean photo.
/// </summary>
public class FaceConditionTests(FaceNetsFixture nets, ITestOutputHelper log) : IClassFixture<FaceNetsFixture>
{
    private static readonly FaceCropBox Box = FaceCropBox.FromDetection(80, 40, 180, 170); // head in the 256 crop

    /// <summary>Takes <paramref name="steps"/> steps of size <paramref name="stepNorm"/> (L2 over the image) along -grad.</summary>
    private List<double> Descend(IGuidanceCondition c, Tensor start, int steps, double stepNorm)
    {
        var energies = new List<double>();
        var x = start.clone();
        for (int i = 0; i <= steps; i++)
        {
            using var scope = NewDisposeScope();
            var xi = x.detach().requires_grad_(true);
            var e = c.Energy(xi);
            Assert.Equal([start.shape[0]], e.shape);
            energies.Add(e.sum().to(ScalarType.Float64).item<double>());
            if (i == steps) break;
            var g = torch.autograd.grad([e.sum()], [xi], retain_graph: false)[0];
            var gn = g.norm().item<float>();
            Assert.True(float.IsFinite(gn) && gn > 0, $"{c.Name}: gradient norm {gn}");
            var next = (xi.detach() - g * (stepNorm / gn)).MoveToOuterDisposeScope();
            x.Dispose();
            x = next;
        }
        x.Dispose();
        log.WriteLine($"{c.Name}: {string.Join(" -> ", energies.Select(v => v.ToString("G5")))}");
        return energies;
    }

    private static Tensor Noisy(Tensor clean, double sigma, int seed)
    {
        var gen = new torch.Generator((ulong)seed);
        return (clean + sigma * torch.randn(clean.shape, generator: gen)).clamp(-1, 1);
    }

    /// <summary>Every step lowers the energy (a gradient of the wrong sign or scale would raise it).</summary>
    private static void AssertDecreases(List<double> e, string what)
    {
        for (int i = 1; i < e.Count; i++)
            Assert.True(double.IsFinite(e[i]) && e[i] < e[i - 1], $"{what}: energy did not decrease at step {i}: {string.Join(", ", e)}");
    }

    [Fact]
    public void IdentityL2EnergyDecreasesAlongItsGradient()
    {
        using var scope = NewDisposeScope();
        var clean = FaceTestData.Astronaut();
        using var c = new IdentityCondition(nets.ArcFace, clean, new IdentityOptions());
        using (no_grad()) Assert.True(c.Energy(clean).item<float>() < 1e-5f, "the reference itself has zero energy");
        AssertDecreases(Descend(c, Noisy(clean, 0.3, 1), 2, 2.0), "identity L2");
    }

    [Fact]
    public void IdentityCosineEnergyDecreasesAlongItsGradient()
    {
        using var scope = NewDisposeScope();
        var clean = FaceTestData.Astronaut();
        using var c = new IdentityCondition(nets.ArcFace, clean, new IdentityOptions { Distance = IdentityDistance.Cosine, Name = "identity-cos" });
        AssertDecreases(Descend(c, Noisy(clean, 0.3, 2), 2, 2.0), "identity cosine");
    }

    [Fact]
    public void IdentityOnAnInsightfaceIResNetDecreasesAlongItsGradient()
    {
        using var scope = NewDisposeScope();
        using var net = SeededWeights.Init(new IResNet([1, 1, 1, 1]), 5); // the iresnet structure, small and random
        FaceCheckpoints.Freeze(net);
        var clean = FaceTestData.Astronaut();
        using var c = new IdentityCondition(net, clean, new IdentityOptions { Distance = IdentityDistance.Cosine, Name = "identity-iresnet" });
        AssertDecreases(Descend(c, Noisy(clean, 0.3, 8), 2, 2.0), "identity iresnet cosine");
    }

    [Fact]
    public void LandmarksEnergyDecreasesAlongItsGradient()
    {
        using var scope = NewDisposeScope();
        var clean = FaceTestData.Astronaut();
        using var c = new LandmarksCondition(nets.Landmarker, clean, Box);
        using (no_grad()) Assert.True(c.Energy(clean).item<float>() < 1e-5f);
        AssertDecreases(Descend(c, Noisy(clean, 0.3, 3), 3, 0.5), "landmarks");
    }

    [Fact]
    public void ParsingEnergyDecreasesAlongItsGradient()
    {
        using var scope = NewDisposeScope();
        var clean = FaceTestData.Astronaut(128);
        using var c = new ParsingCondition(nets.Parser, clean, new ParsingOptions { InputSize = 128 });
        AssertDecreases(Descend(c, Noisy(clean, 0.3, 4), 2, 1.0), "parsing");
    }

    [Fact]
    public void ParsingLabelMapEnergiesDecreaseAlongTheirGradients()
    {
        using var scope = NewDisposeScope();
        var clean = FaceTestData.Astronaut(128);
        Tensor labels;
        using (no_grad()) labels = nets.Parser.Logits(FacePreprocessing.ParsingInput(clean, 128)).argmax(1);
        foreach (var loss in new[] { ParsingLabelLoss.CrossEntropy, ParsingLabelLoss.OneHotResidual })
        {
            using var c = ParsingCondition.FromLabelMap(nets.Parser, labels[0], new ParsingOptions { InputSize = 128, LabelLoss = loss, Name = $"parsing-{loss}" });
            AssertDecreases(Descend(c, Noisy(clean, 0.3, 5), 2, 1.0), loss.ToString());
        }
    }

    [Fact]
    public void EnergiesArePerItemAndMatchSingleItemCalls()
    {
        using var scope = NewDisposeScope();
        var clean = FaceTestData.Astronaut(128);
        var batch = torch.cat([Noisy(clean, 0.2, 6), Noisy(clean, 0.4, 7)], 0);
        using var id = new IdentityCondition(nets.ArcFace, clean);
        using var lm = new LandmarksCondition(nets.Landmarker, clean, new FaceCropBox(20, 100, 24, 104));
        using var ps = new ParsingCondition(nets.Parser, clean, new ParsingOptions { InputSize = 64 });
        using var noGrad = no_grad();
        foreach (IGuidanceCondition c in new IGuidanceCondition[] { id, lm, ps })
        {
            var e = c.Energy(batch);
            Assert.Equal([2L], e.shape);
            var e0 = c.Energy(batch[..1]);
            var e1 = c.Energy(batch[1..]);
            TensorAssert.Close(e, torch.cat([e0, e1]), 1e-4, 1e-4, $"{c.Name} per-item");
            // FreeDoM's single norm over the batch equals the per-item energy for batch 1.
            Assert.True(e[0].item<float>() > 0 && e[1].item<float>() > 0);
        }
        // The noisier item is further from the reference for the L2 conditions.
        Assert.Equal(id.Schedule.StepSize, new SqrtAlphaBarStepSize(100));
        Assert.Equal(new GuidanceWindow(Stop: 100), id.Schedule.Window);
    }
}
