using System.Text;
using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.IO;
using ZMagic.Demo.Digits;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Cli.Tests;

/// <summary>
/// Issue 16: every hostile input on every CLI path gives a clean exit with the documented code, a message naming the
/// file or flag, nothing half-written, and (HostileRssTests) bounded memory.
/// </summary>
public sealed class HostileInputTests : TempFolderTests
{
    private readonly ITestOutputHelper _out;

    public HostileInputTests(ITestOutputHelper output) => _out = output;

    /// <summary>The folder holds nothing but the given entries (no staging folder, no temp file left).</summary>
    private void AssertRootHoldsOnly(params string[] names) =>
        Assert.Equal(names.Order(StringComparer.Ordinal), Directory.GetFileSystemEntries(Root).Select(Path.GetFileName).Order(StringComparer.Ordinal));

    private (int Code, string Out, string Err) StyleRef(string file) =>
        CliRunner.Run("generate", "--preset", "digits", "--condition", $"style:ref={file}", "--steps", "2", "--samples", "1",
            "--out", Path.Combine(Root, "out"), "--quiet");

    public static TheoryData<string, string> HostileImages() => new()
    {
        { "bomb-100000.png", "header declares a 100000x100000 image" },
        { "big-10001.png", "header declares a 10001x10001 image" },
        { "big-20000.png", "header declares a 20000x20000 image" },
        { "over-cli-limit-5000.png", "header declares a 5000x5000 image" },
        { "cut-after-ihdr.png", "the PNG data is truncated" },
        { "one.gif", "not a PNG or JPEG" },
        { "two.bmp", "not a PNG or JPEG" },
        { "empty.png", "is empty or not a regular file" },
    };

    private string HostileImage(string name) => name switch
    {
        "bomb-100000.png" => Write(name, HostileFiles.Png(100_000, 100_000)),
        "big-10001.png" => Write(name, HostileFiles.Png(10_001, 10_001)),
        "big-20000.png" => Write(name, HostileFiles.Png(20_000, 20_000)),
        "over-cli-limit-5000.png" => Write(name, HostileFiles.Png(5000, 5000)),
        "cut-after-ihdr.png" => Write(name, HostileFiles.Png(32, 32, cutAfterIhdr: true)),
        "one.gif" => Write(name, HostileFiles.Gif()),
        "two.bmp" => Write(name, HostileFiles.Bmp()),
        "empty.png" => Write(name, Array.Empty<byte>()),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(HostileImages))]
    public void HostileReferenceImagesAreInputErrorsNamingTheFile(string name, string expected)
    {
        string file = HostileImage(name);
        var (code, _, err) = StyleRef(file);
        Assert.True(code == ExitCodes.Input, $"exit {code}: {err}");
        Assert.Contains(expected, err);
        Assert.Contains(name, err);
        Assert.Contains("--condition style:ref", err);
        AssertRootHoldsOnly(name); // no output folder, no staging folder
    }

    [Fact]
    public async Task AReferenceThatIsAFifoOrAFolderIsRefusedWithoutBlocking()
    {
        string fifo = HostileFiles.MkFifo(Path.Combine(Root, "pipe.png"));
        var (code, _, err) = await WithinAsync(() => StyleRef(fifo), "a FIFO reference blocked the CLI");
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("pipe.png' is empty or not a regular file (a FIFO, device or socket)", err);
        (code, _, err) = StyleRef(Root);
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("is a folder", err);
        (code, _, err) = StyleRef("/dev/zero");
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("/dev/zero", err);
    }

    [Fact]
    public void AGoodReferenceStillWorksThroughTheLibraryReader()
    {
        string file = Write("ref.png", HostileFiles.RealPng(40, 24));
        using var t = CliImages.ReadReference(file, "--style", 1, 32);
        Assert.Equal(new long[] { 1, 1, 32, 32 }, t.shape);
        Assert.True(t.min().item<float>() >= -1 && t.max().item<float>() <= 1);
        using var rgb = CliImages.ReadReference(file, "--style", 3, 16);
        Assert.Equal(new long[] { 1, 3, 16, 16 }, rgb.shape);
    }

    [Fact]
    public async Task WeightsThatAreAFifoAreRefusedWithoutBlocking()
    {
        string fifo = HostileFiles.MkFifo(Path.Combine(Root, "pipe.pt"));
        var gen = await WithinAsync(() => CliRunner.Run("generate", "--preset", "digits", "--weights", fifo, "--condition", "digit:class=3", "--out", Path.Combine(Root, "out")),
            "a FIFO checkpoint blocked the CLI");
        Assert.Equal(ExitCodes.Input, gen.Code);
        Assert.Contains("--weights", gen.Err);
        Assert.Contains("pipe.pt", gen.Err);
        var check = await WithinAsync(() => CliRunner.Run("models", "check", "--preset", "digits", fifo), "models check blocked on a FIFO");
        Assert.Equal(ExitCodes.Input, check.Code);
        Assert.Contains("pipe.pt", check.Err);
    }

    private static async Task<T> WithinAsync<T>(Func<T> f, string what)
    {
        var task = Task.Run(f);
        var done = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(60)));
        Assert.True(done == task, what);
        return await task;
    }

    /// <summary>The digits prior's state dict as a torch.save zip.</summary>
    private static byte[] DigitsPt()
    {
        torch.manual_seed(5);
        using var net = new DdpmDenoiser(DigitsModels.PriorConfig);
        var sd = net.Module.state_dict();
        return PtWriter.Build(sd.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    [Fact]
    public void ACheckpointWithACorruptStorageByteIsRefused()
    {
        var bytes = DigitsPt();
        string good = Write("good.pt", bytes);
        Assert.Equal(ExitCodes.Ok, CliRunner.Run("models", "check", "--preset", "digits", good).Code);
        // Flip a byte in the middle of the largest stored record: the CRC no longer matches.
        using (var zip = new System.IO.Compression.ZipArchive(new MemoryStream(bytes)))
        {
            var big = zip.Entries.OrderByDescending(e => e.Length).First();
            using var s = big.Open();
            var data = new byte[big.Length];
            s.ReadExactly(data);
            int at = bytes.AsSpan().IndexOf(data.AsSpan(0, 64));
            bytes[at + data.Length / 2] ^= 0x40;
        }
        string bad = Write("bad-crc.pt", bytes);
        var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--weights", bad, "--condition", "digit:class=3", "--steps", "2",
            "--samples", "1", "--out", Path.Combine(Root, "out"), "--quiet");
        Assert.True(code == ExitCodes.Input, $"exit {code}: {err}");
        Assert.Contains("bad-crc.pt", err);
        Assert.Contains("CRC-32", err);
        AssertRootHoldsOnly("good.pt", "bad-crc.pt");
    }

    [Fact]
    public void ADeflatedCheckpointThatDoesNotFitIsRefusedFromItsPickle()
    {
        // 1 GiB of zeros under a foreign key, deflated to about 1 MB: refused from the pickle, never inflated.
        string path = Path.Combine(Root, "foreign.pt");
        File.WriteAllBytes(path, DeflatedZeros("evil.weight", 256L << 20));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (code, _, err) = CliRunner.Run("models", "check", "--preset", "digits", path);
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("unexpected key 'evil.weight'", err);
        Assert.True(sw.ElapsedMilliseconds < 10_000, $"{sw.ElapsedMilliseconds} ms");
    }

    /// <summary>A torch.save zip with one float32 tensor of <paramref name="n"/> zeros, deflated.</summary>
    internal static byte[] DeflatedZeros(string key, long n)
    {
        var p = new PickleBuilder().Proto(2).Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark()
            .Str(key).TensorRef("FloatStorage", "0", n, 0, new[] { n }, new[] { 1L }).SetItems().Stop();
        using var ms = new MemoryStream();
        using (var z = new System.IO.Compression.ZipArchive(ms, System.IO.Compression.ZipArchiveMode.Create, leaveOpen: true))
        {
            using (var s = z.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.NoCompression).Open()) s.Write(p.ToArray());
            using (var s = z.CreateEntry("archive/data/0", System.IO.Compression.CompressionLevel.Optimal).Open())
            {
                var zeros = new byte[1 << 20];
                for (long i = 0; i < n * 4; i += zeros.Length) s.Write(zeros);
            }
        }
        return ms.ToArray();
    }

    [Fact]
    public void NamesFromFilesAreEscapedBeforePrinting()
    {
        string path = Path.Combine(Root, "evil.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["\u001b]0;pwned\u0007\u001b[2J\u202eevil"] = torch.zeros(2) });
        var (code, _, err) = CliRunner.Run("models", "check", "--preset", "digits", path);
        Assert.Equal(ExitCodes.Input, code);
        Assert.DoesNotContain('\u001b', err);
        Assert.DoesNotContain('\u0007', err);
        Assert.DoesNotContain('\u202e', err);
        Assert.Contains(@"\x1b]0;pwned\x07\x1b[2J\u202eevil", err);
        Assert.Equal("a\\x1b[31mb\\x0ac\tok \\u200b", Terminal.Escape("a\u001b[31mb\nc\tok \u200b"));
        Assert.Equal("emoji \U0001F600 stays", Terminal.Escape("emoji \U0001F600 stays"));
    }

    [Theory]
    [InlineData("--steps", "1001", "[1, 1000]")]
    [InlineData("--steps", "10000", "[1, 1000]")]
    [InlineData("--batch", "5000", "[1, 4096]")]
    [InlineData("--samples", "0", "[1, 100000]")]
    public void OutOfRangeNumbersAreUsageErrorsBeforeLoading(string flag, string value, string limit)
    {
        var (code, _, err) = CliRunner.Run("generate", "--preset", "celebahq-ddpm", "--weights", Path.Combine(Root, "never-read.ckpt"),
            "--condition", "digit:class=3", flag, value, "--out", Path.Combine(Root, "out"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains(flag, err);
        Assert.Contains(limit, err);
        AssertRootHoldsOnly();
    }

    [Fact]
    public void ABatchThatCannotFitIsRefusedNamingTheFigure()
    {
        var (code, _, err) = CliRunner.Run("generate", "--preset", "celebahq-ddpm", "--weights", Path.Combine(Root, "never-read.ckpt"),
            "--method", "unguided", "--batch", "4096", "--samples", "4096", "--out", Path.Combine(Root, "out"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Matches(@"--batch 4096 on preset 'celebahq-ddpm' needs about [0-9.]+ (GiB|TiB)", err);
        Assert.Matches(@"Use --batch [0-9]+ or less", err);
    }

    [Fact]
    public void BenchAndTrainCheckTheirLimitsAndFoldersFirst()
    {
        var (code, _, err) = CliRunner.Run("bench", "--preset", "celebahq-ddpm", "--random-weights", "--method", "unguided", "--conditions", "0", "--batch", "4096");
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("needs about", err);
        (code, _, err) = CliRunner.Run("bench", "--preset", "digits", "--weights", "/dev/null");
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("/dev/null", err);
        (code, _, err) = CliRunner.Run("train", "digits", "--out", "/proc/nope", "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("--out '/proc/nope' cannot be written", err);
        Assert.False(Directory.Exists(Path.Combine(Root, "cache")), "train fetched data before checking --out");
        (code, _, err) = CliRunner.Run("train", "digits", "--evaluate-only", "--eval-eta", "1.5", "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("--eval-eta must be in [0, 1]; got 1.5", err);
        (code, _, err) = CliRunner.Run("train", "digits", "--only", "prior", "--prior-min-snr", "-5", "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("--prior-min-snr must be 0 (off) or a positive number; got -5", err);
        (code, _, err) = CliRunner.Run("train", "digits", "--evaluate-only", "--eval-sampler", "euler", "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("euler", err);
        (code, _, err) = CliRunner.Run("train", "digits", "--prior-init", Path.Combine(Root, "none.safetensors"), "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("none.safetensors' does not exist", err);
        // A prior that predicts epsilon cannot start a v run (the default): refused from its metadata alone.
        string epsilon = Path.Combine(Root, "eps.safetensors");
        byte[] header = System.Text.Encoding.UTF8.GetBytes("{\"__metadata__\":{\"prediction\":\"epsilon\"}}");
        File.WriteAllBytes(epsilon, [.. BitConverter.GetBytes((long)header.Length), .. header]);
        (code, _, err) = CliRunner.Run("train", "digits", "--prior-init", epsilon, "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("predicts epsilon, but this run trains v", err);
        // A prior of another size cannot start this run's network: refused from its shapes alone.
        string wide = Path.Combine(Root, "wide.safetensors");
        using (var net = new DdpmDenoiser(DigitsModels.PriorNetwork(64, 1)))
            DigitsWeights.SaveHalf(net.Module, wide, new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = "v" });
        (code, _, err) = CliRunner.Run("train", "digits", "--prior-init", wide, "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains($"holds a network with ch 64 and 1 res blocks, but this run trains ch {DigitsModels.PriorConfig.Ch} with {DigitsModels.PriorConfig.NumResBlocks}", err);
        (code, _, err) = CliRunner.Run("train", "digits", "--prior-ch", "48", "--cache", Path.Combine(Root, "cache"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("--prior-ch must be a multiple of 32", err);
        Assert.False(Directory.Exists(Path.Combine(Root, "cache")), "train fetched data before checking --prior-init");
    }

    [Fact]
    public void AStableDiffusionFolderWithABrokenConfigIsAnInputError()
    {
        string model = Path.Combine(Root, "model");
        Directory.CreateDirectory(Path.Combine(model, "unet"));
        File.WriteAllText(Path.Combine(model, "model_index.json"), "{}");
        File.WriteAllText(Path.Combine(model, "unet", "config.json"), "{\"sample_size\": \u001b[2J");
        var (code, _, err) = CliRunner.Run("generate", "--preset", "sd15", "--model", model, "--prompt", "a cat", "--out", Path.Combine(Root, "out"));
        Assert.True(code == ExitCodes.Input, $"exit {code}: {err}");
        Assert.Contains("config.json", err);
        AssertRootHoldsOnly("model");
    }

    [Fact]
    public void MemoryEstimatesMatchWhatWasMeasured()
    {
        // docs/performance.md: one exact Z-Magic step of the CelebA-HQ DDPM peaked at 7-8 GB at batch 1; the guided SD 512 step
        // did not fit in 24 GB; the digits prior is tiny.
        double celeba = MemoryBudget.DdpmBytes(DdpmUNetConfig.CelebAHq, 1);
        Assert.InRange(celeba, 5e9, 9e9);
        Assert.Equal(8 * (celeba - 4.0 * DdpmUNetConfig.CelebAHq.CountParameters()), MemoryBudget.DdpmBytes(DdpmUNetConfig.CelebAHq, 8) - 4.0 * DdpmUNetConfig.CelebAHq.CountParameters(), 3);
        Assert.True(MemoryBudget.DdpmBytes(DigitsModels.PriorConfig, 4096) < 8e9);
        long sdWeights = 4_300_000_000;
        Assert.True(MemoryBudget.StableDiffusionBytes(512, guided: true, sdWeights) > 24e9);
        Assert.True(MemoryBudget.StableDiffusionBytes(512, guided: false, sdWeights) < 16e9);
        Assert.True(MemoryBudget.StableDiffusionBytes(4096, guided: false, sdWeights) > 1e12);
    }

    [Theory]
    [InlineData("digit:class=3.5", "not an integer")]
    [InlineData("digit:class=1e0", "not an integer")]
    [InlineData("digit:class=10", "[0, 9]")]
    [InlineData("style:heldout=0.5", "not an integer")]
    public void NonIntegerClassesAreUsageErrors(string spec, string expected)
    {
        var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--condition", spec, "--out", Path.Combine(Root, "out"));
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains(expected, err);
    }

    [Theory]
    [InlineData("")]
    [InlineData("/proc/nope")]
    [InlineData("/proc/self/nope/deeper")]
    public void UnwritableOutputFoldersAreUsageErrorsBeforeSampling(string outDir)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "1000", "--out", outDir, "--quiet");
        Assert.True(code == ExitCodes.Usage, $"exit {code}: {err}");
        Assert.Contains("--out", err);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), "the folder was checked only after sampling 1000 steps");
    }

    [Fact]
    public void AnOutputFolderWithForeignFilesIsNeverReplaced()
    {
        string outDir = Path.Combine(Root, "photos");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "holiday.jpg"), "mine");
        var (code, _, err) = CliRunner.Run("generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "2", "--samples", "1", "--out", outDir, "--quiet");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("holds files that zmagic did not write", err);
        Assert.Equal(new[] { "holiday.jpg" }, Directory.GetFiles(outDir).Select(Path.GetFileName));
        AssertRootHoldsOnly("photos");
    }

    [Fact]
    public void ARunReplacesThePreviousRunAsAWhole()
    {
        string outDir = Path.Combine(Root, "out");
        var first = CliRunner.Run("generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "2", "--samples", "3", "--batch", "3", "--out", outDir, "--quiet");
        Assert.True(first.Code == 0, first.Err);
        Assert.True(File.Exists(Path.Combine(outDir, "sample_002.png")));
        var second = CliRunner.Run("generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "2", "--samples", "1", "--out", outDir, "--quiet");
        Assert.True(second.Code == 0, second.Err);
        // No sample_001/002 from the first run mixed into the second.
        Assert.Equal(new[] { ".zmagic-run", "grid.png", "sample_000.png", "trace.csv", "trace.json" },
            Directory.GetFiles(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        AssertRootHoldsOnly("out");
    }

    /// <summary>A stderr writer that cancels the run when the write phase starts (as Ctrl+C would, through Program's handler).</summary>
    private sealed class CancelOnWrite(CancellationTokenSource cts) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.StartsWith("Writing ", StringComparison.Ordinal) == true) cts.Cancel();
        }
    }

    [Fact]
    public void CancellingDuringTheWritePhaseExits130AndLeavesThePreviousRun()
    {
        string outDir = Path.Combine(Root, "out");
        var first = CliRunner.Run("generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "2", "--samples", "2", "--batch", "2", "--out", outDir, "--quiet");
        Assert.True(first.Code == 0, first.Err);
        var before = Directory.GetFiles(outDir).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

        using var cts = new CancellationTokenSource();
        var err = new CancelOnWrite(cts);
        int code = App.Run(new[] { "generate", "--preset", "digits", "--condition", "digit:class=7", "--seed", "9", "--steps", "2", "--samples", "4", "--out", outDir },
            new StringWriter(), err, cts.Token);
        Assert.True(code == ExitCodes.Cancelled, $"exit {code}: {err}");
        Assert.Contains("Cancelled", err.ToString());
        var after = Directory.GetFiles(outDir).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (k, v) in before) Assert.Equal(v, after[k]);
        AssertRootHoldsOnly("out");
    }

    [Fact]
    public void LibtorchWarningsAreSilencedOnce()
    {
        Assert.True(NativeWarnings.Silence(), "FLAGS_caffe2_log_level not found in libc10");
        Assert.Equal(2, NativeWarnings.LogLevel());
    }
}
