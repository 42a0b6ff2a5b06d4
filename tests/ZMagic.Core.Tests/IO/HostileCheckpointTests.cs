using System.IO.Compression;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

public class HostileCheckpointTests
{
    /// <summary>The committed corpus folder (copied beside the test assembly).</summary>
    private static string CorpusDir => Path.Combine(AppContext.BaseDirectory, "IO", "corpus");

    private static string SourceCorpusDir()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "ZMagic.sln"))) dir = dir.Parent;
        return Path.Combine(dir!.FullName, "tests", "ZMagic.Core.Tests", "IO", "corpus");
    }

    public static TheoryData<string> CorpusNames()
    {
        var d = new TheoryData<string>();
        foreach (var c in MaliciousPickles.All()) d.Add(c.Name);
        return d;
    }

    private static string Temp(byte[] data, string ext = ".pt")
    {
        var p = Path.Combine(Path.GetTempPath(), "zmagic-hostile-" + Guid.NewGuid().ToString("N") + ext);
        File.WriteAllBytes(p, data);
        return p;
    }

    [Fact]
    public void CommittedCorpusMatchesTheGenerator()
    {
        // ZMAGIC_WRITE_CORPUS=1 regenerates the committed files from MaliciousPickles.
        if (Environment.GetEnvironmentVariable("ZMAGIC_WRITE_CORPUS") == "1")
        {
            var src = SourceCorpusDir();
            Directory.CreateDirectory(src);
            foreach (var (name, pickle, _) in MaliciousPickles.All()) File.WriteAllBytes(Path.Combine(src, name + ".pkl"), pickle);
        }
        var committed = Directory.GetFiles(CorpusDir, "*.pkl").Select(Path.GetFileNameWithoutExtension).OrderBy(n => n, StringComparer.Ordinal).ToList();
        var generated = MaliciousPickles.All().ToList();
        Assert.Equal(generated.Select(g => g.Name).OrderBy(n => n, StringComparer.Ordinal), committed);
        foreach (var (name, pickle, _) in generated)
            Assert.Equal(pickle, File.ReadAllBytes(Path.Combine(CorpusDir, name + ".pkl")));
    }

    [Theory]
    [MemberData(nameof(CorpusNames))]
    public void MaliciousPickleIsRefusedNamingFileAndGlobal(string name)
    {
        var (_, _, global) = MaliciousPickles.All().Single(c => c.Name == name);
        var pickle = File.ReadAllBytes(Path.Combine(CorpusDir, name + ".pkl"));
        var path = Temp(PtWriter.Zip("archive", pickle, new[] { ("0", new byte[4]) }));
        try
        {
            var ex = Assert.Throws<UnsafeCheckpointException>(() => Checkpoint.LoadStateDict(path));
            Assert.Contains(path, ex.Message);
            Assert.Contains("'" + global + "'", ex.Message);
            Assert.Throws<UnsafeCheckpointException>(() => PyTorchCheckpoint.Load(path));
            Assert.False(File.Exists("/tmp/zmagic-pwned"));
        }
        finally { File.Delete(path); }
    }

    private static byte[] ValidPt() => PtWriter.Build(new Dictionary<string, Tensor>
    {
        ["w"] = torch.arange(6, dtype: ScalarType.Float32).reshape(2, 3),
        ["b"] = torch.ones(2, dtype: ScalarType.Float16),
    }, "state_dict");

    [Fact]
    public void TruncatedPtIsRefusedAtEveryLength()
    {
        var full = ValidPt();
        var path = Temp(Array.Empty<byte>());
        try
        {
            for (int len = 0; len < full.Length; len++)
            {
                File.WriteAllBytes(path, full.AsSpan(0, len).ToArray());
                Assert.ThrowsAny<CheckpointFormatException>(() => Checkpoint.LoadStateDict(path));
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void CorruptedZipIsRefused()
    {
        var full = ValidPt();
        var rng = new Random(7);
        var path = Temp(Array.Empty<byte>());
        try
        {
            // Overwrite the central directory region with garbage.
            var bad = (byte[])full.Clone();
            for (int i = bad.Length - 60; i < bad.Length - 10; i++) bad[i] = (byte)rng.Next(256);
            File.WriteAllBytes(path, bad);
            Assert.ThrowsAny<CheckpointFormatException>(() => Checkpoint.LoadStateDict(path));
        }
        finally { File.Delete(path); }
    }

    private static byte[] OneTensor(long numel, long offset, long[] size, long[] stride, int storageBytes, string type = "FloatStorage") =>
        PtWriter.Zip("archive", new PickleBuilder().Proto(2).EmptyDict().Str("w").TensorRef(type, "0", numel, offset, size, stride).SetItem().Stop().ToArray(),
            new[] { ("0", new byte[storageBytes]) });

    public static TheoryData<string, long, long, long[], long[], int, string> BadStorages() => new()
    {
        { "storage larger than record", 1000, 0, new long[] { 1000 }, new long[] { 1 }, 16, "holds 16 bytes" },
        { "terabyte storage", 1L << 40, 0, new long[] { 4 }, new long[] { 1 }, 16, "holds 16 bytes" },
        { "negative storage size", -4, 0, new long[] { 4 }, new long[] { 1 }, 16, "claims -4 elements" },
        { "stride past storage", 4, 0, new long[] { 4 }, new long[] { 2 }, 16, "past the storage" },
        { "offset past storage", 4, 3, new long[] { 2 }, new long[] { 1 }, 16, "past the storage" },
        { "negative offset", 4, -1, new long[] { 2 }, new long[] { 1 }, 16, "negative storage offset" },
        { "negative size", 4, 0, new long[] { -2 }, new long[] { 1 }, 16, "negative size" },
        { "negative stride", 4, 0, new long[] { 2 }, new long[] { -1 }, 16, "negative size or stride" },
        { "overflowing size", 4, 0, new long[] { long.MaxValue, 4 }, new long[] { 1, 1 }, 16, "overflows" },
        { "rank mismatch", 4, 0, new long[] { 2, 2 }, new long[] { 1 }, 16, "dimensions" },
    };

    [Theory]
    [MemberData(nameof(BadStorages))]
    public void BadStoragesAndViewsAreRefused(string what, long numel, long offset, long[] size, long[] stride, int bytes, string message)
    {
        var path = Temp(OneTensor(numel, offset, size, stride, bytes));
        try
        {
            var ex = Assert.ThrowsAny<CheckpointFormatException>(() => Checkpoint.LoadStateDict(path));
            Assert.Contains(message, ex.Message);
            Assert.Contains(path, ex.Message);
            _ = what;
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void MissingStorageRecordAndTorchScriptAreRefused()
    {
        var noRecord = Temp(PtWriter.Zip("archive", new PickleBuilder().Proto(2).EmptyDict().Str("w").TensorRef("FloatStorage", "9", 1, 0, new long[] { 1 }, new long[] { 1 }).SetItem().Stop().ToArray(), Array.Empty<(string, byte[])>()));
        var ts = Temp(PtWriter.Zip("model", new PickleBuilder().Proto(2).EmptyDict().Stop().ToArray(), new[] { ("0", new byte[4]) }));
        try
        {
            Assert.Contains("data/9 is missing", Assert.ThrowsAny<CheckpointFormatException>(() => Checkpoint.LoadStateDict(noRecord)).Message);
            // Add a constants.pkl to make it look like a TorchScript archive.
            using (var z = ZipFile.Open(ts, ZipArchiveMode.Update)) z.CreateEntry("model/constants.pkl");
            Assert.Contains("TorchScript", Assert.ThrowsAny<CheckpointFormatException>(() => Checkpoint.LoadStateDict(ts)).Message);
        }
        finally { File.Delete(noRecord); File.Delete(ts); }
    }

    [Fact]
    public void DeepNestingAndCyclesDoNotCrash()
    {
        // 100k nested lists, then a list containing itself.
        var p = new PickleBuilder().Proto(2);
        for (int i = 0; i < 100_000; i++) p.EmptyList();
        for (int i = 0; i < 99_999; i++) p.Op((byte)'a');
        p.Stop();
        var deep = Temp(PtWriter.Zip("archive", p.ToArray(), Array.Empty<(string, byte[])>()));
        var cyc = Temp(PtWriter.Zip("archive", new PickleBuilder().Proto(2).EmptyDict().Put(0).Str("self").Get(0).SetItem().Stop().ToArray(), Array.Empty<(string, byte[])>()));
        try
        {
            Assert.Contains("nested deeper", Assert.ThrowsAny<CheckpointFormatException>(() => PyTorchCheckpoint.Load(deep)).Message);
            Assert.Contains("no tensors", Assert.ThrowsAny<CheckpointFormatException>(() => Checkpoint.LoadStateDict(cyc)).Message);
            var root = Assert.IsType<PickleDict>(PyTorchCheckpoint.Load(cyc));
            Assert.True(root.TryGetValue("self", out var self) && ReferenceEquals(self, root));
        }
        finally { File.Delete(deep); File.Delete(cyc); }
    }
}
