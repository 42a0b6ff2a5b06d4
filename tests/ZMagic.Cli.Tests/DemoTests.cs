using System.Text.Json;
using SkiaSharp;

namespace ZMagic.Cli.Tests;

public class DemoTests
{
    [Fact]
    [Trait("Category", "Slow")]
    public void Demo_RunsEndToEnd_WritesReportAndDecodablePictures()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string outDir = Path.Combine(dir, "demo");
            var (code, stdout, stderr) = CliRunner.Run("demo", "--out", outDir, "--samples", "2", "--steps", "3", "--seed", "5", "--sweep", "0.5,1", "--time-steps", "4", "--quiet");
            Assert.True(code == 0, $"exit {code}: {stderr}");
            Assert.Contains("report.json", stdout);
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
            foreach (var key in new[] { "unguided", "vanilla", "vanilla_cagrad", "zmagic", "zmagic_cagrad" })
            {
                var m = doc.RootElement.GetProperty(key);
                foreach (var field in new[] { "joint_success", "seconds_per_image", "class_success", "thickness_success", "style_success" })
                {
                    double v = m.GetProperty(field).GetDouble();
                    Assert.True(double.IsFinite(v), $"{key}.{field} = {v}");
                    if (field != "seconds_per_image") Assert.InRange(v, 0, 1);
                    else Assert.True(v > 0);
                }
                Assert.Equal(2, m.GetProperty("samples").GetInt32());
                using var bmp = SKBitmap.Decode(Path.Combine(outDir, key + ".png"));
                Assert.NotNull(bmp);
                Assert.True(bmp.Width > 32 && bmp.Height > 32);
            }
            // Z-Magic spends more passes per step than Vanilla (sequential conditioning), unguided no backward.
            Assert.True(doc.RootElement.GetProperty("zmagic").GetProperty("forwards_per_step").GetDouble() > doc.RootElement.GetProperty("vanilla").GetProperty("forwards_per_step").GetDouble());
            Assert.Equal(0, doc.RootElement.GetProperty("unguided").GetProperty("backwards_per_step").GetDouble());
            // The sweep: every guided method at every scale, with intervals around each rate; the time curve: each
            // method's best scale at the sweep's steps and at the extra step count.
            var sweep = doc.RootElement.GetProperty("sweep").EnumerateArray().ToList();
            Assert.Equal(8, sweep.Count);
            foreach (var p in sweep)
            {
                double rate = p.GetProperty("joint_success").GetDouble();
                var ci = p.GetProperty("joint_success_ci95").EnumerateArray().Select(e => e.GetDouble()).ToArray();
                Assert.True(ci[0] <= rate && rate <= ci[1] && ci[0] >= 0 && ci[1] <= 1, $"interval [{ci[0]}, {ci[1]}] around {rate}");
                foreach (var c in new[] { "digit", "thickness", "style" })
                    Assert.True(double.IsFinite(p.GetProperty("final_energy").GetProperty(c).GetProperty("mean").GetDouble()));
            }
            var time = doc.RootElement.GetProperty("time_curve").EnumerateArray().ToList();
            Assert.Equal(8, time.Count);
            Assert.Equal(new[] { 3, 4 }, time.Select(p => p.GetProperty("steps").GetInt32()).Distinct().Order().ToArray());
            // At 4 steps each method keeps its best 3-step scale or that scale x 3/4 (the same total guidance).
            foreach (var m in time.GroupBy(p => p.GetProperty("method").GetString()))
            {
                double best = m.Single(p => p.GetProperty("steps").GetInt32() == 3).GetProperty("scale").GetDouble();
                double at4 = m.Single(p => p.GetProperty("steps").GetInt32() == 4).GetProperty("scale").GetDouble();
                Assert.True(Math.Abs(at4 - best) < 1e-12 || Math.Abs(at4 - best * 3 / 4) < 1e-12, $"{m.Key}: scale {at4} at 4 steps, best {best}");
            }
            // The order check: each Z-Magic method once more at its best scale with --order auto; every sample chose one
            // of the three conditions as the first.
            var order = doc.RootElement.GetProperty("order_check").EnumerateArray().ToList();
            Assert.Equal(new[] { "zmagic", "zmagic_cagrad" }, order.Select(p => p.GetProperty("method").GetString()).ToArray());
            foreach (var p in order)
            {
                Assert.Equal("auto", p.GetProperty("order").GetString());
                Assert.Equal(2, p.GetProperty("chosen_first").EnumerateObject().Sum(c => c.Value.GetInt32()));
                Assert.Equal(new[] { "digit", "style", "thickness" }, p.GetProperty("chosen_first").EnumerateObject().Select(c => c.Name).Order().ToArray());
            }
            Assert.Contains("## Condition order", File.ReadAllText(Path.Combine(outDir, "report.md")));
            foreach (var f in new[] { "energies.png", "cosines.png", "reference.png", "sweep.png", "tradeoff.png", "time.png", "cosine_histogram.png" })
            {
                using var bmp = SKBitmap.Decode(Path.Combine(outDir, f));
                Assert.NotNull(bmp);
            }
            Assert.Contains("joint success", File.ReadAllText(Path.Combine(outDir, "report.md")));
            Assert.Empty(Directory.GetFiles(outDir, "*.tmp", SearchOption.AllDirectories));
            Assert.Empty(Directory.GetDirectories(dir, ".*staging*"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Demo_SamplerOption_ChangesTheStepAndIsReported()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string[] Run(string sampler)
            {
                string outDir = Path.Combine(dir, sampler);
                var (code, _, stderr) = CliRunner.Run("demo", "--out", outDir, "--samples", "2", "--steps", "3", "--sweep", "1", "--time-steps", "none",
                    "--methods", "unguided", "--sampler", sampler, "--quiet");
                Assert.True(code == 0, $"exit {code}: {stderr}");
                using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
                Assert.Equal(sampler, doc.RootElement.GetProperty("request").GetProperty("sampler").GetString());
                return [File.ReadAllText(Path.Combine(outDir, "report.md")), Convert.ToBase64String(File.ReadAllBytes(Path.Combine(outDir, "unguided.png")))];
            }
            var eta = Run("freedom-eta");
            var posterior = Run("ddpm-posterior");
            Assert.Contains("FreeDoM eta step (eta 0.5)", eta[0]);
            Assert.Contains("DDPM posterior (ancestral) step", posterior[0]);
            // Same seeds and initial noise, another transition: other pictures.
            Assert.NotEqual(eta[1], posterior[1]);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Demo_CancelledBeforeStart_LeavesNothing()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string outDir = Path.Combine(dir, "demo");
            using var cts = new CancellationTokenSource();
            cts.Cancel();
            var o = new StringWriter();
            var e = new StringWriter();
            int code = App.Run(new[] { "demo", "--out", outDir, "--samples", "1", "--steps", "2", "--quiet" }, o, e, cts.Token);
            Assert.Equal(ExitCodes.Cancelled, code);
            Assert.False(Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any());
            Assert.Empty(Directory.GetDirectories(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("--samples", "0")]
    [InlineData("--methods", "vanilla,foo")]
    [InlineData("--class", "12")]
    [InlineData("--bogus", "1")]
    [InlineData("--sweep", "0,1")]
    [InlineData("--sweep", "1,1")]
    [InlineData("--sweep", "a")]
    [InlineData("--time-steps", "1")]
    [InlineData("--time-steps", "2.5")]
    [InlineData("--sampler", "euler")]
    public void Demo_BadOptions_AreUsageErrors(string option, string value)
    {
        var (code, _, err) = CliRunner.Run("demo", option, value);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("error:", err);
    }
}
