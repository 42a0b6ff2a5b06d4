using System.Diagnostics;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>How a digits prior is sampled for <see cref="DigitsPriorEvaluation"/>.</summary>
public sealed record PriorEvaluationOptions
{
    /// <summary>Unguided samples drawn.</summary>
    public int Samples { get; init; } = 1000;

    /// <summary>Sampler steps (the demo's count by default).</summary>
    public int Steps { get; init; } = 25;

    /// <summary>Seed of the initial noise (item i depends only on the seed and i).</summary>
    public long Seed { get; init; }

    /// <summary>Samples per sampler call.</summary>
    public int Batch { get; init; } = 100;

    /// <summary>Judge confidence (largest softmax probability) that counts a sample as a recognisable digit.</summary>
    public double ConfidenceThreshold { get; init; } = 0.9;

    /// <summary>The sampler step (default: FreeDoM's eta step with eta 0.5, the demo's).</summary>
    public ISamplerStep SamplerStep { get; init; } = new FreeDoMEtaStep(0.5);
}

/// <summary>What unguided samples of a digits prior look like to the judge.</summary>
/// <param name="Samples">Samples drawn.</param>
/// <param name="ConfidentFraction">Share of samples whose judge confidence is at least the threshold.</param>
/// <param name="ConfidenceThreshold">That threshold.</param>
/// <param name="ClassShares">Share of samples the judge assigns to each digit 0..9 (argmax).</param>
/// <param name="FrechetDistance">Frechet distance between the judge features of the samples and of the reference digits.</param>
/// <param name="SecondsPerImage">Sampling time per image.</param>
public sealed record PriorQuality(int Samples, double ConfidentFraction, double ConfidenceThreshold, IReadOnlyList<double> ClassShares,
    double FrechetDistance, double SecondsPerImage)
{
    /// <summary>Largest |share - 0.1| over the ten classes (0 for a perfectly uniform histogram).</summary>
    public double MaxShareDeviation => ClassShares.Max(s => Math.Abs(s - 0.1));
}

/// <summary>
/// Measures a digits prior without guidance: the share of samples the judge recognises with high confidence, the
/// class histogram, and a Frechet distance in the judge's penultimate feature space (an FID with the judge in place of
/// Inception) to reference digits.
/// </summary>
public static class DigitsPriorEvaluation
{
    /// <summary>Draws unguided samples from <paramref name="prior"/> and scores them.</summary>
    /// <param name="prior">A 1x32x32 digits denoiser (wrap it in <see cref="X0ClippingDenoiser"/> to evaluate clipped sampling).</param>
    /// <param name="judge">The judge classifier.</param>
    /// <param name="reference">Reference digits [M, 1, 32, 32] in [-1, 1] (the held-out split).</param>
    /// <param name="options">Sample count, steps, seed.</param>
    /// <param name="progress">Samples done so far.</param>
    /// <param name="ct">Cancellation.</param>
    public static PriorQuality Evaluate(IDenoiser prior, JudgeClassifier judge, Tensor reference, PriorEvaluationOptions? options = null,
        IProgress<int>? progress = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(prior);
        ArgumentNullException.ThrowIfNull(judge);
        ArgumentNullException.ThrowIfNull(reference);
        options ??= new PriorEvaluationOptions();
        if (options.Samples < 2) throw new ArgumentException($"Samples must be at least 2 (a covariance needs two); got {options.Samples}.", nameof(options));
        if (options.Batch < 1) throw new ArgumentException($"Batch must be at least 1; got {options.Batch}.", nameof(options));
        var sampler = new ConditionalSampler(prior);
        var sw = Stopwatch.StartNew();
        var images = new List<Tensor>();
        try
        {
            for (int first = 0; first < options.Samples; first += options.Batch)
            {
                var so = new SamplerOptions
                {
                    Steps = options.Steps, Seed = options.Seed, BatchSize = Math.Min(options.Batch, options.Samples - first), FirstItem = first,
                    Strategy = UnguidedStrategy.Instance, SamplerStep = options.SamplerStep,
                };
                using var result = sampler.Sample(Array.Empty<IGuidanceCondition>(), so, null, ct);
                images.Add(result.Images.detach().clamp(-1, 1));
                progress?.Report(first + so.BatchSize);
            }
            double seconds = sw.Elapsed.TotalSeconds / options.Samples;
            using var all = torch.cat(images, 0);
            return Score(all, judge, reference, options.ConfidenceThreshold, seconds);
        }
        finally
        {
            foreach (var t in images) t.Dispose();
        }
    }

    /// <summary>Scores given images [N, 1, 32, 32] in [-1, 1] (e.g. real digits, for a reference figure).</summary>
    public static PriorQuality Score(Tensor images, JudgeClassifier judge, Tensor reference, double confidenceThreshold = 0.9, double secondsPerImage = 0)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(judge);
        ArgumentNullException.ThrowIfNull(reference);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        judge.eval();
        var x = images.to(ScalarType.Float32);
        var features = judge.Features(x);
        var probabilities = nn.functional.softmax(judge.forward(x), 1);
        var confidence = probabilities.max(1).values;
        int n = (int)x.shape[0];
        double confident = confidence.ge(confidenceThreshold).sum().item<long>() / (double)n;
        var counts = torch.bincount(probabilities.argmax(1), minlength: 10).to(ScalarType.Float64).data<double>().ToArray();
        var shares = counts.Select(c => c / n).ToArray();
        double fd = FrechetDistance(features, judge.Features(reference.to(ScalarType.Float32)));
        return new PriorQuality(n, confident, confidenceThreshold, shares, fd, secondsPerImage);
    }

    /// <summary>
    /// Frechet distance between Gaussians fitted to two feature sets [N, D] and [M, D]:
    /// |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), in float64 with symmetric eigendecompositions.
    /// </summary>
    public static double FrechetDistance(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != b.shape[1])
            throw new ArgumentException($"Feature sets must be [N, D] and [M, D]; got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}].");
        if (a.shape[0] < 2 || b.shape[0] < 2) throw new ArgumentException("Each feature set needs at least two rows.");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = a.to(ScalarType.Float64);
        var y = b.to(ScalarType.Float64);
        var mu1 = x.mean(new long[] { 0 });
        var mu2 = y.mean(new long[] { 0 });
        var c1 = Covariance(x, mu1);
        var c2 = Covariance(y, mu2);
        var (e1, v1) = torch.linalg.eigh(c1);
        var s1 = v1.matmul(torch.diag(e1.clamp_min(0).sqrt())).matmul(v1.t());
        var m = s1.matmul(c2).matmul(s1);
        m = (m + m.t()) / 2;
        double traceSqrt = torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum().item<double>();
        double meanTerm = (mu1 - mu2).pow(2).sum().item<double>();
        return meanTerm + c1.trace().item<double>() + c2.trace().item<double>() - 2 * traceSqrt;
    }

    private static Tensor Covariance(Tensor x, Tensor mu)
    {
        var d = x - mu;
        return d.t().matmul(d) / (x.shape[0] - 1);
    }
}
