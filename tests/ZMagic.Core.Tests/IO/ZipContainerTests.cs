using System.Diagnostics;
using System.IO.Compression;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

/// <summary>The zip container of PyTorch checkpoints (issue 16): CRCs, sizes, header-only summaries, regular files only.</summary>
public class ZipContainerTests
{
    private static Dictionary<string, Tensor> StateDict() => new()
    {
        ["a.weight"] = torch.arange(64, dtype: ScalarType.Float32).reshape(8, 8) + 1000,
        ["a.bias"] = torch.ones(8, dtype: ScalarType.Float16),
    };

    private static string Temp(byte[] data)
    {
        var p = Path.Combine(Path.GetTempPath(), "zmagic-zip-" + Guid.NewGuid().ToString("N") + ".pt");
        File.WriteAllBytes(p, data);
        return p;
    }

    /// <summary>A stored (uncompressed) checkpoint with one byte of a.weight's data flipped; the CRC in the archive is the original.</summary>
    internal static byte[] WithCorruptStorageByte()
    {
        var bytes = PtWriter.Build(StateDict());
        using var w = torch.arange(64, dtype: ScalarType.Float32) + 1000;
        var data = w.bytes.ToArray();
        int at = bytes.AsSpan().IndexOf(data);
        Assert.True(at > 0, "storage bytes not found in the stored zip");
        bytes[at + 37] ^= 0x10;
        return bytes;
    }

    [Fact]
    public void ACorruptStorageByteFailsTheCrcCheck()
    {
        string path = Temp(WithCorruptStorageByte());
        try
        {
            var ex = Assert.Throws<CheckpointFormatException>(() => Checkpoint.LoadStateDict(path));
            Assert.Contains("CRC-32", ex.Message);
            Assert.Contains("data/0", ex.Message);
            Assert.StartsWith(path, ex.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void ACorruptPickleByteFailsTheCrcCheck()
    {
        var bytes = PtWriter.Build(StateDict());
        int at = bytes.AsSpan().IndexOf("a.weight"u8);
        bytes[at] = (byte)'b'; // still a valid pickle: only the CRC can tell
        string path = Temp(bytes);
        try
        {
            var ex = Assert.Throws<CheckpointFormatException>(() => Checkpoint.LoadStateDict(path));
            Assert.Contains("data.pkl is corrupt", ex.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void ReadSummaryReadsNamesShapesAndSizesWithoutTouchingTheData()
    {
        // The corrupt storage proves that no data is read: LoadStateDict refuses this file, ReadSummary does not need to.
        string path = Temp(WithCorruptStorageByte());
        try
        {
            var s = Checkpoint.ReadSummary(path);
            Assert.Equal(new[] { "a.weight", "a.bias" }, s.Entries.Select(e => e.Name));
            Assert.Equal(new long[] { 8, 8 }, s.Entries[0].Shape);
            Assert.Equal(ScalarType.Float16, s.Entries[1].DType);
            Assert.Equal(64 * 4 + 8 * 2, s.DataBytes);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void MaxDataBytesRefusesADeflatedBombBeforeInflatingIt()
    {
        // 256 MiB of zeros deflate to about 256 KB: the honest record passes the per-record ratio check.
        const long n = 64L << 20;
        var p = new PickleBuilder().Proto(2).Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark()
            .Str("big").TensorRef("FloatStorage", "0", n, 0, new[] { n }, new[] { 1L }).SetItems().Stop();
        byte[] zip;
        using (var ms = new MemoryStream())
        {
            using (var z = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
            {
                using (var s = z.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open()) s.Write(p.ToArray());
                using (var s = z.CreateEntry("archive/data/0", CompressionLevel.Optimal).Open())
                {
                    var zeros = new byte[1 << 20];
                    for (int i = 0; i < 256; i++) s.Write(zeros);
                }
            }
            zip = ms.ToArray();
        }
        Assert.True(zip.Length < 2 << 20, $"{zip.Length} bytes");
        string path = Temp(zip);
        try
        {
            Assert.Equal(n * 4, Checkpoint.ReadSummary(path).DataBytes);
            var sw = Stopwatch.StartNew();
            var ex = Assert.Throws<CheckpointFormatException>(() => Checkpoint.LoadStateDict(path, new CheckpointReadOptions { MaxDataBytes = 16L << 20 }));
            Assert.Contains("268435456 bytes once inflated, above the 16777216-byte limit", ex.Message);
            Assert.True(sw.ElapsedMilliseconds < 2000, $"{sw.ElapsedMilliseconds} ms: was it inflated?");
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void DevicesFoldersAndEmptyFilesAreRefusedByName()
    {
        var ex = Assert.Throws<NotARegularFileException>(() => Checkpoint.LoadStateDict("/dev/zero"));
        Assert.Contains("'/dev/zero' is empty or not a regular file", ex.Message);
        Assert.Throws<NotARegularFileException>(() => SafeTensors.Load("/dev/null"));
        var dir = Directory.CreateTempSubdirectory("zmagic-zip-").FullName;
        try
        {
            Assert.Contains("is a folder", Assert.Throws<NotARegularFileException>(() => Checkpoint.ReadSummary(dir)).Message);
            string empty = Path.Combine(dir, "empty.pt");
            File.WriteAllBytes(empty, Array.Empty<byte>());
            Assert.Throws<NotARegularFileException>(() => Checkpoint.LoadStateDict(empty));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public async Task AFifoIsRefusedInsteadOfBlocking()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-zip-").FullName;
        try
        {
            string fifo = Path.Combine(dir, "pipe.pt");
            using (var mk = Process.Start("mkfifo", fifo)) await mk.WaitForExitAsync();
            var task = Task.Run(() => Checkpoint.LoadStateDict(fifo));
            var done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(20)));
            Assert.True(done == task, "reading a FIFO blocked");
            var ex = await Assert.ThrowsAsync<NotARegularFileException>(() => task);
            Assert.Contains(fifo, ex.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
