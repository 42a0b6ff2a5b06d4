using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

public class CheckpointTests
{
    public static TheoryData<string> PtCases()
    {
        var data = new TheoryData<string>();
        foreach (var net in new[] { "guided_unet", "clip" })
            foreach (var dir in Golden.CaseDirectories(net))
                if (File.Exists(Path.Combine(dir, "weights.pt")) && File.Exists(Path.Combine(dir, "weights.safetensors"))) data.Add(dir);
        if (data.Count == 0) throw new InvalidOperationException("no golden cases with weights.pt");
        return data;
    }

    [Theory]
    [MemberData(nameof(PtCases))]
    [Trait("Category", "Golden")]
    public void GoldenPtMatchesSafetensorsBitForBit(string caseDir)
    {
        var pt = Checkpoint.LoadStateDict(Path.Combine(caseDir, "weights.pt"));
        var st = Checkpoint.LoadStateDict(Path.Combine(caseDir, "weights.safetensors"));
        Assert.Equal(st.Keys.OrderBy(k => k, StringComparer.Ordinal), pt.Keys.OrderBy(k => k, StringComparer.Ordinal));
        foreach (var (k, t) in st)
        {
            var p = pt[k];
            Assert.Equal(t.dtype, p.dtype);
            Assert.Equal(t.shape, p.shape);
            Assert.True(t.contiguous().bytes.SequenceEqual(p.contiguous().bytes), $"{k} differs");
        }
        Assert.Equal(CheckpointFileFormat.PyTorchZip, Checkpoint.DetectFormat(Path.Combine(caseDir, "weights.pt")));
        Assert.Equal(CheckpointFileFormat.SafeTensors, Checkpoint.DetectFormat(Path.Combine(caseDir, "weights.safetensors")));
    }

    [Theory]
    [MemberData(nameof(PtCases))]
    [Trait("Category", "Golden")]
    public void GoldenPtLoadsAsObjectGraph(string caseDir)
    {
        var root = PyTorchCheckpoint.Load(Path.Combine(caseDir, "weights.pt"));
        var d = Assert.IsType<PickleDict>(root);
        Assert.True(d.Count > 10);
        Assert.All(d.Items, kv => Assert.IsType<Tensor>(kv.Value));
    }

    private static Dictionary<string, Tensor> Sample() => new()
    {
        ["a.weight"] = torch.arange(12, dtype: ScalarType.Float32).reshape(3, 4) / 7f,
        ["a.bias"] = torch.tensor(new float[] { 1.5f, -2f, 3.25f }),
        ["bn.num_batches_tracked"] = torch.tensor(42L),
        ["h"] = torch.linspace(-3, 3, 10).to(ScalarType.Float16),
        ["b"] = torch.linspace(-3, 3, 10).to(ScalarType.BFloat16),
        ["d"] = torch.linspace(-3, 3, 5, dtype: ScalarType.Float64),
        ["i32"] = torch.tensor(new[] { 1, -2, 3 }),
        ["u8"] = torch.tensor(new byte[] { 0, 255, 7 }),
        ["mask"] = torch.tensor(new[] { true, false, true }),
        ["empty"] = torch.zeros(0, 3),
    };

    private static string Temp(byte[] data, string ext = ".pt")
    {
        var p = Path.Combine(Path.GetTempPath(), "zmagic-io-" + Guid.NewGuid().ToString("N") + ext);
        File.WriteAllBytes(p, data);
        return p;
    }

    private static void AssertSame(Dictionary<string, Tensor> expected, Dictionary<string, Tensor> actual)
    {
        Assert.Equal(expected.Keys.OrderBy(k => k), actual.Keys.OrderBy(k => k));
        foreach (var (k, t) in expected)
        {
            Assert.Equal(t.dtype, actual[k].dtype);
            Assert.Equal(t.shape, actual[k].shape);
            Assert.True(t.contiguous().bytes.SequenceEqual(actual[k].contiguous().bytes), k);
        }
    }

    [Theory]
    [InlineData(null, "", "archive", 2, ".pt")]
    [InlineData("state_dict", "", "checkpoint", 2, ".pth.tar")]
    [InlineData("model", "module.", "weights", 4, ".ckpt")]
    [InlineData(null, "module.", "x", 4, ".pth")]
    public void CraftedCheckpointsRoundTrip(string? wrapper, string prefix, string archive, int protocol, string ext)
    {
        var sd = Sample();
        var path = Temp(PtWriter.Build(sd, wrapper, prefix, archive, protocol), ext);
        try
        {
            AssertSame(sd, Checkpoint.LoadStateDict(path));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void WrapperKeepsMetadataAsPlainObjects()
    {
        var path = Temp(PtWriter.Build(Sample(), "state_dict"));
        try
        {
            var d = Assert.IsType<PickleDict>(PyTorchCheckpoint.Load(path));
            Assert.True(d.TryGetValue("epoch", out var epoch));
            Assert.Equal(7L, epoch);
            Assert.True(d.TryGetValue("best", out var best));
            Assert.Equal(0.25, best);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void StridedViewsAndSharedStoragesAreCopiedCorrectly()
    {
        // Storage of 12 floats; t1 = rows 1..2 of a [3,4] view, t2 = a transposed [4,3] view of the same storage.
        var data = Enumerable.Range(0, 12).Select(i => (float)i).ToArray();
        var p = new PickleBuilder().Proto(2).EmptyDict().Mark()
            .Str("t1").TensorRef("FloatStorage", "0", 12, 4, new long[] { 2, 4 }, new long[] { 4, 1 })
            .Str("t2").TensorRef("FloatStorage", "0", 12, 0, new long[] { 4, 3 }, new long[] { 1, 4 })
            .SetItems().Stop();
        var bytes = new byte[48];
        Buffer.BlockCopy(data, 0, bytes, 0, 48);
        var path = Temp(PtWriter.Zip("archive", p.ToArray(), new[] { ("0", bytes) }));
        try
        {
            var sd = Checkpoint.LoadStateDict(path);
            var full = torch.tensor(data).reshape(3, 4);
            Assert.True(sd["t1"].equal(full[TensorIndex.Slice(1, 3)]).all().item<bool>());
            Assert.True(sd["t2"].equal(full.t()).all().item<bool>());
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void LoadFileIntoModuleConvertsHalfWeights()
    {
        var m = nn.Linear(4, 3);
        var sd = new Dictionary<string, Tensor>
        {
            ["module.weight"] = FormulaWeights.Generate("weight", new long[] { 3, 4 }, ScalarType.Float16),
            ["module.bias"] = FormulaWeights.Generate("bias", new long[] { 3 }, ScalarType.Float16),
        };
        var path = Temp(PtWriter.Build(sd, "state_dict"), ".pth.tar");
        try
        {
            var report = StateDictLoader.LoadFile(m, path);
            Assert.True(report.IsComplete);
            Assert.Equal(ScalarType.Float32, m.weight!.dtype);
            Assert.True(m.weight.equal(sd["module.weight"].to(ScalarType.Float32)).all().item<bool>());
            var wrong = nn.Linear(5, 3);
            var ex = Assert.Throws<StateDictMismatchException>(() => StateDictLoader.LoadFile(wrong, path));
            Assert.Contains(path, ex.Message);
            Assert.Contains("weight: expected [3, 5], checkpoint has [3, 4]", ex.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void LegacyAndUnknownFormatsGiveClearErrors()
    {
        var legacy = Temp(new byte[] { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e });
        var junk = Temp(System.Text.Encoding.ASCII.GetBytes("hello, this is not a checkpoint at all"));
        try
        {
            var ex = Assert.Throws<CheckpointFormatException>(() => Checkpoint.LoadStateDict(legacy));
            Assert.Contains("_use_new_zipfile_serialization=True", ex.Message);
            Assert.Contains(legacy, ex.Message);
            Assert.Contains("unrecognised", Assert.Throws<CheckpointFormatException>(() => Checkpoint.LoadStateDict(junk)).Message);
        }
        finally { File.Delete(legacy); File.Delete(junk); }
    }
}
