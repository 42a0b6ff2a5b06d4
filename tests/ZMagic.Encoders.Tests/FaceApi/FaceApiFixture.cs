using SkiaSharp;
using ZMagic.Encoders.FaceApi;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.FaceApi;

/// <summary>
/// One verified copy of the face-api model files per test run (fetched once with `npm pack` into the shared cache,
/// $ZMAGIC_CACHE/face-api or ~/.cache/zmagic/face-api), and the six nets loaded from it.
/// </summary>
public sealed class FaceApiFixture : IDisposable
{
    public FaceApiFixture()
    {
        ModelDirectory = FaceApiWeights.EnsureModelDirectory();
        Landmarks = Load(new FaceLandmark68Net());
        LandmarksTiny = Load(new FaceLandmark68TinyNet());
        Expression = Load(new FaceExpressionNet());
        AgeGender = Load(new AgeGenderNet());
        Recognition = Load(new FaceRecognitionNet());
        Detector = Load(new TinyFaceDetector());
    }

    public string ModelDirectory { get; }
    public FaceLandmark68Net Landmarks { get; }
    public FaceLandmark68TinyNet LandmarksTiny { get; }
    public FaceExpressionNet Expression { get; }
    public AgeGenderNet AgeGender { get; }
    public FaceRecognitionNet Recognition { get; }
    public TinyFaceDetector Detector { get; }

    private T Load<T>(T net) where T : TorchSharp.torch.nn.Module, IFaceApiNetwork
    {
        net.LoadWeights(ModelDirectory);
        net.eval();
        return net;
    }

    public void Dispose()
    {
        Landmarks.Dispose(); LandmarksTiny.Dispose(); Expression.Dispose(); AgeGender.Dispose(); Recognition.Dispose(); Detector.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class FaceApiCollection : ICollectionFixture<FaceApiFixture>
{
    public const string Name = "face-api weights";
}

/// <summary>Test images: the golden astronaut PNG decoded with SkiaSharp as RGB.</summary>
public static class TestImages
{
    public static string AstronautPath => Path.Combine(Golden.Root, "images", "astronaut.png");

    /// <summary>Decodes a PNG to HWC RGB bytes.</summary>
    public static (byte[] Rgb, int Width, int Height) DecodeRgb(string path)
    {
        using var codec = SKCodec.Create(path) ?? throw new InvalidOperationException($"cannot decode {path}");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bmp = new SKBitmap(info);
        var r = codec.GetPixels(info, bmp.GetPixels());
        if (r != SKCodecResult.Success) throw new InvalidOperationException($"decoding {path}: {r}");
        var rgba = bmp.GetPixelSpan().ToArray();
        var rgb = new byte[info.Width * info.Height * 3];
        for (int i = 0, j = 0; i < rgba.Length; i += 4, j += 3) { rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2]; }
        return (rgb, info.Width, info.Height);
    }

    /// <summary>The astronaut as a float32 [1, 3, 512, 512] tensor in 0..255.</summary>
    public static Tensor Astronaut255()
    {
        var (rgb, w, h) = DecodeRgb(AstronautPath);
        return HwcToNchw(tensor(rgb, new long[] { h, w, 3 }));
    }

    /// <summary>uint8 (or any) HWC [H, W, 3] -> float32 [1, 3, H, W].</summary>
    public static Tensor HwcToNchw(Tensor hwc) => hwc.to(ScalarType.Float32).permute(2, 0, 1).unsqueeze(0).contiguous();
}
