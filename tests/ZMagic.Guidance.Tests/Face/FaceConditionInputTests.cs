using TorchSharp;
using ZMagic.Encoders.Face;
using ZMagic.Guidance.Face;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Face;

/// <summary>Wrong sizes, ranges, channel counts and targets give clear errors, not native crashes or silent nonsense.</summary>
public class FaceConditionInputTests(FaceNetsFixture nets) : IClassFixture<FaceNetsFixture>
{
    private static Tensor Image(int size = 64) => torch.rand(1, 3, size, size) * 2 - 1;

    [Fact]
    public void ReferenceInZeroTo255IsRefused()
    {
        using var scope = NewDisposeScope();
        var img255 = torch.rand(1, 3, 64, 64) * 255;
        var ex = Assert.Throws<ArgumentException>(() => new LandmarksCondition(nets.Landmarker, img255, new FaceCropBox(0, 64, 0, 64)));
        Assert.Contains("[-1, 1]", ex.Message);
        Assert.Contains("255", ex.Message);
        Assert.Throws<ArgumentException>(() => new ParsingCondition(nets.Parser, img255, new ParsingOptions { InputSize = 64 }));
        var nan = Image();
        nan[0, 0, 0, 0] = torch.tensor(float.NaN);
        Assert.Contains("NaN", Assert.Throws<ArgumentException>(() => new ParsingCondition(nets.Parser, nan, new ParsingOptions { InputSize = 64 })).Message);
    }

    [Fact]
    public void WrongChannelCountAndRankAreRefused()
    {
        using var scope = NewDisposeScope();
        var gray = torch.rand(1, 1, 64, 64);
        var ex = Assert.Throws<ArgumentException>(() => new ParsingCondition(nets.Parser, gray, new ParsingOptions { InputSize = 64 }));
        Assert.Contains("3 (RGB) channels", ex.Message);
        using var c = new LandmarksCondition(nets.Landmarker, Image(), new FaceCropBox(0, 64, 0, 64));
        Assert.Contains("3 (RGB) channels", Assert.Throws<ArgumentException>(() => c.Energy(torch.rand(1, 4, 64, 64))).Message);
        Assert.Contains("[B, 3, H, W]", Assert.Throws<ArgumentException>(() => c.Energy(torch.rand(3, 64, 64))).Message);
        Assert.Contains("floating-point", Assert.Throws<ArgumentException>(() => c.Energy(torch.zeros(1, 3, 64, 64, ScalarType.Int64))).Message);
    }

    [Fact]
    public void LandmarkBoxOutsideTheImageIsRefused()
    {
        using var scope = NewDisposeScope();
        var box = new FaceCropBox(30, 130, 30, 130);
        var ex = Assert.Throws<ArgumentException>(() => new LandmarksCondition(nets.Landmarker, Image(64), box));
        Assert.Contains("does not fit an image of 64x64", ex.Message);
        using var c = new LandmarksCondition(nets.Landmarker, Image(160), box);
        Assert.Contains("does not fit", Assert.Throws<ArgumentException>(() => c.Energy(Image(100))).Message);
        Assert.Throws<ArgumentException>(() => FaceCropBox.FromDetection(10, 10, 5, 20));
    }

    [Fact]
    public void ReferenceBatchMustBeOneOrTheBatchSize()
    {
        using var scope = NewDisposeScope();
        using var c = new LandmarksCondition(nets.Landmarker, torch.cat([Image(), Image()]), new FaceCropBox(0, 64, 0, 64));
        using var noGrad = no_grad();
        Assert.Equal([2L], c.Energy(torch.cat([Image(), Image()])).shape);
        var ex = Assert.Throws<ArgumentException>(() => c.Energy(torch.cat([Image(), Image(), Image()])));
        Assert.Contains("batch size 2", ex.Message);
    }

    [Fact]
    public void BadTargetsAreRefused()
    {
        using var scope = NewDisposeScope();
        var opts = new ParsingOptions { InputSize = 64 };
        Assert.Contains("0..18", Assert.Throws<ArgumentException>(() => ParsingCondition.FromLabelMap(nets.Parser, torch.full(64, 64, 19, ScalarType.Int64), opts)).Message);
        Assert.Contains("integer", Assert.Throws<ArgumentException>(() => ParsingCondition.FromLabelMap(nets.Parser, torch.zeros(64, 64), opts)).Message);
        Assert.Throws<ArgumentException>(() => ParsingCondition.FromLabelMap(nets.Parser, torch.zeros(1, 1, 64, 64, ScalarType.Int64), opts));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ParsingCondition(nets.Parser, Image(), new ParsingOptions { InputSize = 16 }));
        Assert.Contains("[1 or B, 136]", Assert.Throws<ArgumentException>(() => LandmarksCondition.FromLandmarks(nets.Landmarker, torch.zeros(1, 98), new FaceCropBox(0, 64, 0, 64))).Message);
        Assert.Contains("[1 or B, 512]", Assert.Throws<ArgumentException>(() => IdentityCondition.FromEmbedding(nets.ArcFace, torch.zeros(1, 128))).Message);
    }

    [Fact]
    public void LabelMapAtAnotherResolutionIsResizedAndUsed()
    {
        using var scope = NewDisposeScope();
        var labels = torch.zeros(32, 32, ScalarType.Int64);
        labels[TensorIndex.Slice(8, 24), TensorIndex.Slice(8, 24)] = torch.tensor(1L);
        using var c = ParsingCondition.FromLabelMap(nets.Parser, labels, new ParsingOptions { InputSize = 64 });
        Assert.Equal([1L, 64L, 64L], c.Target.shape);
        Assert.Equal(16 * 16 * 4, c.Target.eq(1).sum().item<long>());
        using var noGrad = no_grad();
        var e = c.Energy(Image());
        Assert.True(e.item<float>() > 0 && float.IsFinite(e.item<float>()));
    }
}
