using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>Progress of <see cref="DigitsTrainer"/>.</summary>
/// <param name="Stage">"guide", "judge" or "prior".</param>
/// <param name="Step">Optimiser steps done in this stage.</param>
/// <param name="TotalSteps">Optimiser steps in this stage.</param>
/// <param name="Loss">Running mean loss.</param>
internal readonly record struct TrainingProgress(string Stage, int Step, int TotalSteps, double Loss);

/// <summary>Result of training one classifier.</summary>
/// <param name="FinalLoss">Mean training loss over the last epoch.</param>
/// <param name="TestAccuracy">Accuracy on the held-out split.</param>
/// <param name="Seconds">Wall time.</param>
internal sealed record ClassifierReport(double FinalLoss, double TestAccuracy, double Seconds);

/// <summary>The training code of the embedded digits networks (CPU, deterministic given the seed and thread count).</summary>
internal static class DigitsTrainer
{
    /// <summary>
    /// Trains a classifier with Adam and cross-entropy. The guide also sees noisy inputs half of the time, so that its
    /// gradients stay useful on the blurry clean estimates of early sampling steps.
    /// </summary>
    public static ClassifierReport TrainClassifier(
        nn.Module<Tensor, Tensor> model, MnistData.Split data, long seed, int epochs, int batchSize, double lr, bool noiseAugment,
        string stage, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        var sw = Stopwatch.StartNew();
        torch.manual_seed(seed);
        using var gen = new Generator((ulong)seed);
        model.train();
        using var opt = optim.Adam(model.parameters(), lr);
        long n = data.TrainImages.shape[0];
        int perEpoch = (int)((n + batchSize - 1) / batchSize);
        int total = perEpoch * epochs, step = 0;
        double lastEpochLoss = double.NaN;
        for (int e = 0; e < epochs; e++)
        {
            double sum = 0; int count = 0;
            using var perm = torch.randperm(n, generator: gen);
            for (int b = 0; b < perEpoch; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var idx = perm.narrow(0, b * batchSize, Math.Min(batchSize, n - b * batchSize));
                var x = data.TrainImages.index_select(0, idx);
                var y = data.TrainLabels.index_select(0, idx);
                x = Augment(x, gen, noiseAugment);
                opt.zero_grad();
                var loss = nn.functional.cross_entropy(model.forward(x), y);
                loss.backward();
                opt.step();
                sum += loss.item<float>(); count++; step++;
                if (step % 10 == 0 || step == total) progress?.Report(new TrainingProgress(stage, step, total, sum / count));
            }
            lastEpochLoss = sum / count;
        }
        model.eval();
        double acc = Accuracy(model, data.TestImages, data.TestLabels);
        return new ClassifierReport(lastEpochLoss, acc, sw.Elapsed.TotalSeconds);
    }

    private static Tensor Augment(Tensor x, Generator gen, bool noise)
    {
        // Random shifts of up to 2 pixels (the padding), as one roll per batch: cheap and keeps digits whole.
        var shifts = torch.randint(-2, 3, new long[] { 2 }, generator: gen);
        long dy = shifts[0].item<long>(), dx = shifts[1].item<long>();
        x = x.roll(new[] { dy, dx }, new long[] { 2, 3 });
        if (noise)
        {
            long b = x.shape[0];
            var sigma = torch.rand(new long[] { b, 1, 1, 1 }, generator: gen) * 0.6;
            var mask = (torch.rand(new long[] { b, 1, 1, 1 }, generator: gen) < 0.5).to(ScalarType.Float32);
            x = x + torch.randn(x.shape, generator: gen) * sigma * mask;
        }
        return x;
    }

    /// <summary>Top-1 accuracy of <paramref name="model"/> on labelled images (evaluated in eval mode, no grad).</summary>
    public static double Accuracy(nn.Module<Tensor, Tensor> model, Tensor images, Tensor labels, int batchSize = 500)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        using var _ = torch.no_grad();
        long n = images.shape[0], correct = 0;
        for (long i = 0; i < n; i += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            long m = Math.Min(batchSize, n - i);
            var pred = model.forward(images.narrow(0, i, m)).argmax(1);
            correct += pred.eq(labels.narrow(0, i, m)).sum().item<long>();
        }
        return n == 0 ? double.NaN : (double)correct / n;
    }
}
