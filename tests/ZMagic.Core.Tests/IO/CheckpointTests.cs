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
            foreach (object[] row in (IEnumerable<object[]>)Golden.Cases(net))
                if (row[0] is string id && File.Exists(Golden.File(id, "weights.pt")) && File.Exists(Golden.File(id, "weights.safetensors"))) data.Add(id);
        if (data.Count == 0) throw new InvalidOperationException("no golden cases with weights.pt");
        return data;
    }

    [Theory]
    [MemberData(nameof(PtCases))]
    [Trait("Category", "Golden")]
    public void GoldenPtMatchesSafetensorsBitForBit(string caseDir)
    {
        var pt = Checkpoint.LoadStateDict(Golden.File(caseDir, "weights.pt"));
        var st = Checkpoint.LoadStateDict(Golden.File(caseDir, "weights.safetensors"));
        Assert.Equal(st.Keys.OrderBy(k => k, StringComparer.Ordinal), pt.Keys.OrderBy(k => k, StringComparer.Ordinal));
        foreach (var (k, t) in st)
        {
            var p = pt[k];
            Assert.Equal(t.dtype, p.dtype);
            Assert.Equal(t.shape, p.shape);
            Assert.True(t.contiguous().bytes.SequenceEqual(p.contiguous().bytes), $"{k} differs");
        }
        Assert.Equal(CheckpointFileFormat.PyTorchZip, Checkpoint.DetectFormat(Golden.File(caseDir, "weights.pt")));
        Assert.Equal(CheckpointFileFormat.SafeTensors, Checkpoint.DetectFormat(Golden.File(caseDir, "weights.safetensors")));
    }

    [Theory]
    [MemberData(nameof(PtCases))]
    [Trait("Category", "Golden")]
    public void GoldenPtLoadsAsObjectGraph(string caseDir)
    {
        var root = PyTorchCheckpoint.Load(Golden.File(caseDir, "weights.pt"));
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

public class PickleFeatureTests
{
    private static object? Load(byte[] pickle, params (string, byte[])[] storages)
    {
        using var ms = new MemoryStream(PtWriter.Zip("archive", pickle, storages));
        return PyTorchCheckpoint.Load(ms, "test.pt");
    }

    [Fact]
    public void StateDictMetadataBuildParameterNamespaceAndNumpyScalarsAreReadAsData()
    {
        var f = new byte[8];
        BitConverter.GetBytes(1.5f).CopyTo(f, 0);
        BitConverter.GetBytes(-2f).CopyTo(f, 4);
        var p = new PickleBuilder().Proto(2).EmptyDict().Mark()
            // {'state_dict': OrderedDict(w=Parameter(...)) with _metadata set by BUILD}
            .Str("state_dict").Global("collections", "OrderedDict").EmptyTuple().Reduce()
                .Mark().Str("w").Global("torch._utils", "_rebuild_parameter")
                    .TensorRef("FloatStorage", "0", 2, 0, new long[] { 2 }, new long[] { 1 }).Op(0x88).Global("collections", "OrderedDict").EmptyTuple().Reduce().Op(0x87).Reduce()
                .SetItems()
                .EmptyDict().Str("_metadata").Global("collections", "OrderedDict").EmptyTuple().Reduce()
                    .Str("").EmptyDict().Str("version").Int(1).SetItem().SetItem().SetItem().Op((byte)'b')
            // 'args': argparse.Namespace(lr=0.1) via NEWOBJ + BUILD
            .Str("args").Global("argparse", "Namespace").EmptyTuple().Op(0x81).EmptyDict().Str("lr").Float(0.1).SetItem().Op((byte)'b')
            // 'best': numpy float64 scalar via numpy.dtype + _codecs.encode
            .Str("best").Global("numpy.core.multiarray", "scalar")
                .Global("numpy", "dtype").Str("f8").False().Op(0x88).Op(0x87).Reduce()
                .Mark().Int(3).Str("<").None().None().None().Int(-1).Int(-1).Int(0).Tuple().Op((byte)'b')
                .Global("_codecs", "encode").Str("\u0000\u0000\u0000\u0000\u0000\u0000\u0004@").Str("latin1").Op(0x86).Reduce()
                .Op(0x86).Reduce()
            .Str("big").Raw(0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1)
            .Str("neg").Raw(0x8a, 1, 0xff)
            .SetItems().Stop();
        var root = Assert.IsType<PickleDict>(Load(p.ToArray(), ("0", f)));
        Assert.True(root.TryGetValue("state_dict", out var sdObj));
        var sd = Assert.IsType<PickleDict>(sdObj);
        Assert.True(sd.TryGetValue("w", out var w));
        Assert.Equal(new[] { 1.5f, -2f }, Assert.IsType<Tensor>(w).data<float>().ToArray());
        Assert.IsType<PickleDict>(sd.State);
        Assert.True(root.TryGetValue("args", out var args));
        var ns = Assert.IsType<PickleObject>(args);
        Assert.True(Assert.IsType<PickleDict>(ns.State).TryGetValue("lr", out var lr));
        Assert.Equal(0.1, lr);
        Assert.True(root.TryGetValue("best", out var best));
        Assert.Equal(2.5, best);
        Assert.True(root.TryGetValue("big", out var big));
        Assert.Equal(System.Numerics.BigInteger.Pow(2, 64), big);
        Assert.True(root.TryGetValue("neg", out var neg));
        Assert.Equal(-1L, neg);
        // Checkpoint.LoadStateDict unwraps 'state_dict' and drops the metadata.
        using var ms = new MemoryStream(PtWriter.Zip("archive", p.ToArray(), new[] { ("0", f) }));
        var flat = Checkpoint.LoadStateDict(ms, "test.pt");
        Assert.Equal(new[] { "w" }, flat.Keys);
    }

    [Fact]
    public void WholeModelPicklesAreRefusedWithAHint()
    {
        var p = new PickleBuilder().Proto(2).Global("torch.nn.modules.container", "Sequential").EmptyTuple().Op(0x81).Stop();
        var ex = Assert.Throws<UnsafeCheckpointException>(() => Load(p.ToArray()));
        Assert.Contains("state_dict()", ex.Message);
        Assert.Equal("torch.nn.modules.container", ex.Module);
        Assert.Equal("Sequential", ex.Name);
    }

    [Fact]
    public void NestedDictionariesAreFlattenedWithDots()
    {
        var p = new PickleBuilder().Proto(2).EmptyDict().Mark()
            .Str("encoder").EmptyDict().Str("conv").EmptyDict().Str("weight").TensorRef("FloatStorage", "0", 2, 0, new long[] { 2 }, new long[] { 1 }).SetItem().SetItem()
            .Str("decoder").EmptyDict().Str("bias").TensorRef("FloatStorage", "0", 2, 0, new long[] { 2 }, new long[] { 1 }).SetItem()
            .Str("step").Int(10)
            .SetItems().Stop();
        using var ms = new MemoryStream(PtWriter.Zip("archive", p.ToArray(), new[] { ("0", new byte[8]) }));
        var flat = Checkpoint.LoadStateDict(ms, "nested.pt");
        Assert.Equal(new[] { "decoder.bias", "encoder.conv.weight" }, flat.Keys.OrderBy(k => k, StringComparer.Ordinal));
    }
}

public class OpaqueGlobalTests
{
    [Fact]
    public void OptInOpaqueGlobalsAreRecordedNeverCalled()
    {
        var p = new PickleBuilder().Proto(2).EmptyDict().Mark()
            .Str("state_dict").EmptyDict().Str("w").TensorRef("FloatStorage", "0", 1, 0, new long[] { 1 }, new long[] { 1 }).SetItem()
            .Str("callbacks").Global("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint").EmptyTuple().Op(0x81)
                .EmptyDict().Str("monitor").Str("val_loss").SetItem().Op((byte)'b')
            .SetItems().Stop();
        var zip = PtWriter.Zip("archive", p.ToArray(), new[] { ("0", new byte[4]) });
        using (var ms = new MemoryStream(zip))
            Assert.Throws<UnsafeCheckpointException>(() => Checkpoint.LoadStateDict(ms, "lightning.ckpt"));
        var options = new CheckpointReadOptions { OpaqueGlobals = new[] { "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" } };
        using (var ms = new MemoryStream(zip))
            Assert.Equal(new[] { "w" }, Checkpoint.LoadStateDict(ms, "lightning.ckpt", options).Keys);
        using (var ms = new MemoryStream(zip))
        {
            var root = Assert.IsType<PickleDict>(PyTorchCheckpoint.Load(ms, "lightning.ckpt", options));
            Assert.True(root.TryGetValue("callbacks", out var cb));
            Assert.Equal("ModelCheckpoint", Assert.IsType<PickleObject>(cb).Class.Name);
        }
        // Opting in one name does not open any other.
        var evil = new PickleBuilder().Proto(2).Global("os", "system").Str("id").Op(0x85).Reduce().Stop();
        using (var ms = new MemoryStream(PtWriter.Zip("archive", evil.ToArray(), Array.Empty<(string, byte[])>())))
            Assert.Throws<UnsafeCheckpointException>(() => PyTorchCheckpoint.Load(ms, "evil.pt", options));
    }
}

public class ExpandedViewTests
{
    [Fact]
    public void ZeroStrideViewsWithinTheLimitAreMaterialised()
    {
        var p = new PickleBuilder().Proto(2).EmptyDict().Str("e").TensorRef("FloatStorage", "0", 2, 0, new long[] { 3, 2 }, new long[] { 0, 1 }).SetItem().Stop();
        var bytes = new byte[8];
        BitConverter.GetBytes(4f).CopyTo(bytes, 0);
        BitConverter.GetBytes(5f).CopyTo(bytes, 4);
        using var ms = new MemoryStream(PtWriter.Zip("archive", p.ToArray(), new[] { ("0", bytes) }));
        var t = Checkpoint.LoadStateDict(ms, "expanded.pt")["e"];
        Assert.Equal(new long[] { 3, 2 }, t.shape);
        Assert.Equal(new[] { 4f, 5f, 4f, 5f, 4f, 5f }, t.contiguous().data<float>().ToArray());
    }
}
