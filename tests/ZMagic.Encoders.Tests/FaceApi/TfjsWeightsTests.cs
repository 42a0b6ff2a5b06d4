using System.Buffers.Binary;
using ZMagic.Core.IO;
using ZMagic.Encoders.FaceApi;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.FaceApi;

/// <summary>The tfjs manifest reader on small hand-made manifests (no download needed).</summary>
public sealed class TfjsWeightsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("zmagic-tfjs-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Write(string manifestJson, params (string Name, byte[] Bytes)[] shards)
    {
        foreach (var (n, b) in shards) File.WriteAllBytes(Path.Combine(_dir, n), b);
        string p = Path.Combine(_dir, "m-weights_manifest.json");
        File.WriteAllText(p, manifestJson);
        return p;
    }

    private static byte[] F32(params float[] v)
    {
        var b = new byte[v.Length * 4];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * i), v[i]);
        return b;
    }

    [Fact]
    public void Dequantises_AllDtypes_AcrossConcatenatedShards()
    {
        // uint8 [2] (scale 0.5, min -1), uint16 [2] (scale 0.25, min 2), float16 [2], raw float32 [1], int32 quantised uint8 [2].
        var all = new List<byte>();
        all.AddRange(new byte[] { 0, 3 });
        all.AddRange(new byte[] { 4, 0, 0x10, 0x01 }); // 4, 272
        var h = new byte[4];
        BinaryPrimitives.WriteHalfLittleEndian(h.AsSpan(0), (Half)1.5);
        BinaryPrimitives.WriteHalfLittleEndian(h.AsSpan(2), (Half)(-0.25));
        all.AddRange(h);
        all.AddRange(F32(3.25f));
        all.AddRange(new byte[] { 1, 2 });
        var bytes = all.ToArray();
        // Split the buffer across two shard files at an odd position (inside the uint16 tensor).
        var json = """
        [{"paths": ["s1.bin", "s2.bin"], "weights": [
          {"name": "a", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1}},
          {"name": "b", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 0.25, "min": 2}},
          {"name": "c", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
          {"name": "d", "shape": [], "dtype": "float32"},
          {"name": "e", "shape": [2], "dtype": "int32", "quantization": {"dtype": "uint8", "scale": 0.75, "min": 0.25}}
        ]}]
        """;
        var p = Write(json, ("s1.bin", bytes[..3]), ("s2.bin", bytes[3..]));
        var w = TfjsWeights.Load(p);
        Assert.Equal(new[] { -1f, 0.5f }, w["a"].Data);
        Assert.Equal(new[] { 3f, 70f }, w["b"].Data);
        Assert.Equal(new[] { 1.5f, -0.25f }, w["c"].Data);
        Assert.Equal(new[] { 3.25f }, w["d"].Data);
        Assert.Empty(w["d"].Shape);
        Assert.Equal(new[] { 1f, 2f }, w["e"].Data); // round(1.0), round(1.75)
    }

    [Fact]
    public void RealFaceApiManifest_DequantisesAsTfjs_Uint8()
    {
        // q * scale + min computed in float64, stored as float32 (what Float32Array assignment does).
        var json = """[{"paths": ["x.bin"], "weights": [{"name": "k", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.004853619781194949, "min": -0.5872879935245888}}]}]""";
        var w = TfjsWeights.Load(Write(json, ("x.bin", new byte[] { 0, 121, 255 })));
        Assert.Equal((float)(121 * 0.004853619781194949 + -0.5872879935245888), w["k"].Data[1]);
        Assert.Equal((float)(255 * 0.004853619781194949 + -0.5872879935245888), w["k"].Data[2]);
    }

    [Fact]
    public void ConvLayouts_HwioToOihw_AndDepthwise()
    {
        // filters [kh=1, kw=2, in=2, out=3]: value = 100*kw + 10*in + out.
        var f = new List<float>();
        for (int kw = 0; kw < 2; kw++) for (int ci = 0; ci < 2; ci++) for (int co = 0; co < 3; co++) f.Add(100 * kw + 10 * ci + co);
        var json = """[{"paths": ["x.bin"], "weights": [{"name": "filters", "shape": [1, 2, 2, 3], "dtype": "float32"}]}]""";
        var t = TfjsWeights.Load(Write(json, ("x.bin", F32(f.ToArray()))))["filters"].ToTensor();
        var oihw = t.permute(3, 2, 0, 1);
        Assert.Equal(112f, oihw[2, 1, 0, 1].item<float>()); // out 2, in 1, kh 0, kw 1
    }

    [Fact]
    public void Net_LoadsStrictly_WithLayouts()
    {
        // A TfFullyConnected-only "net" is not public, so check the conv layouts through TinyFaceDetector's key set:
        // a manifest lacking tensors is refused with every missing key named.
        var json = """[{"paths": ["x.bin"], "weights": [{"name": "conv0/filters", "shape": [3, 3, 3, 16], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 1, "min": 0}}]}]""";
        var p = Write(json, ("x.bin", new byte[432]));
        using var det = new TinyFaceDetector();
        var e = Assert.Throws<CheckpointFormatException>(() => det.LoadWeights(TfjsWeights.Load(p), p));
        Assert.Contains("missing 'conv0/bias'", e.Message);
        Assert.Contains("missing 'conv8/filters'", e.Message);
    }

    [Fact]
    public void WrongShape_IsNamed()
    {
        var json = """[{"paths": ["x.bin"], "weights": [{"name": "conv0/filters", "shape": [3, 3, 3, 8], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 1, "min": 0}}]}]""";
        var p = Write(json, ("x.bin", new byte[216]));
        using var det = new TinyFaceDetector();
        var e = Assert.Throws<CheckpointFormatException>(() => det.LoadWeights(TfjsWeights.Load(p), p));
        Assert.Contains("'conv0/filters': tfjs shape [3, 3, 3, 8] gives [8, 3, 3, 3], the network expects [16, 3, 3, 3]", e.Message);
    }

    [Theory]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [5], "dtype": "float32"}]}]""", "hold 8 bytes, the manifest's tensors need 20")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [1], "dtype": "float32"}]}]""", "hold 8 bytes, the manifest's tensors need 4")]
    [InlineData("""[{"paths": ["missing.bin"], "weights": [{"name": "a", "shape": [2], "dtype": "float32"}]}]""", "shard file 'missing.bin' is missing")]
    [InlineData("""[{"paths": ["../x.bin"], "weights": [{"name": "a", "shape": [2], "dtype": "float32"}]}]""", "must be a plain file name")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [2], "dtype": "complex64"}]}]""", "unsupported dtype 'complex64'")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [2], "dtype": "float32", "quantization": {"dtype": "int4", "scale": 1, "min": 0}}]}]""", "unsupported quantization dtype 'int4'")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [8], "dtype": "float32", "quantization": {"dtype": "uint8"}}]}]""", "needs numeric 'scale' and 'min'")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [-2], "dtype": "float32"}]}]""", "non-negative integers")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [4000000000, 4000000000, 4000000000], "dtype": "float32"}]}]""", "has more than")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [300000000], "dtype": "float32"}]}]""", "need more than")]
    [InlineData("""[{"paths": ["x.bin"], "weights": [{"name": "a", "shape": [1], "dtype": "float32"}, {"name": "a", "shape": [1], "dtype": "float32"}]}]""", "appears twice")]
    [InlineData("""{"weights": []}""", "JSON array of groups")]
    [InlineData("""[{"paths": "x.bin"}]""", "expected an object with arrays")]
    [InlineData("""not json""", "not valid JSON")]
    public void HostileOrCorruptManifest_ClearError(string json, string expected)
    {
        var p = Write(json, ("x.bin", new byte[8]));
        var e = Assert.Throws<CheckpointFormatException>(() => TfjsWeights.Load(p));
        Assert.Contains(expected, e.Message);
        Assert.Contains(p, e.Message);
    }

    [Fact]
    public void MissingManifest_ClearError()
    {
        var e = Assert.Throws<CheckpointFormatException>(() => TfjsWeights.Load(Path.Combine(_dir, "nope.json")));
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void TfSamePadding_IsAsymmetric()
    {
        Assert.Equal((0L, 1L), TfOps.SamePadding(112, 3, 2));
        Assert.Equal((1L, 1L), TfOps.SamePadding(111, 3, 2));
        Assert.Equal((1L, 1L), TfOps.SamePadding(56, 3, 1));
        Assert.Equal((0L, 1L), TfOps.SamePadding(207, 2, 2));
        Assert.Equal((0L, 1L), TfOps.SamePadding(13, 2, 1));
        Assert.Equal((0L, 0L), TfOps.SamePadding(56, 1, 2));
    }

    [Fact]
    public void ResizeBilinearTf_MatchesLegacyFormula_AndPadToSquare()
    {
        // 1x1x2x3 -> 1x1x3x4: src = (in/out)*dst, no half-pixel offset.
        var x = tensor(new float[] { 0, 10, 20, 30, 40, 50 }, new long[] { 1, 1, 2, 3 });
        var y = TfOps.ResizeBilinearTf(x, 3, 4);
        // row 1: srcY = 2/3, col 1: srcX = 0.75 -> top = 7.5, bottom = 37.5 -> 7.5 + 30*2/3 = 27.5
        Assert.Equal(27.5f, y[0, 0, 1, 1].item<float>(), 5);
        Assert.Equal(50f, y[0, 0, 2, 3].item<float>(), 5); // clamped ceil
        var sq = TfOps.PadToSquare(tensor(new float[15], new long[] { 1, 1, 3, 5 }) + 1, centered: true);
        Assert.Equal(new long[] { 1, 1, 5, 5 }, sq.shape);
        Assert.Equal(0f, sq[0, 0, 0, 0].item<float>()); // round(2/2)=1 after, 1 before
        Assert.Equal(1f, sq[0, 0, 1, 0].item<float>());
        Assert.Equal(0f, sq[0, 0, 4, 0].item<float>());
        var odd = TfOps.PadToSquare(tensor(new float[8], new long[] { 1, 1, 4, 1 }) + 1, centered: true);
        Assert.Equal(new long[] { 1, 1, 4, 4 }, odd.shape);
        Assert.Equal(1f, odd[0, 0, 0, 1].item<float>()); // diff 3: round(1.5)=2 after, 1 before
        Assert.Equal(0f, odd[0, 0, 0, 2].item<float>());
        var detector = TfOps.PadToSquare(tensor(new float[8], new long[] { 1, 1, 4, 1 }) + 1, centered: false);
        Assert.Equal(1f, detector[0, 0, 0, 0].item<float>());
    }

    [Fact]
    public void ToNetInput_BadShapes_ClearError()
    {
        Assert.Throws<ArgumentException>(() => TfOps.ToNetInput(zeros(1, 4, 10, 10), 112, true, FaceApiMeans.Face));
        Assert.Throws<ArgumentException>(() => TfOps.ToNetInput(zeros(3, 10, 10), 112, true, FaceApiMeans.Face));
        using var net = new FaceLandmark68Net();
        var e = Assert.Throws<ArgumentException>(() => net.forward(zeros(1, 3, 100, 100)));
        Assert.Contains("[B, 3, 112, 112]", e.Message);
        using var det = new TinyFaceDetector();
        Assert.Throws<ArgumentException>(() => det.forward(zeros(1, 3, 100, 100)));
    }
}

/// <summary>The preprocessing is differentiable: autograd matches central finite differences (float64).</summary>
public sealed class TfOpsGradientTests
{
    [Fact]
    public void ToNetInput_GradientMatchesFiniteDifferences()
    {
        using var g = new Generator(7);
        var x = (rand(new long[] { 1, 3, 9, 6 }, ScalarType.Float64, generator: g) * 255).requires_grad_(true);
        var w = randn(new long[] { 1, 3, 8, 8 }, ScalarType.Float64, generator: g);
        Tensor F(Tensor v)
        {
            var sq = TfOps.PadToSquare(v, centered: true);
            return (TfOps.ResizeBilinearTf(sq, 8, 8) * w).sum();
        }
        var grad = autograd.grad(new[] { F(x) }, new[] { x }, retain_graph: false)[0];
        using var _ = no_grad();
        foreach (var (c, i, j) in new[] { (0, 0, 0), (1, 4, 3), (2, 8, 5), (0, 5, 2) })
        {
            var xp = x.detach().clone(); xp[0, c, i, j] += 1e-3;
            var xm = x.detach().clone(); xm[0, c, i, j] -= 1e-3;
            double fd = (F(xp).item<double>() - F(xm).item<double>()) / 2e-3;
            Assert.Equal(fd, grad[0, c, i, j].item<double>(), 6);
        }
    }
}
