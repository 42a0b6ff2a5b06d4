using System.Diagnostics;
using System.Globalization;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>Result of training the prior.</summary>
/// <param name="Model">The trained network, holding the EMA weights.</param>
/// <param name="FinalLoss">Mean epsilon loss over the last 200 steps (raw weights).</param>
/// <param name="Seconds">Wall time of this call (a resumed run counts only its own part).</param>
/// <param name="Description">Architecture and optimiser, for TRAINING.md.</param>
/// <param name="CpuSecondsPerStep">Process CPU time per optimiser step of this call (all threads), a contention-independent cost.</param>
/// <param name="FirstStep">The first step this call ran (1, or the step after the resumed state).</param>
internal sealed record PriorReport(nn.Module Model, double FinalLoss, double Seconds, string Description, double CpuSecondsPerStep, int FirstStep = 1);

/// <summary>Settings of <see cref="DigitsPriorTrainer"/>.</summary>
internal sealed record PriorTrainingOptions
{
    /// <summary>Seed of the batches, timesteps and noise.</summary>
    public long Seed { get; init; } = 1236;

    /// <summary>Optimiser steps in total (a resumed run continues up to this step).</summary>
    public int Steps { get; init; } = 1200;

    /// <summary>Batch size.</summary>
    public int Batch { get; init; } = 32;

    /// <summary>
    /// Learning rate after the warm-up: constant (so the checkpoint at step N equals a run of N steps), or the peak
    /// of a cosine decay when <see cref="CosineDecay"/> is set.
    /// </summary>
    public double LearningRate { get; init; } = 1e-3;

    /// <summary>
    /// Decay the learning rate after the warm-up along half a cosine to 0 at <see cref="Steps"/>; the schedule then
    /// depends on <see cref="Steps"/>, so a resumed run must ask for the same number of steps.
    /// </summary>
    public bool CosineDecay { get; init; }

    /// <summary>
    /// Where the starting weights came from when they are not a fresh initialisation (e.g. a file and its SHA-256);
    /// recorded in the state file and checked on resume. The caller loads those weights into the model.
    /// </summary>
    public string? InitialWeights { get; init; }

    /// <summary>Steps of linear learning-rate warm-up.</summary>
    public int WarmupSteps { get; init; } = 100;

    /// <summary>Largest EMA decay; the decay ramps up as min(EmaDecay, (1 + step) / (10 + step)).</summary>
    public double EmaDecay { get; init; } = 0.995;

    /// <summary>
    /// File that holds the full training state (raw and EMA weights, Adam moments, random generator, step), written
    /// every <see cref="CheckpointEvery"/> steps and at the end; null: no state is kept.
    /// </summary>
    public string? StatePath { get; init; }

    /// <summary>Continue from <see cref="StatePath"/> when it exists (its settings must match these).</summary>
    public bool Resume { get; init; }

    /// <summary>
    /// What the network learns to predict: <see cref="PredictionType.Epsilon"/> (Ho et al.) or
    /// <see cref="PredictionType.VPrediction"/> (v = sqrt(abar) eps - sqrt(1 - abar) x0, Salimans and Ho 2022).
    /// </summary>
    public PredictionType Prediction { get; init; } = PredictionType.Epsilon;

    /// <summary>
    /// The training digits' source, as recorded in the state file and checked on resume (the caller passes the
    /// images; this only names them).
    /// </summary>
    public string Data { get; init; } = MnistData.PackageSpec;

    /// <summary>
    /// Min-SNR-gamma loss weighting (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy", ICCV
    /// 2023): each sample's MSE is weighted so that the loss equals min(SNR(t), gamma) times the x0 error, i.e. by
    /// min(SNR, gamma) / (SNR + 1) for v and min(SNR, gamma) / SNR for epsilon, with SNR = abar / (1 - abar). The
    /// paper's gamma is 5. 0 (the default): every sample weighs the same (plain MSE on the predicted target).
    /// </summary>
    public double MinSnrGamma { get; init; }

    /// <summary>Steps between checkpoints (state file and the <c>checkpoint</c> callback); 0: none.</summary>
    public int CheckpointEvery { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (Steps < 1) throw new ArgumentException($"Steps must be at least 1; got {Steps}.");
        if (Batch < 1) throw new ArgumentException($"Batch must be at least 1; got {Batch}.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentException($"LearningRate must be positive and finite; got {LearningRate}.");
        if (WarmupSteps < 1) throw new ArgumentException($"WarmupSteps must be at least 1; got {WarmupSteps}.");
        if (!(EmaDecay >= 0 && EmaDecay < 1)) throw new ArgumentException($"EmaDecay must be in [0, 1); got {EmaDecay}.");
        if (CheckpointEvery < 0) throw new ArgumentException($"CheckpointEvery must be 0 or more; got {CheckpointEvery}.");
        if (Resume && StatePath is null) throw new ArgumentException("Resume needs a StatePath.");
        if (Prediction is not (PredictionType.Epsilon or PredictionType.VPrediction)) throw new ArgumentException($"Prediction must be Epsilon or VPrediction; got {Prediction}.");
        if (!(MinSnrGamma >= 0) || double.IsInfinity(MinSnrGamma)) throw new ArgumentException($"MinSnrGamma must be 0 (off) or positive and finite; got {MinSnrGamma}.");
    }
}

/// <summary>
/// Trains the digits DDPM prior: linear betas 1e-4..0.02 over 1000 steps, uniform timesteps, MSE between the
/// network's output and the added noise (epsilon, Ho et al.) or v (Salimans and Ho); Adam with warm-up, gradient clipping and an EMA of
/// the weights (what is saved). Resumable: the state file holds everything the next step depends on, so a run
/// stopped at step N and resumed gives the same weights as one that never stopped (same machine and thread count).
/// </summary>
internal static class DigitsPriorTrainer
{
    private const int LossWindow = 200;

    // Settings that state files written before they were recorded always had.
    private static readonly HashSet<(string, string)> DefaultsOfOlderStates =
        [("lr_schedule", "constant"), ("init", "random"), ("data", MnistData.PackageSpec), ("loss_weight", "uniform")];

    /// <summary>Trains <paramref name="model"/> (a network eps(x_t, t) with t given as float [B]).</summary>
    /// <param name="model">The network to train; on return it holds the EMA weights.</param>
    /// <param name="data">Training digits.</param>
    /// <param name="options">Seed, steps, batch, optimiser, EMA, state file.</param>
    /// <param name="description">Architecture summary for the report (also recorded in the state file and checked on resume).</param>
    /// <param name="checkpoint">Called every <see cref="PriorTrainingOptions.CheckpointEvery"/> steps with the model holding
    /// EMA weights (restored afterwards); lets a long run be inspected early.</param>
    /// <param name="progress">Progress.</param>
    /// <param name="ct">Cancellation: the state of the last checkpoint stays on disk.</param>
    /// <exception cref="InvalidDataException">The state file to resume from was written with other settings or another network.</exception>
    public static PriorReport Train(
        nn.Module<Tensor, Tensor, Tensor> model, MnistData.Split data, PriorTrainingOptions options, string description,
        Action<nn.Module, int>? checkpoint = null, IProgress<TrainingProgress>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var sw = Stopwatch.StartNew();
        torch.manual_seed(options.Seed);
        using var gen = new Generator((ulong)options.Seed);
        var schedule = NoiseSchedule.Linear(1000);
        using var sqrtAb = torch.tensor(schedule.AlphaBars.Select(Math.Sqrt).ToArray()).to(ScalarType.Float32);
        using var sqrt1mAb = torch.tensor(schedule.AlphaBars.Select(a => Math.Sqrt(1 - a)).ToArray()).to(ScalarType.Float32);
        using var lossWeights = torch.tensor(schedule.AlphaBars.Select(a => MinSnrWeight(a, options)).ToArray()).to(ScalarType.Float32);
        model.train();
        var parameters = model.parameters().ToList();
        foreach (var p in parameters) p.requires_grad = true; // backbones come frozen for inference
        using var opt = optim.Adam(parameters, options.LearningRate);
        var ema = parameters.Select(p => p.detach().clone()).ToList();
        var recent = new Queue<double>();
        var meta = StateMetadata(options, description, parameters.Count);
        int done = 0;
        if (options.Resume && options.StatePath is { } resumeFrom && File.Exists(resumeFrom))
            done = LoadState(resumeFrom, meta, parameters, ema, opt, gen, recent);
        if (done >= options.Steps)
            throw new ArgumentException($"The state in '{options.StatePath}' is already at step {done}; ask for more than {done} steps to continue.");

        long n = data.TrainImages.shape[0];
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        int firstStep = done + 1;
        for (int step = firstStep; step <= options.Steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            using (var scope = torch.NewDisposeScope())
            {
                var idx = torch.randint(0, n, new long[] { options.Batch }, generator: gen);
                var x0 = data.TrainImages.index_select(0, idx);
                var t = torch.randint(0, schedule.TrainSteps, new long[] { options.Batch }, generator: gen);
                var noise = torch.randn(x0.shape, generator: gen);
                var xt = sqrtAb.index_select(0, t).view(-1, 1, 1, 1) * x0 + sqrt1mAb.index_select(0, t).view(-1, 1, 1, 1) * noise;
                foreach (var g in opt.ParamGroups) g.LearningRate = LearningRateAt(options, step);
                opt.zero_grad();
                var target = options.Prediction == PredictionType.VPrediction
                    ? sqrtAb.index_select(0, t).view(-1, 1, 1, 1) * noise - sqrt1mAb.index_select(0, t).view(-1, 1, 1, 1) * x0
                    : noise;
                var output = model.forward(xt, t.to(ScalarType.Float32));
                Tensor loss, mse;
                if (options.MinSnrGamma > 0)
                {
                    // Per-sample MSE, weighted for the gradient; the plain MSE is what is logged, so runs compare.
                    var perSample = (output - target).pow(2).mean(new long[] { 1, 2, 3 });
                    loss = (lossWeights.index_select(0, t) * perSample).mean();
                    mse = perSample.detach().mean();
                }
                else
                {
                    loss = mse = nn.functional.mse_loss(output, target); // kept as it was, so earlier runs reproduce bit for bit
                }
                loss.backward();
                nn.utils.clip_grad_norm_(parameters, 1.0);
                opt.step();
                double l = mse.item<float>();
                if (!double.IsFinite(l))
                    throw new InvalidOperationException($"The prior's loss became {l} at step {step}; the last checkpoint in '{options.StatePath}' is intact (lower --prior-lr?).");
                recent.Enqueue(l);
                if (recent.Count > LossWindow) recent.Dequeue();
                double decay = Math.Min(options.EmaDecay, (1.0 + step) / (10.0 + step));
                using (torch.no_grad())
                {
                    for (int i = 0; i < parameters.Count; i++) ema[i].mul_(decay).add_(parameters[i].detach(), alpha: 1 - decay);
                }
            }
            if (step % 10 == 0 || step == options.Steps) progress?.Report(new TrainingProgress("prior", step, options.Steps, recent.Average()));
            bool atCheckpoint = options.CheckpointEvery > 0 && step % options.CheckpointEvery == 0;
            if (options.StatePath is { } statePath && (atCheckpoint || step == options.Steps))
                SaveState(statePath, meta, step, parameters, ema, opt, gen, recent);
            if (checkpoint is not null && atCheckpoint && step < options.Steps)
            {
                Swap(parameters, ema);
                model.eval();
                checkpoint(model, step);
                Swap(parameters, ema);
                model.train();
            }
        }
        Swap(parameters, ema);
        foreach (var e in ema) e.Dispose();
        model.eval();
        int ran = options.Steps - firstStep + 1;
        double cpuPerStep = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds / ran;
        return new PriorReport(model, recent.Average(), sw.Elapsed.TotalSeconds, description, cpuPerStep, firstStep);
    }

    /// <summary>The learning rate of optimiser step <paramref name="step"/> (1-based): linear warm-up, then constant or cosine.</summary>
    public static double LearningRateAt(PriorTrainingOptions options, int step)
    {
        double warm = Math.Min(1.0, (double)step / options.WarmupSteps);
        if (!options.CosineDecay || step <= options.WarmupSteps) return options.LearningRate * warm;
        double progress = (double)(step - options.WarmupSteps) / Math.Max(1, options.Steps - options.WarmupSteps);
        return options.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, progress)));
    }

    /// <summary>The Min-SNR-gamma weight of a sample at noise level <paramref name="alphaBar"/> (1 when the weighting is off).</summary>
    public static double MinSnrWeight(double alphaBar, PriorTrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.MinSnrGamma <= 0) return 1;
        double snr = alphaBar / (1 - alphaBar);
        double clipped = Math.Min(snr, options.MinSnrGamma);
        return options.Prediction == PredictionType.VPrediction ? clipped / (snr + 1) : clipped / snr;
    }

    /// <summary>The step recorded in a training state file.</summary>
    public static int StateStep(string statePath) =>
        int.Parse(SafeTensors.ReadMetadata(statePath).GetValueOrDefault("step") ?? throw new InvalidDataException($"'{statePath}' is not a prior training state (no 'step')."), CultureInfo.InvariantCulture);

    private static Dictionary<string, string> StateMetadata(PriorTrainingOptions o, string description, int parameterCount) => new()
    {
        ["format"] = "zmagic-digits-prior-state-1",
        ["seed"] = o.Seed.ToString(CultureInfo.InvariantCulture),
        ["batch"] = o.Batch.ToString(CultureInfo.InvariantCulture),
        ["lr"] = o.LearningRate.ToString("R", CultureInfo.InvariantCulture),
        ["warmup"] = o.WarmupSteps.ToString(CultureInfo.InvariantCulture),
        ["ema_decay"] = o.EmaDecay.ToString("R", CultureInfo.InvariantCulture),
        ["network"] = description,
        ["prediction"] = o.Prediction == PredictionType.VPrediction ? "v" : "epsilon",
        ["parameters"] = parameterCount.ToString(CultureInfo.InvariantCulture),
        ["lr_schedule"] = o.CosineDecay ? "cosine to step " + o.Steps.ToString(CultureInfo.InvariantCulture) : "constant",
        ["init"] = o.InitialWeights ?? "random",
        ["data"] = o.Data,
        ["loss_weight"] = o.MinSnrGamma > 0 ? "min-snr " + o.MinSnrGamma.ToString("R", CultureInfo.InvariantCulture) : "uniform",
    };

    private static void SaveState(string path, Dictionary<string, string> meta, int step, List<TorchSharp.Modules.Parameter> parameters,
        List<Tensor> ema, optim.Optimizer opt, Generator gen, Queue<double> recent)
    {
        using var scope = torch.NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int i = 0; i < parameters.Count; i++)
        {
            tensors[$"param.{i:D4}"] = parameters[i].detach().contiguous();
            tensors[$"ema.{i:D4}"] = ema[i].detach().contiguous();
        }
        tensors["generator"] = gen.get_state();
        tensors["recent_loss"] = torch.tensor(recent.ToArray());
        // Adam's moments and step counts: written by TorchSharp next to the state, then both renamed into place.
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        string adamPath = path + ".adam";
        string adamTmp = adamPath + ".tmp";
        ((TorchSharp.Modules.OptimizerHelper)opt).save_state_dict(adamTmp);
        var m = new Dictionary<string, string>(meta) { ["step"] = step.ToString(CultureInfo.InvariantCulture) };
        DigitsWeights.SaveAtomically(path + ".next", tensors, m);
        // The pair is published adam first, then the weights; a crash in between leaves a newer Adam file beside the
        // older weights, which LoadState detects through the step written into both names.
        File.Move(adamTmp, adamPath + "." + step.ToString(CultureInfo.InvariantCulture), overwrite: true);
        File.Move(path + ".next", path, overwrite: true);
        foreach (var old in Directory.GetFiles(Path.GetDirectoryName(Path.GetFullPath(path))!, Path.GetFileName(adamPath) + ".*"))
            if (!old.EndsWith("." + step.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)) File.Delete(old);
    }

    private static int LoadState(string path, Dictionary<string, string> meta, List<TorchSharp.Modules.Parameter> parameters,
        List<Tensor> ema, optim.Optimizer opt, Generator gen, Queue<double> recent)
    {
        var saved = SafeTensors.ReadMetadata(path);
        foreach (var (key, value) in meta)
            if (saved.TryGetValue(key, out var s) ? s != value : !DefaultsOfOlderStates.Contains((key, value)))
                throw new InvalidDataException($"Cannot resume from '{path}': it was written with {key} = '{(s ?? "(missing)")}', this run has '{value}'. Use the same settings, or another output folder.");
        int step = StateStep(path);
        string adamPath = path + ".adam." + step.ToString(CultureInfo.InvariantCulture);
        if (!File.Exists(adamPath))
            throw new InvalidDataException($"Cannot resume from '{path}' (step {step}): its optimiser state '{adamPath}' is missing.");
        var tensors = SafeTensors.Load(path);
        try
        {
            using var _ = torch.no_grad();
            for (int i = 0; i < parameters.Count; i++)
            {
                var p = tensors[$"param.{i:D4}"];
                if (!p.shape.SequenceEqual(parameters[i].shape))
                    throw new InvalidDataException($"Cannot resume from '{path}': parameter {i} has shape [{string.Join(", ", p.shape)}], the network has [{string.Join(", ", parameters[i].shape)}].");
                parameters[i].copy_(p);
                ema[i].copy_(tensors[$"ema.{i:D4}"]);
            }
            gen.set_state(tensors["generator"]);
            foreach (var l in tensors["recent_loss"].data<double>()) recent.Enqueue(l);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        ((TorchSharp.Modules.OptimizerHelper)opt).load_state_dict(adamPath);
        return step;
    }

    private static void Swap(List<TorchSharp.Modules.Parameter> parameters, List<Tensor> ema)
    {
        using var _ = torch.no_grad();
        for (int i = 0; i < parameters.Count; i++)
        {
            using var tmp = parameters[i].detach().clone();
            parameters[i].copy_(ema[i]);
            ema[i].copy_(tmp);
        }
    }
}
