using TorchSharp;
using ZMagic.Encoders.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>The FreeDoM preprocessing pieces: bicubic, normalisation, crops and FreeDoM's landmark box.</summary>
public class FacePreprocessingTests
{
    [Fact]
    public void BicubicIsLibtorchBicubicComputedInFloat64()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(3);
        var x = torch.rand(1, 3, 97, 97);
        var ours = FacePreprocessing.Bicubic(x, 112, 112);
        Assert.Equal(ScalarType.Float32, ours.dtype);
        var exact = nn.functional.interpolate(x.to(ScalarType.Float64), [112, 112], mode: InterpolationMode.Bicubic, align_corners: false);
        TensorAssert.Close(ours, exact.to(ScalarType.Float32), 0, 0, "float64 bicubic rounded once");
        var native32 = nn.functional.interpolate(x, [112, 112], mode: InterpolationMode.Bicubic, align_corners: false);
        TensorAssert.Close(ours, native32, 2e-5, 0, "same formula as the float32 kernel");
        // Keys cubic with A = -0.75 overshoots: a step edge rings below 0 and above 1.
        var step = torch.zeros(1, 1, 4, 8);
        step[.., .., .., TensorIndex.Slice(4, null)] = torch.tensor(1f);
        var up = FacePreprocessing.Bicubic(step, 4, 32);
        Assert.True(up.min().item<float>() < -0.01f && up.max().item<float>() > 1.01f);
    }

    [Fact]
    public void ParsingNormalisationEqualsImageNetNormalisationOfTheUnitImage()
    {
        using var scope = NewDisposeScope();
        var x = torch.rand(2, 3, 8, 8) * 2 - 1;
        var ours = FacePreprocessing.NormalizeSigned(x, FacePreprocessing.ImageNetMean, FacePreprocessing.ImageNetStd);
        var mean = torch.tensor(new[] { 0.485f, 0.456f, 0.406f }).view(1, 3, 1, 1);
        var std = torch.tensor(new[] { 0.229f, 0.224f, 0.225f }).view(1, 3, 1, 1);
        TensorAssert.Close(ours, ((x + 1) / 2 - mean) / std, 1e-5, 1e-5, "Normalize(2m-1, 2s) == ImageNet((x+1)/2)");
    }

    [Fact]
    public void ArcFaceInputPoolsNon256ImagesFirstAndCropsTheFixedRegion()
    {
        using var scope = NewDisposeScope();
        var x = torch.rand(1, 3, 256, 256) * 2 - 1;
        var a = FacePreprocessing.ArcFaceInput(x);
        Assert.Equal([1L, 3, 112, 112], a.shape);
        var manual = nn.functional.adaptive_avg_pool2d(x[.., .., 35..223, 32..220], [112, 112]);
        TensorAssert.Close(a, manual, 0, 0, "crop [35:223, 32:220] then pool 112");
        // A 128 image is pooled (here: upsampled by replication) to 256 first.
        var small = torch.rand(1, 3, 128, 128);
        var big = small.repeat_interleave(2, 2).repeat_interleave(2, 3);
        TensorAssert.Close(FacePreprocessing.ArcFaceInput(small), FacePreprocessing.ArcFaceInput(big), 1e-6, 0, "pool to 256");
        Assert.Throws<ArgumentException>(() => FacePreprocessing.ArcFaceInput(torch.rand(1, 3, 256, 200)));
    }

    [Fact]
    public void FreeDoMLandmarkBoxFromADetection()
    {
        // w = 81.3, h = 96.3, size = int(97.56) = 97, cx = 40.3 + 40 = 80.3, cy = 35.8 + 48 = 83.8.
        Assert.Equal(new FaceCropBox(Top: 35, Bottom: 132, Left: 32, Right: 129), FaceCropBox.FromDetection(40.3, 35.8, 120.6, 131.1));
        var b = FaceCropBox.FromDetection(10, 20, 109, 99); // w 100, h 80 -> size 96, cx 60, cy 60
        Assert.Equal(new FaceCropBox(12, 108, 12, 108), b);
        Assert.Equal(96, b.Width);
    }
}
