using System.Collections.Concurrent;
using System.Diagnostics;
using CsCheck;
using SkiaSharp;
using Xunit.Abstractions;
using ZMagic.Guidance.Imaging;
using ZMagic.TestSupport;

namespace ZMagic.Cli.Tests;

/// <summary>
/// The CLI's image path (issue 16): mutated PNG and JPEG files read as references through <see cref="CliImages.ReadReference"/>
/// either load or give <see cref="InputException"/> (exit 3), in bounded time.
/// </summary>
public sealed class CliImageFuzzTests(ITestOutputHelper output)
{
    private static byte[] Jpeg(int w, int h)
    {
        using var bmp = new SKBitmap(new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Opaque));
        for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) bmp.SetPixel(x, y, new SKColor((byte)(x * 9), (byte)(y * 5), (byte)(x ^ y)));
        using var data = bmp.Encode(SKEncodedImageFormat.Jpeg, 85);
        return data.ToArray();
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedReferenceFilesOnlyGiveInputErrors()
    {
        var seeds = new[] { HostileFiles.RealPng(12, 9), HostileFiles.Png(64, 64), Jpeg(16, 16) };
        var dir = CliRunner.TempDir();
        var failures = new ConcurrentBag<string>();
        var outcomes = new ConcurrentDictionary<string, int>();
        double slowestMs = 0;
        long count = FuzzSupport.Iterations(300);
        try
        {
            string path = Path.Combine(dir, "ref.png");
            Gen.Select(Gen.Int[0, seeds.Length - 1], FuzzSupport.Mutations(8)).Sample((seed, ops) =>
            {
                File.WriteAllBytes(path, FuzzSupport.Apply(seeds[seed], ops));
                var sw = Stopwatch.StartNew();
                string outcome;
                try
                {
                    using var t = CliImages.ReadReference(path, "--style", seed == 2 ? 3 : 1, 32);
                    outcome = "loaded";
                }
                catch (InputException e)
                {
                    outcome = System.Text.RegularExpressions.Regex.Replace(e.Message.Replace(path, "F", StringComparison.Ordinal), "[0-9]+", "N");
                }
                catch (Exception e)
                {
                    failures.Add($"seed {seed} ops {string.Join(" ", ops)}: {e.GetType().Name}: {e.Message}");
                    outcome = "FAILURE " + e.GetType().Name;
                }
                slowestMs = Math.Max(slowestMs, sw.Elapsed.TotalMilliseconds);
                outcomes.AddOrUpdate(outcome[..Math.Min(outcome.Length, 90)], 1, (_, n) => n + 1);
            }, iter: count, threads: 1);
        }
        finally { Directory.Delete(dir, true); }
        output.WriteLine($"{count} mutated reference files, {failures.Count} failures, slowest {slowestMs:F0} ms");
        foreach (var (k, n) in outcomes.OrderByDescending(kv => kv.Value).Take(15)) output.WriteLine($"  {n,6} {k}");
        Assert.Empty(failures);
        Assert.True(slowestMs < 5000, $"one input took {slowestMs:F0} ms");
    }
}
