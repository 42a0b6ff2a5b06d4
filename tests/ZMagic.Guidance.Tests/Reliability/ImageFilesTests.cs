using ZMagic.TestSupport;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using CsCheck;
using SkiaSharp;
using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Guidance.Imaging;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Reliability;

/// <summary>The image I/O path: size limits from the header, the library's own exception, atomic writes, fuzzing.</summary>
public class ImageFilesTests
{
    private readonly ITestOutputHelper _out;

    public ImageFilesTests(ITestOutputHelper output) => _out = output;

    internal static RgbImage Gradient(int w, int h)
    {
        var px = new byte[w * h * 3];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int i = (y * w + x) * 3;
                px[i] = (byte)(x * 255 / Math.Max(1, w - 1));
                px[i + 1] = (byte)(y * 255 / Math.Max(1, h - 1));
                px[i + 2] = (byte)((x * 7 + y * 13) & 255);
            }
        return new RgbImage(w, h, px);
    }

    internal static byte[] Jpeg(RgbImage img, bool progressive = false)
    {
        var info = new SKImageInfo(img.Width, img.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bmp = new SKBitmap(info);
        var rgba = new byte[img.Width * img.Height * 4];
        for (int i = 0, j = 0; j < img.Pixels.Length; i += 4, j += 3) { rgba[i] = img.Pixels[j]; rgba[i + 1] = img.Pixels[j + 1]; rgba[i + 2] = img.Pixels[j + 2]; rgba[i + 3] = 255; }
        System.Runtime.InteropServices.Marshal.Copy(rgba, 0, bmp.GetPixels(), rgba.Length);
        using var ms = new MemoryStream();
        using (var pix = bmp.PeekPixels())
            Assert.True(pix.Encode(ms, new SKJpegEncoderOptions(85, SKJpegEncoderDownsample.Downsample420, SKJpegEncoderAlphaOption.Ignore)));
        return ms.ToArray();
    }

    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }

    /// <summary>A valid PNG whose IHDR (with a correct CRC) claims <paramref name="w"/> x <paramref name="h"/>.</summary>
    private static byte[] PngClaiming(uint w, uint h)
    {
        var png = ImageFiles.EncodePng(Gradient(4, 4));
        BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(16), w);
        BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(20), h);
        BinaryPrimitives.WriteUInt32BigEndian(png.AsSpan(29), Crc32(png.AsSpan(12, 17)));
        return png;
    }

    [Fact]
    public void PngRoundTripsExactlyAndJpegApproximately()
    {
        var img = Gradient(23, 17);
        var back = ImageFiles.Decode(ImageFiles.EncodePng(img), "mem.png");
        Assert.Equal((23, 17), (back.Width, back.Height));
        Assert.Equal(img.Pixels, back.Pixels);
        Assert.Equal((23, 17, "Png"), ImageFiles.ReadHeader(ImageFiles.EncodePng(img)));

        var jpg = ImageFiles.Decode(Jpeg(img), "mem.jpg");
        Assert.Equal((23, 17), (jpg.Width, jpg.Height));
        double mad = img.Pixels.Zip(jpg.Pixels, (a, b) => Math.Abs(a - b)).Average();
        Assert.InRange(mad, 0, 12);
    }

    [Fact]
    public void TensorQuantisationRoundTrips()
    {
        var img = Gradient(9, 5);
        using var t = img.ToTensor();
        Assert.Equal(new long[] { 1, 3, 5, 9 }, t.shape);
        Assert.Equal(img.Pixels, RgbImage.FromTensor(t).Pixels);
        using var grey = torch.full(1, 1, 2, 2, 2.0f); // out of range: clamped to white
        Assert.All(RgbImage.FromTensor(grey).Pixels, p => Assert.Equal(255, p));
        using var nan = torch.full(3, 2, 2, float.NaN);
        Assert.Throws<ArgumentException>(() => RgbImage.FromTensor(nan));
        using var bad = torch.zeros(2, 3, 4, 4);
        Assert.Contains("[2, 3, 4, 4]", Assert.Throws<ArgumentException>(() => RgbImage.FromTensor(bad)).Message);
    }

    [Theory]
    [InlineData(20000u, 10u)]
    [InlineData(10u, 16385u)]
    [InlineData(12000u, 12000u)] // 144 MP: each side within bounds, the product is not
    [InlineData(0x7FFFFFFFu, 0x7FFFFFFFu)]
    public void OversizedHeadersAreRefusedBeforeDecoding(uint w, uint h)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        var ex = Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(PngClaiming(w, h), "huge.png"));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.StartsWith("huge.png: ", ex.Message);
        Assert.True(ex.Message.Contains("header declares") || ex.Message.Contains("corrupt"), ex.Message);
        Assert.True(allocated < 1 << 20, $"refusing a {w}x{h} header allocated {allocated} managed bytes");
    }

    [Fact]
    public void AJpegClaimingTooManyPixelsIsRefusedFromItsHeader()
    {
        var jpg = Jpeg(Gradient(8, 8));
        // Patch the SOF0 frame header (FF C0, len, precision, height, width) to 20000 x 20000.
        int sof = Enumerable.Range(0, jpg.Length - 1).First(i => jpg[i] == 0xFF && jpg[i + 1] is 0xC0 or 0xC2);
        BinaryPrimitives.WriteUInt16BigEndian(jpg.AsSpan(sof + 5), 20000);
        BinaryPrimitives.WriteUInt16BigEndian(jpg.AsSpan(sof + 7), 20000);
        var ex = Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(jpg, "huge.jpg"));
        Assert.Contains("20000x20000", ex.Message);
    }

    [Fact]
    public void APngCutAfterItsHeaderIsTruncatedNotDecoded()
    {
        var png = ImageFiles.EncodePng(Gradient(32, 32));
        int idat = png.AsSpan().IndexOf("IDAT"u8) - 4; // the chunk after IHDR
        var ex = Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(png[..idat], "cut.png"));
        Assert.Contains("the PNG data is truncated", ex.Message);
        // Cut inside IDAT: the chunk length runs past the end.
        Assert.Contains("truncated", Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(png[..(idat + 20)], "cut2.png")).Message);
        // Trailing bytes after IEND are harmless.
        Assert.Equal(32, ImageFiles.Decode(png.Concat(new byte[] { 1, 2, 3 }).ToArray(), "tail.png").Width);
    }

    [Fact]
    public void LoadReadsOnlyRegularFilesAndHonoursATighterPixelLimit()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-img-").FullName;
        try
        {
            Assert.Contains("is a folder", Assert.Throws<ZMagic.Core.IO.NotARegularFileException>(() => ImageFiles.Load(dir)).Message);
            Assert.Contains("not a regular file", Assert.Throws<ZMagic.Core.IO.NotARegularFileException>(() => ImageFiles.Load("/dev/zero")).Message);
            string path = Path.Combine(dir, "a.png");
            File.WriteAllBytes(path, ImageFiles.EncodePng(Gradient(40, 30)));
            Assert.Equal(40, ImageFiles.Load(path, 1200).Width);
            var ex = Assert.Throws<ImageDecodeException>(() => ImageFiles.Load(path, 1199));
            Assert.Contains("40x30", ex.Message);
            Assert.Contains("1199 pixels", ex.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void UndecodableDataGivesTheLibrarysException()
    {
        Assert.Contains("empty", Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(Array.Empty<byte>(), "e.png")).Message);
        Assert.Contains("not a PNG or JPEG", Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode("GIF89a......"u8.ToArray(), "x.gif")).Message);
        var png = ImageFiles.EncodePng(Gradient(32, 32));
        Assert.Contains("truncated", Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(png[..(png.Length - 40)], "t.png")).Message);
        var jpg = Jpeg(Gradient(32, 32));
        Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(jpg[..(jpg.Length / 2)], "t.jpg"));
        Assert.Throws<ImageDecodeException>(() => ImageFiles.Decode(png[..20], "header-only.png"));
        string missing = Path.Combine(Path.GetTempPath(), "zmagic-missing-" + Guid.NewGuid().ToString("N") + ".png");
        Assert.Throws<FileNotFoundException>(() => ImageFiles.Load(missing));
    }

    [Fact]
    public void AtomicWriteNeverLeavesAPartialFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "zmagic-atomic-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "out.png");
            // A writer that fails halfway: nothing at the target, no temporary file left.
            Assert.Throws<IOException>(() => ImageFiles.WriteAtomic(path, s => { s.Write(new byte[1000]); throw new IOException("disk full"); }));
            Assert.Empty(Directory.GetFileSystemEntries(dir));

            // A complete file, then a cancelled overwrite: the previous complete file stays.
            var first = Gradient(8, 8);
            ImageFiles.SavePng(path, first);
            var bytes = File.ReadAllBytes(path);
            using var cts = new CancellationTokenSource();
            Assert.ThrowsAny<OperationCanceledException>(() => ImageFiles.WriteAtomic(path, s => { s.Write(new byte[77]); cts.Cancel(); }, cts.Token));
            Assert.Equal(bytes, File.ReadAllBytes(path));
            Assert.Equal(new[] { path }, Directory.GetFileSystemEntries(dir));
            Assert.Equal(first.Pixels, ImageFiles.Load(path).Pixels);

            // A tensor save replaces it completely.
            using var t = torch.zeros(1, 3, 4, 6);
            ImageFiles.SavePng(path, t);
            Assert.Equal((6, 4), (ImageFiles.Load(path).Width, ImageFiles.Load(path).Height));
            Assert.Equal(new[] { path }, Directory.GetFileSystemEntries(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    // ---------- fuzzing ----------

    private static readonly ConcurrentDictionary<string, int> Outcomes = new();

    private void FuzzDecode(string label, byte[][] seeds, long ciIterations)
    {
        var failures = new ConcurrentBag<string>();
        long count = FuzzSupport.Iterations(ciIterations);
        long decoded = 0, refused = 0;
        double slowestMs = 0;
        Gen.Select(Gen.Int[0, seeds.Length - 1], FuzzSupport.Mutations(8)).Sample((seed, ops) =>
        {
            var data = FuzzSupport.Apply(seeds[seed], ops);
            var sw = Stopwatch.StartNew();
            string outcome;
            try
            {
                var img = ImageFiles.Decode(data, label);
                Assert.Equal(3L * img.Width * img.Height, img.Pixels.LongLength);
                decoded++;
                outcome = "decoded";
            }
            catch (ImageDecodeException ex)
            {
                refused++;
                outcome = System.Text.RegularExpressions.Regex.Replace(ex.Message, "[0-9]+", "N");
            }
            catch (Exception ex)
            {
                failures.Add($"{label} seed {seed} ops {string.Join(" ", ops)}: {ex.GetType().Name}: {ex.Message}");
                outcome = "FAILURE " + ex.GetType().Name;
            }
            slowestMs = Math.Max(slowestMs, sw.Elapsed.TotalMilliseconds);
            Outcomes.AddOrUpdate(label + " | " + outcome[..Math.Min(outcome.Length, 90)], 1, (_, n) => n + 1);
        }, iter: count, threads: 1);
        _out.WriteLine($"{label}: {count} mutated inputs, {decoded} decoded, {refused} refused, {failures.Count} failures, slowest {slowestMs:F0} ms");
        foreach (var (k, n) in Outcomes.Where(kv => kv.Key.StartsWith(label + " |", StringComparison.Ordinal)).OrderByDescending(kv => kv.Value).Take(15))
            _out.WriteLine($"  {n,6} {k}");
        Assert.Empty(failures);
        Assert.True(slowestMs < 5000, $"one input took {slowestMs:F0} ms (hang?)");
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedPngsOnlyThrowImageDecodeException() =>
        FuzzDecode("png", new[] { ImageFiles.EncodePng(Gradient(16, 12)), ImageFiles.EncodePng(Gradient(1, 1)), PngClaiming(64, 64) }, 600);

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedJpegsOnlyThrowImageDecodeException() =>
        FuzzDecode("jpeg", new[] { Jpeg(Gradient(16, 16)), Jpeg(Gradient(5, 9)) }, 600);
}
