using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Encoders.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>Loading the face checkpoints: prefixes, optional buffers, and clear errors for the wrong file.</summary>
public sealed class FaceCheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("zmagic-face-").FullName;
    private static string MobileWeights => Path.Combine(Golden.Root, "mobilefacenet_landmark", "forward_b2_seed1234", "weights.safetensors");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Save(string name, IReadOnlyDictionary<string, Tensor> sd)
    {
        var path = Path.Combine(_dir, name);
        SafeTensors.Save(path, sd);
        return path;
    }

    [Fact]
    public void MobileFaceNetLoadsWithModulePrefixAndWithoutBatchCounters()
    {
        using var scope = NewDisposeScope();
        var sd = SafeTensors.Load(MobileWeights);
        var prefixed = sd.Where(kv => !kv.Key.EndsWith("num_batches_tracked", StringComparison.Ordinal))
            .ToDictionary(kv => "module." + kv.Key, kv => kv.Value);
        var path = Save("mobilefacenet_model_best.safetensors", prefixed);
        using var a = FaceCheckpoints.LoadMobileFaceNet(MobileWeights);
        using var b = FaceCheckpoints.LoadMobileFaceNet(path);
        Assert.False(a.training);
        Assert.All(b.parameters(), p => Assert.False(p.requires_grad));
        var x = torch.rand(1, 3, 112, 112);
        using var noGrad = no_grad();
        TensorAssert.Close(b.call(x).Landmarks, a.call(x).Landmarks, 0, 0, "prefixed vs plain");
    }

    [Fact]
    public void BiSeNetCheckpointIntoArcFaceIsRefusedNamingBoth()
    {
        using var scope = NewDisposeScope();
        using var bisenet = new BiSeNet(19);
        var path = Save("79999_iter.safetensors", bisenet.state_dict());
        var ex = Assert.Throws<CheckpointFormatException>(() => FaceCheckpoints.LoadIrSe50(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("IR-SE50", ex.Message);
        Assert.Contains("BiSeNet", ex.Message);
        Assert.Contains("input_layer.0.weight", ex.Message); // a missing key is listed
    }

    [Fact]
    public void LandmarkCheckpointIntoBiSeNetAndShapeMismatchesAreRefused()
    {
        using var scope = NewDisposeScope();
        var ex = Assert.Throws<CheckpointFormatException>(() => FaceCheckpoints.LoadBiSeNet(MobileWeights));
        Assert.Contains("MobileFaceNet", ex.Message);

        var sd = SafeTensors.Load(MobileWeights);
        sd["output_layer.linear.weight"] = torch.zeros(98 * 2, 512);
        var path = Save("wrong_head.safetensors", sd);
        var ex2 = Assert.Throws<CheckpointFormatException>(() => FaceCheckpoints.LoadMobileFaceNet(path));
        Assert.Contains("output_layer.linear.weight", ex2.Message);
        Assert.Contains("196", ex2.Message);
    }

    [Fact]
    public void IResNetDepthIsReadFromTheKeys()
    {
        using var scope = NewDisposeScope();
        using var small = new IResNet([1, 2, 1, 1]);
        using var net = FaceCheckpoints.LoadIResNet(small.state_dict(), "small backbone.pth");
        Assert.Equal([1, 2, 1, 1], net.Layers);
        using var bisenet = new BiSeNet(19);
        var ex = Assert.Throws<CheckpointFormatException>(() => FaceCheckpoints.LoadIResNet(bisenet.state_dict(), "79999_iter.pth"));
        Assert.Contains("BiSeNet", ex.Message);
    }

    [Fact]
    public void MissingFileIsReported()
    {
        var path = Path.Combine(_dir, "nope.pth");
        var ex = Assert.ThrowsAny<Exception>(() => FaceCheckpoints.LoadMobileFaceNet(path));
        Assert.Contains("nope.pth", ex.Message);
    }
}
