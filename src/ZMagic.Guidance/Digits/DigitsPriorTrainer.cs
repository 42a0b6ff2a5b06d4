using System.Diagnostics;
using TorchSharp;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Digits;

/// <summary>Result of training the prior.</summary>
/// <param name="Model">The trained network, holding the EMA weights.</param>
/// <param name="FinalLoss">Mean epsilon loss over the last 200 steps (raw weights).</param>
/// <param name="Seconds">Wall time.</param>
/// <param name="Description">Architecture and optimiser, for TRAINING.md.</param>
/// <param name="CpuSecondsPerStep">Process CPU time per optimiser step (all threads), a contention-independent cost.</param>
public sealed record PriorReport(nn.Module Model, double FinalLoss, double Seconds, string Description, double CpuSecondsPerStep);

/// <summary>
/// Trains the digits DDPM prior with the standard epsilon loss (Ho et al.): linear betas 1e-4..0.02 over 1000 steps,
/// uniform timesteps, MSE between the added and predicted noise; Adam with warm-up, gradient clipping and an EMA of
/// the weights (what is saved).
/// </summary>
public static class DigitsPriorTrainer
{
    /// <summary>Trains <paramref name="model"/> (a network eps(x_t, t) with t given as float [B]).</summary>
    /// <param name="model">The network to train; on return it holds the EMA weights.</param>
    /// <param name="data">Training digits.</param>
    /// <param name="seed">Seed of the batches, timesteps and noise.</param>
    /// <param name="steps">Optimiser steps.</param>
    /// <param name="batch">Batch size.</param>
    /// <param name="lr">Peak learning rate.</param>
    /// <param name="description">Architecture summary for the report.</param>
    /// <param name="checkpoint">Called every <paramref name="checkpointEvery"/> steps with the model holding EMA weights
    /// (restored afterwards); lets a long run be inspected early.</param>
    /// <param name="checkpointEvery">Steps between checkpoints (0: none).</param>
    /// <param name="progress">Progress.</param>
    /// <param name="ct">Cancellation.</param>
    public static PriorReport Train(
        nn.Module<Tensor, Tensor, Tensor> model, MnistData.Split data, long seed, int steps, int batch, double lr, string description,
        Action<nn.Module, int>? checkpoint = null, int checkpointEvery = 0,
        IProgress<TrainingProgress>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        var sw = Stopwatch.StartNew();
        torch.manual_seed(seed);
        using var gen = new Generator((ulong)seed);
        var schedule = NoiseSchedule.Linear(1000);
        using var sqrtAb = torch.tensor(schedule.AlphaBars.Select(Math.Sqrt).ToArray()).to(ScalarType.Float32);
        using var sqrt1mAb = torch.tensor(schedule.AlphaBars.Select(a => Math.Sqrt(1 - a)).ToArray()).to(ScalarType.Float32);
        model.train();
        var parameters = model.parameters().ToList();
        foreach (var p in parameters) p.requires_grad = true; // backbones come frozen for inference
        using var opt = optim.Adam(parameters, lr);
        var ema = parameters.Select(p => p.detach().clone()).ToList();
        long n = data.TrainImages.shape[0];
        var recent = new Queue<double>();
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        // Fixed warm-up, so that the EMA checkpoint at step N of a run equals the result of a run of N steps.
        const int warmup = 100;
        for (int step = 1; step <= steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            using (var scope = torch.NewDisposeScope())
            {
                var idx = torch.randint(0, n, new long[] { batch }, generator: gen);
                var x0 = data.TrainImages.index_select(0, idx);
                var t = torch.randint(0, schedule.TrainSteps, new long[] { batch }, generator: gen);
                var noise = torch.randn(x0.shape, generator: gen);
                var xt = sqrtAb.index_select(0, t).view(-1, 1, 1, 1) * x0 + sqrt1mAb.index_select(0, t).view(-1, 1, 1, 1) * noise;
                foreach (var g in opt.ParamGroups) g.LearningRate = lr * Math.Min(1.0, (double)step / warmup);
                opt.zero_grad();
                var loss = nn.functional.mse_loss(model.forward(xt, t.to(ScalarType.Float32)), noise);
                loss.backward();
                nn.utils.clip_grad_norm_(parameters, 1.0);
                opt.step();
                double l = loss.item<float>();
                recent.Enqueue(l);
                if (recent.Count > 200) recent.Dequeue();
                double decay = Math.Min(0.995, (1.0 + step) / (10.0 + step));
                using (torch.no_grad())
                {
                    for (int i = 0; i < parameters.Count; i++) ema[i].mul_(decay).add_(parameters[i].detach(), alpha: 1 - decay);
                }
            }
            if (step % 10 == 0 || step == steps) progress?.Report(new TrainingProgress("prior", step, steps, recent.Average()));
            if (checkpoint is not null && checkpointEvery > 0 && step % checkpointEvery == 0 && step < steps)
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
        double cpuPerStep = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds / steps;
        return new PriorReport(model, recent.Average(), sw.Elapsed.TotalSeconds, description, cpuPerStep);
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
