using SkiaSharp;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Encoders.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Face;

/// <summary>The astronaut photo as tensors, and the face networks with reproducible weights.</summary>
public static class FaceTestData
{
    /// <summary>
    /// A square crop of golden/images/astronaut.png (512x512 RGB), as [1, 3, size, size] in [-1, 1]: <paramref name="crop"/>
    /// pixels from (<paramref name="top"/>, <paramref name="left"/>), area-resized to <paramref name="size"/>.
    /// The default frames the head and shoulders like an aligned CelebA-HQ face.
    /// </summary>
    public static Tensor Astronaut(int size = 256, int top = 0, int left = 98, int crop = 256)
    {
        var path = Path.Combine(Golden.Root, "images", "astronaut.png");
        using var bmp = SKBitmap.Decode(path) ?? throw new InvalidOperationException($"cannot decode {path}");
        int w = bmp.Width, h = bmp.Height;
        var rgb = new float[3 * h * w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                var c = bmp.GetPixel(x, y);
                rgb[0 * h * w + y * w + x] = c.Red / 127.5f - 1f;
                rgb[1 * h * w + y * w + x] = c.Green / 127.5f - 1f;
                rgb[2 * h * w + y * w + x] = c.Blue / 127.5f - 1f;
            }
        using var scope = NewDisposeScope();
        var img = tensor(rgb, [1, 3, h, w]);
        var face = img[.., .., TensorIndex.Slice(top, top + crop), TensorIndex.Slice(left, left + crop)];
        if (crop != size) face = nn.functional.adaptive_avg_pool2d(face, [size, size]);
        return face.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>IR-SE50 with formula (b) weights (there are no real weights in the test data).</summary>
    public static IrSeBackbone IrSe50()
    {
        var net = new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, true);
        FormulaWeights.Apply(net);
        FaceCheckpoints.Freeze(net);
        return net;
    }

    /// <summary>BiSeNet(19) with formula (b) weights.</summary>
    public static BiSeNet BiSeNet()
    {
        var net = new BiSeNet(19);
        FormulaWeights.Apply(net);
        FaceCheckpoints.Freeze(net);
        return net;
    }

    /// <summary>MobileFaceNet with the golden case's reference-initialised, BN-calibrated weights.</summary>
    public static MobileFaceNet MobileFaceNet() =>
        FaceCheckpoints.LoadMobileFaceNet(Path.Combine(Golden.Root, "mobilefacenet_landmark", "forward_b2_seed1234", "weights.safetensors"));
}

/// <summary>The three face networks, built once per test class.</summary>
public sealed class FaceNetsFixture : IDisposable
{
    private readonly Lazy<IrSeBackbone> _arc = new(FaceTestData.IrSe50);
    private readonly Lazy<BiSeNet> _parse = new(FaceTestData.BiSeNet);
    private readonly Lazy<MobileFaceNet> _landmarks = new(FaceTestData.MobileFaceNet);

    public IrSeBackbone ArcFace => _arc.Value;
    public BiSeNet Parser => _parse.Value;
    public MobileFaceNet Landmarker => _landmarks.Value;

    public void Dispose()
    {
        if (_arc.IsValueCreated) _arc.Value.Dispose();
        if (_parse.IsValueCreated) _parse.Value.Dispose();
        if (_landmarks.IsValueCreated) _landmarks.Value.Dispose();
    }
}
