using System.Diagnostics;
using System.Text;
using TorchSharp;
using ZMagic.Demo.Digits;
using ZMagic.Models.Ddpm;
using Xunit.Abstractions;
using ZMagic.TestSupport;

namespace ZMagic.Cli.Tests;

/// <summary>
/// Issue 16, measured on the real process: every rejected input exits cleanly with its documented code while the
/// peak resident memory (VmHWM, sampled every 20 ms) stays under 2 GB; Ctrl+C (SIGINT) exits 130 with nothing written.
/// </summary>
public sealed class HostileProcessTests : TempFolderTests
{
    private const long RssBound = 2L << 30;
    private readonly ITestOutputHelper _out;

    public HostileProcessTests(ITestOutputHelper output) => _out = output;

    private void Expect(string label, int code, params string[] args)
    {
        var r = CliProcess.Run(args, TimeSpan.FromMinutes(3));
        _out.WriteLine($"{label}: exit {r.Code}, peak RSS {r.PeakRssBytes / (1 << 20)} MiB, {r.Elapsed.TotalSeconds:F1} s; {r.Err.Trim()}");
        Assert.True(r.Code == code, $"{label}: exit {r.Code}, expected {code}: {r.Err}");
        // The numerics check may put one "note:" line first, on a CPU whose kernels it had to route around.
        var said = r.Err.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith("note: ", StringComparison.Ordinal)).ToList();
        Assert.True(said.Count > 0 && said[0].StartsWith("error: ", StringComparison.Ordinal), $"{label}: stderr does not start with error: {r.Err}");
        Assert.True(r.PeakRssBytes > 0, "no RSS sample was taken");
        Assert.True(r.PeakRssBytes < RssBound, $"{label}: peak RSS {r.PeakRssBytes >> 20} MiB");
        Assert.False(Directory.Exists(Path.Combine(Root, "out")), "an output folder was written");
        Assert.Empty(Directory.GetDirectories(Root, ".out.*"));
    }

    [Fact]
    public void RejectedInputsExitCleanlyUnderTwoGigabytes()
    {
        string outDir = Path.Combine(Root, "out");
        Expect("style:ref 100000x100000 PNG (467-byte bomb)", ExitCodes.Input, "generate", "--preset", "digits",
            "--condition", "style:ref=" + Write("bomb.png", HostileFiles.Png(100_000, 100_000)), "--out", outDir);
        Expect("style:ref 20000x20000 PNG", ExitCodes.Input, "generate", "--preset", "digits",
            "--condition", "style:ref=" + Write("big.png", HostileFiles.Png(20_000, 20_000)), "--out", outDir);
        Expect("style:ref 10001x10001 PNG", ExitCodes.Input, "generate", "--preset", "digits",
            "--condition", "style:ref=" + Write("big2.png", HostileFiles.Png(10_001, 10_001)), "--out", outDir);
        Expect("--weights: 1 GiB of deflated zeros under a foreign key", ExitCodes.Input, "generate", "--preset", "digits",
            "--weights", Write("foreign.pt", HostileInputTests.DeflatedZeros("evil.weight", 256L << 20)), "--condition", "digit:class=3", "--out", outDir);
        Expect("--weights: the prior's keys over a 1 GiB deflated storage", ExitCodes.Input, "models", "check", "--preset", "digits",
            Write("bomb.pt", HostileInputTests.DeflatedZeros("conv_in.weight", 256L << 20)));
        Expect("--steps 5000", ExitCodes.Usage, "generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "5000", "--out", outDir);
        Expect("--batch 4096 on celeba", ExitCodes.Usage, "generate", "--preset", "celebahq-ddpm", "--weights", Write("x.ckpt", new byte[] { 1 }),
            "--method", "unguided", "--batch", "4096", "--samples", "4096", "--out", outDir);
    }

    /// <summary>
    /// ZMAGIC_DIGITS_ASSETS replaces the embedded prior: a folder holding a wider prior is sampled with the network its
    /// shapes describe (the embedded network would refuse those weights); a junk file there, or a file of a network no
    /// digits prior has, is an input error that names the file. A child process, so the variable cannot leak into tests
    /// running beside this one.
    /// </summary>
    [Fact]
    public void TheDigitsAssetsOverrideReplacesTheEmbeddedPrior()
    {
        string assets = Directory.CreateDirectory(Path.Combine(Root, "assets")).FullName;
        string prior = Path.Combine(assets, DigitsWeights.PriorResource);
        torch.manual_seed(5);
        using (var net = new DdpmDenoiser(DigitsModels.PriorNetwork(64, 2)))
            DigitsWeights.SaveHalf(net.Module, prior, new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = "v" });
        var env = new Dictionary<string, string> { [DigitsWeights.OverrideVariable] = assets };
        string[] args = ["generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "2", "--samples", "1", "--quiet", "--out"];
        var wide = CliProcess.Run([.. args, Path.Combine(Root, "wide")], TimeSpan.FromMinutes(2), env);
        _out.WriteLine(wide.Err);
        Assert.True(wide.Code == 0, $"exit {wide.Code}: {wide.Err}");
        Assert.True(File.Exists(Path.Combine(Root, "wide", "sample_000.png")));

        File.WriteAllText(prior, "not a checkpoint");
        var junk = CliProcess.Run([.. args, Path.Combine(Root, "junk")], TimeSpan.FromMinutes(2), env);
        _out.WriteLine(junk.Err);
        Assert.Equal(ExitCodes.Input, junk.Code);
        Assert.Contains("replacement of the 'digits' preset's embedded weights is not a readable checkpoint", junk.Err);
        Assert.Contains(prior, junk.Err);
        Assert.False(Directory.Exists(Path.Combine(Root, "junk")) && Directory.EnumerateFiles(Path.Combine(Root, "junk")).Any());

        // A readable file of another network: the key error names the replacing file, not the embedded resource.
        using (var net = new DdpmDenoiser(DigitsModels.PriorConfig with { ChMult = [1, 2, 2, 2] })) DigitsWeights.SaveHalf(net.Module, prior);
        var other = CliProcess.Run([.. args, Path.Combine(Root, "other")], TimeSpan.FromMinutes(2), env);
        _out.WriteLine(other.Err);
        Assert.Equal(ExitCodes.Input, other.Code);
        Assert.Contains(prior, other.Err);
        Assert.Contains("down.3.", other.Err);
        Assert.DoesNotContain("embedded:", other.Err);
    }

    [Fact]
    public void AMemoryBudgetSmallerThanOneItemIsAUsageError()
    {
        var r = CliProcess.Run(new[] { "generate", "--preset", "celebahq-ddpm", "--weights", Write("x.ckpt", new byte[] { 1 }), "--condition", "digit:class=3",
            "--out", Path.Combine(Root, "out") }, TimeSpan.FromMinutes(2), new Dictionary<string, string> { ["ZMAGIC_MEMORY_LIMIT_MB"] = "4000" });
        _out.WriteLine(r.Err);
        Assert.Equal(ExitCodes.Usage, r.Code);
        Assert.Matches(@"--batch 1 on preset 'celebahq-ddpm' needs about [0-9.]+ GiB for a guided step; this machine has 3.9 GiB \(80 % usable\). Even one image does not fit", r.Err);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void RejectedStableDiffusionRequestsExitCleanlyUnderTwoGigabytes()
    {
        string model = TinySdFolder.Create(Path.Combine(Root, "model"));
        string outDir = Path.Combine(Root, "out");
        Expect("sd15 --size 4096", ExitCodes.Usage, "generate", "--preset", "sd15", "--model", model, "--prompt", "a cat", "--size", "4096", "--out", outDir);
        Expect("sd15 --size 2048", ExitCodes.Usage, "generate", "--preset", "sd15", "--model", model, "--prompt", "a cat", "--size", "2048", "--out", outDir);
        Expect("sd15 --style 100000x100000 PNG", ExitCodes.Input, "generate", "--preset", "sd15", "--model", model, "--prompt", "a cat",
            "--style", Write("bomb.png", HostileFiles.Png(100_000, 100_000)), "--vgg", Write("vgg.pth", new byte[] { 1 }), "--size", "32", "--out", outDir);
        Expect("sd15 --content GIF", ExitCodes.Input, "generate", "--preset", "sd15", "--model", model, "--prompt", "a cat",
            "--content", Write("c.gif", HostileFiles.Gif()), "--vgg", Write("vgg2.pth", new byte[] { 1 }), "--size", "32", "--out", outDir);
        Expect("sd15 over-long prompt", ExitCodes.Usage, "generate", "--preset", "sd15", "--model", model,
            "--prompt", string.Join(" ", Enumerable.Repeat("cat", 80)), "--size", "32", "--out", outDir);
        Expect("sd15 --out /proc/nope", ExitCodes.Usage, "generate", "--preset", "sd15", "--model", model, "--prompt", "a cat", "--size", "32", "--out", "/proc/nope");
    }

    [Fact]
    public async Task SigintWhileSamplingExits130AndWritesNothing()
    {
        string outDir = Path.Combine(Root, "out");
        using var p = CliProcess.Start(new[] { "generate", "--preset", "digits", "--condition", "digit:class=3", "--steps", "1000", "--samples", "16", "--out", outDir },
            defaultSigint: true);
        var err = new StringBuilder();
        var reader = Task.Run(async () =>
        {
            var buf = new char[256];
            int n;
            while ((n = await p.StandardError.ReadAsync(buf)) > 0) lock (err) err.Append(buf, 0, n);
        });
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(90))
        {
            lock (err) if (err.ToString().Contains('#') || err.ToString().Contains("] ", StringComparison.Ordinal)) break;
            await Task.Delay(50);
        }
        Assert.False(p.HasExited, "the run ended before it could be interrupted: " + err);
        using (var kill = Process.Start("kill", $"-INT {p.Id}")) await kill.WaitForExitAsync();
        var exited = p.WaitForExitAsync();
        if (await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(60))) != exited)
        {
            string ignored = File.ReadLines($"/proc/{p.Id}/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal)) ?? "";
            p.Kill(entireProcessTree: true);
            string seen;
            lock (err) seen = err.ToString();
            Assert.Fail($"SIGINT did not stop the run within 60 s ({ignored.Trim()}); its stderr:\n{seen}");
        }
        await reader;
        _out.WriteLine(err.ToString());
        Assert.Equal(ExitCodes.Cancelled, p.ExitCode);
        Assert.Contains("Cancelled", err.ToString());
        Assert.False(Directory.Exists(outDir));
        Assert.Empty(Directory.GetFileSystemEntries(Root));
    }
}
