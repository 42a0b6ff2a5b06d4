using SkiaSharp;
using ZMagic.Encoders.FaceApi;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.FaceAttributes;

/// <summary>The face-api nets from the shared npm-pack cache, the astronaut photo in [-1, 1] and its detected face box.</summary>
public sealed class FaceAttributesFixture : IDisposable
{
    public FaceAttributesFixture()
    {
        ModelDirectory = FaceApiWeights.EnsureModelDirectory();
        AgeGender = Load(new AgeGenderNet());
        Expression = Load(new FaceExpressionNet());
        Detector = Load(new TinyFaceDetector());
        Landmarks = Load(new FaceLandmark68Net());
        Recognition = Load(new FaceRecognitionNet());
        Astronaut = LoadAstronaut().DetachFromDisposeScope();
        Box = ZMagic.Guidance.FaceAttributes.FaceBoxFinder.Find(Detector, Astronaut);
    }

    public string ModelDirectory { get; }
    public AgeGenderNet AgeGender { get; }
    public FaceExpressionNet Expression { get; }
    public TinyFaceDetector Detector { get; }
    public FaceLandmark68Net Landmarks { get; }
    public FaceRecognitionNet Recognition { get; }

    /// <summary>[1, 3, 512, 512] in [-1, 1].</summary>
    public Tensor Astronaut { get; }

    public FaceBox Box { get; }

    private T Load<T>(T net) where T : nn.Module, IFaceApiNetwork
    {
        net.LoadWeights(ModelDirectory);
        net.eval();
        return net;
    }

    private static Tensor LoadAstronaut()
    {
        string path = Path.Combine(Golden.Root, "images", "astronaut.png");
        using var codec = SKCodec.Create(path) ?? throw new InvalidOperationException($"cannot decode {path}");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bmp = new SKBitmap(info);
        if (codec.GetPixels(info, bmp.GetPixels()) != SKCodecResult.Success) throw new InvalidOperationException($"decoding {path}");
        var rgba = bmp.GetPixelSpan().ToArray();
        using var t = tensor(rgba, new long[] { info.Height, info.Width, 4 });
        return (t[.., .., ..3].permute(2, 0, 1).unsqueeze(0).to(ScalarType.Float32) / 127.5f - 1f).contiguous();
    }

    public void Dispose()
    {
        AgeGender.Dispose(); Expression.Dispose(); Detector.Dispose(); Landmarks.Dispose(); Recognition.Dispose(); Astronaut.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class FaceAttributesCollection : ICollectionFixture<FaceAttributesFixture>
{
    public const string Name = "face-api conditions";
}
