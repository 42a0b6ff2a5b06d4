using SkiaSharp;
using TorchSharp;
using ZMagic.Demo.Digits;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Cli.Tests;

public class GenerateTests
{
    /// <summary>A tiny random DDPM checkpoint of the digits preset, written in the real format (fp16 safetensors).</summary>
    private static string WriteTinyCheckpoint(string dir, bool wrongShape = false)
    {
        torch.manual_seed(3);
        using var net = new DdpmDenoiser(DigitsModels.PriorConfig);
        string path = Path.Combine(dir, wrongShape ? "wrong.safetensors" : "tiny.safetensors");
        if (!wrongShape)
        {
            DigitsWeights.SaveHalf(net.Module, path);
            return path;
        }
        // 48 input channels of conv_in: no digits prior has them (the width is a multiple of 32).
        var sd = net.Module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        sd["conv_in.weight"] = torch.zeros(48, 16, 3, 3);
        DigitsWeights.SaveAtomically(path, sd);
        return path;
    }

    [Fact]
    public void Generate_OnAWiderDigitsPrior_BuildsTheNetworkItsShapesDescribe()
    {
        var dir = CliRunner.TempDir();
        try
        {
            torch.manual_seed(4);
            string ckpt = Path.Combine(dir, "wide.safetensors");
            using (var net = new DdpmDenoiser(DigitsModels.PriorNetwork(64, 2)))
                DigitsWeights.SaveHalf(net.Module, ckpt, new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = "v" });
            var check = CliRunner.Run("models", "check", "--preset", "digits", ckpt);
            Assert.True(check.Code == 0, check.Err);
            string outDir = Path.Combine(dir, "out");
            var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--weights", ckpt,
                "--condition", "digit:class=3", "--steps", "2", "--samples", "1", "--out", outDir, "--quiet");
            Assert.True(code == 0, $"exit {code}: {err}");
            using var bmp = SKBitmap.Decode(Path.Combine(outDir, "sample_000.png"));
            Assert.Equal(32, bmp.Width);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Generate_OnATinyCheckpoint_WritesDecodablePngsAndTrace()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string ckpt = WriteTinyCheckpoint(dir);
            string outDir = Path.Combine(dir, "out");
            var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--weights", ckpt,
                "--condition", "digit:class=3,scale=0.5", "--condition", "thickness:ink=0.2,scale=0.5",
                "--method", "zmagic", "--combiner", "cagrad", "--steps", "3", "--samples", "2", "--batch", "2", "--out", outDir, "--quiet");
            Assert.True(code == 0, $"exit {code}: {err}");
            foreach (var f in new[] { "sample_000.png", "sample_001.png", "grid.png" })
            {
                using var bmp = SKBitmap.Decode(Path.Combine(outDir, f));
                Assert.NotNull(bmp);
            }
            using (var one = SKBitmap.Decode(Path.Combine(outDir, "sample_000.png"))) Assert.Equal(32, one.Width);
            var csv = File.ReadAllLines(Path.Combine(outDir, "trace.csv"));
            // One row per step and condition: both conditions appear on every step, at least the 3 requested steps.
            var rows = csv.Skip(1).Select(l => l.Split(',')).ToList();
            Assert.Equal(rows.Count(r => r[4] == "digit"), rows.Count(r => r[4] == "thickness"));
            Assert.True(rows.Count(r => r[4] == "digit") >= 3, string.Join("\n", csv));
            Assert.All(rows, r => Assert.Contains(r[4], new[] { "digit", "thickness" }));
            Assert.Contains("\"steps\"", File.ReadAllText(Path.Combine(outDir, "trace.json")));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>
    /// Sample i depends only on (seed, i): --batch 1 and --batch 3 write the same images with Z-Magic + CAGrad (per-item
    /// Gram matrices and step sizes). Compared as 8-bit PNGs: libtorch may round batch-3 convolutions differently in the
    /// last float bits, which can move a pixel by one level; whole-batch guidance moves them by far more.
    /// </summary>
    [Fact]
    public void Generate_Batch1AndBatch3_WriteTheSameImages()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string Run(int batch)
            {
                string outDir = Path.Combine(dir, $"b{batch}");
                var (code, _, err) = CliRunner.Run("generate", "--preset", "digits",
                    "--condition", "digit:class=3", "--condition", "thickness:ink=0.25",
                    "--method", "zmagic", "--combiner", "cagrad", "--steps", "8", "--seed", "5", "--samples", "3",
                    "--batch", batch.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", outDir, "--quiet");
                Assert.True(code == 0, $"exit {code}: {err}");
                return outDir;
            }
            string one = Run(1), three = Run(3);
            for (int i = 0; i < 3; i++)
            {
                string name = $"sample_{i:D3}.png";
                using var a = SKBitmap.Decode(Path.Combine(one, name));
                using var b = SKBitmap.Decode(Path.Combine(three, name));
                Assert.Equal(a.Width, b.Width);
                int maxDiff = 0;
                for (int y = 0; y < a.Height; y++)
                    for (int x = 0; x < a.Width; x++)
                    {
                        SKColor p = a.GetPixel(x, y), q = b.GetPixel(x, y);
                        maxDiff = Math.Max(maxDiff, Math.Max(Math.Abs(p.Red - q.Red), Math.Max(Math.Abs(p.Green - q.Green), Math.Abs(p.Blue - q.Blue))));
                    }
                Assert.True(maxDiff <= 1, $"{name}: --batch 1 and --batch 3 differ by up to {maxDiff} levels");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>
    /// --order auto writes order.csv: per sample its chosen order (one of the candidates: each condition first) and the
    /// trial energy of every candidate, the chosen one the lowest; the images are what --order given writes when the
    /// choice is the given order, and the mode is refused where the order cannot matter.
    /// </summary>
    [Fact]
    public void Generate_OrderAuto_WritesEachSamplesChoiceAndItsTrialEnergies()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string[] Args(string order, string outDir) => new[]
            {
                "generate", "--preset", "digits", "--condition", "digit:class=3", "--condition", "thickness:ink=0.25,scale=4",
                "--condition", "style:heldout=777", "--method", "zmagic", "--steps", "6", "--seed", "2", "--samples", "4",
                "--order", order, "--out", outDir, "--quiet",
            };
            string auto = Path.Combine(dir, "auto"), given = Path.Combine(dir, "given");
            var (code, stdout, err) = CliRunner.Run(Args("auto", auto).Append("--order-steps").Append("2").ToArray());
            Assert.True(code == 0, $"exit {code}: {err}");
            Assert.Contains("order.csv", stdout);
            var lines = File.ReadAllLines(Path.Combine(auto, "order.csv"));
            Assert.Equal("sample,order,energy:digit>thickness>style,energy:thickness>digit>style,energy:style>digit>thickness", lines[0]);
            Assert.Equal(5, lines.Length);
            var orders = lines[0].Split(',').Skip(2).Select(h => h["energy:".Length..]).ToArray();
            for (int i = 0; i < 4; i++)
            {
                var cells = lines[i + 1].Split(',');
                Assert.Equal(i.ToString(System.Globalization.CultureInfo.InvariantCulture), cells[0]);
                var energies = cells.Skip(2).Select(c => double.Parse(c, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
                Assert.All(energies, e => Assert.True(double.IsFinite(e) && e >= 0));
                Assert.Equal(orders[Array.IndexOf(energies, energies.Min())], cells[1]);
            }
            Assert.True(CliRunner.Run(Args("given", given)).Code == 0);
            Assert.False(File.Exists(Path.Combine(given, "order.csv")));
            for (int i = 0; i < 4; i++)
                if (lines[i + 1].Split(',')[1] == orders[0])
                    Assert.Equal(File.ReadAllBytes(Path.Combine(given, $"sample_{i:D3}.png")), File.ReadAllBytes(Path.Combine(auto, $"sample_{i:D3}.png")));

            var vanilla = CliRunner.Run("generate", "--preset", "digits", "-c", "digit:class=3", "--method", "vanilla", "--order", "auto", "--out", Path.Combine(dir, "v"));
            Assert.Equal(2, vanilla.Code);
            Assert.Contains("--order auto needs --method zmagic", vanilla.Err);
            var stray = CliRunner.Run("generate", "--preset", "digits", "-c", "digit:class=3", "--order-steps", "2", "--out", Path.Combine(dir, "s"));
            Assert.Equal(2, stray.Code);
            Assert.Contains("--order-steps only applies with --order auto", stray.Err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Generate_MissingWeightsFile_IsAnInputError_AndWritesNothing()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string outDir = Path.Combine(dir, "out");
            var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--weights", Path.Combine(dir, "nope.safetensors"),
                "--condition", "digit:class=1", "--out", outDir);
            Assert.Equal(ExitCodes.Input, code);
            Assert.Contains("nope.safetensors", err);
            Assert.False(Directory.Exists(outDir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Generate_CheckpointOfAnotherShape_IsAnInputErrorNamingTheKey()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string ckpt = WriteTinyCheckpoint(dir, wrongShape: true);
            string outDir = Path.Combine(dir, "out");
            var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--weights", ckpt, "--condition", "digit:class=1", "--out", outDir);
            Assert.Equal(ExitCodes.Input, code);
            Assert.Contains("conv_in.weight", err);
            Assert.False(Directory.Exists(outDir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Generate_UnreadableReferenceImage_IsAnInputError_AndNoPng()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string bad = Path.Combine(dir, "ref.png");
            File.WriteAllText(bad, "this is not a png");
            string outDir = Path.Combine(dir, "out");
            var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--condition", $"style:ref={bad}", "--steps", "2", "--samples", "1", "--out", outDir);
            Assert.Equal(ExitCodes.Input, code);
            Assert.Contains("ref.png", err);
            Assert.False(Directory.Exists(outDir) && Directory.GetFiles(outDir, "*.png").Length > 0);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("unknown preset", "--preset", "nope", "--condition", "digit:class=1")]
    [InlineData("contradictory weights", "--preset", "digits", "--weights", "a.safetensors", "--random-weights", "--condition", "digit:class=1")]
    [InlineData("unguided with conditions", "--preset", "digits", "--method", "unguided", "--condition", "digit:class=1")]
    [InlineData("guided without conditions", "--preset", "digits", "--method", "vanilla")]
    [InlineData("cagrad-c without cagrad", "--preset", "digits", "--condition", "digit:class=1", "--cagrad-c", "0.3")]
    [InlineData("unknown condition", "--preset", "digits", "--condition", "smile:amount=3")]
    [InlineData("unknown condition key", "--preset", "digits", "--condition", "digit:klass=3")]
    [InlineData("condition twice", "--preset", "digits", "--condition", "digit:class=3", "--condition", "digit:class=4")]
    [InlineData("bad class", "--preset", "digits", "--condition", "digit:class=11")]
    [InlineData("digits condition on faces", "--preset", "celebahq-ddpm", "--random-weights", "--condition", "digit:class=1")]
    [InlineData("no cuda", "--preset", "digits", "--condition", "digit:class=1", "--device", "cuda")]
    public void Generate_BadOptions_AreUsageErrors(string why, params string[] args)
    {
        var dir = CliRunner.TempDir();
        try
        {
            string outDir = Path.Combine(dir, "out");
            var (code, _, err) = CliRunner.Run(new[] { "generate" }.Concat(args).Concat(new[] { "--out", outDir, "--steps", "2" }).ToArray());
            Assert.True(code == ExitCodes.Usage, $"{why}: exit {code}, {err}");
            Assert.Contains("error:", err);
            Assert.False(Directory.Exists(outDir));
        }
        finally { Directory.Delete(dir, true); }
    }
}
