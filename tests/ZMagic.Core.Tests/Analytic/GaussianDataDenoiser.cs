using TorchSharp;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Analytic;

/// <summary>
/// The exact (Bayes-optimal) denoiser of Gaussian data x0 ~ N(mu, diag(s^2)) under a noise schedule.
/// </summary>
/// <remarks>
/// With <c>x_t = sqrt(a) x0 + sqrt(1 - a) eps</c>, (x_t, eps) is jointly Gaussian per element with
/// Var(x_t) = a s^2 + 1 - a and Cov(eps, x_t) = sqrt(1 - a), so
/// <c>E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)</c>, and
/// <c>E[x0 | x_t] = (x_t - sqrt(1 - a) E[eps | x_t]) / sqrt(a)</c>, <c>E[v | x_t] = sqrt(a) E[eps|x_t] - sqrt(1 - a) E[x0|x_t]</c>.
/// Everything is elementwise with per-item coefficients computed on the host in float64, so item i's output does
/// not depend on the batch it is in (bit for bit). Works in float32 and float64.
/// </remarks>
public sealed class GaussianDataDenoiser : IDenoiser
{
    private readonly double[] _mean;
    private readonly double[] _std;

    /// <summary>Creates the denoiser for data N(mean, diag(std^2)) of shape [channels, size, size] (row-major).</summary>
    public GaussianDataDenoiser(NoiseSchedule schedule, double[] mean, double[] std, int channels, int size,
        PredictionType prediction = PredictionType.Epsilon, bool learnedSigma = false)
    {
        if (mean.Length != channels * size * size || std.Length != mean.Length)
            throw new ArgumentException("mean and std need channels*size*size entries.");
        Schedule = schedule;
        _mean = mean;
        _std = std;
        Channels = channels;
        SampleSize = size;
        Prediction = prediction;
        LearnedSigma = learnedSigma;
    }

    /// <summary>A test bed of the given shape with means spread over [-1, 1] and standard deviations over [0.3, 1.5].</summary>
    public static GaussianDataDenoiser Spread(NoiseSchedule schedule, int channels, int size,
        PredictionType prediction = PredictionType.Epsilon, bool learnedSigma = false)
    {
        int m = channels * size * size;
        var mean = new double[m];
        var std = new double[m];
        for (int j = 0; j < m; j++)
        {
            mean[j] = -1 + 2.0 * j / (m - 1);
            std[j] = 0.3 + 1.2 * ((j * 37) % m) / (m - 1); // a permutation, so mean and std are not correlated
        }
        return new GaussianDataDenoiser(schedule, mean, std, channels, size, prediction, learnedSigma);
    }

    /// <summary>Per-element data means.</summary>
    public IReadOnlyList<double> Mean => _mean;

    /// <summary>Per-element data standard deviations.</summary>
    public IReadOnlyList<double> Std => _std;

    /// <inheritdoc />
    public NoiseSchedule Schedule { get; }

    /// <inheritdoc />
    public PredictionType Prediction { get; }

    /// <inheritdoc />
    public int Channels { get; }

    /// <inheritdoc />
    public int SampleSize { get; }

    /// <inheritdoc />
    public bool LearnedSigma { get; }

    /// <summary>Number of <see cref="Forward"/> calls so far.</summary>
    public int ForwardCalls { get; private set; }

    /// <summary>Called at the start of every forward with the 1-based call count (tests cancel or break things here).</summary>
    public Action<int>? OnForward { get; set; }

    /// <summary>Optional transform of the output (tests inject NaN or wrong shapes here).</summary>
    public Func<Tensor, Tensor>? OutputHook { get; set; }

    /// <summary>The t tensors received, as (device, dtype, values).</summary>
    public List<(DeviceType Device, ScalarType DType, float[] Values)> ReceivedTimesteps { get; } = new();

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t)
    {
        ForwardCalls++;
        OnForward?.Invoke(ForwardCalls);
        var tv = t.cpu().to(ScalarType.Float32).data<float>().ToArray();
        ReceivedTimesteps.Add((t.device_type, t.dtype, tv));
        long b = x.shape[0];
        if (tv.Length != b) throw new ArgumentException($"t has {tv.Length} entries for a batch of {b}.");

        var ca = new double[b];
        for (int i = 0; i < b; i++) ca[i] = Schedule.AlphaBar((int)MathF.Round(tv[i]));

        var mean = torch.tensor(_mean, ScalarType.Float64).reshape(1, Channels, SampleSize, SampleSize);
        var var_ = torch.tensor(_std.Select(s => s * s).ToArray(), ScalarType.Float64).reshape(1, Channels, SampleSize, SampleSize);
        var a = torch.tensor(ca, ScalarType.Float64).reshape(b, 1, 1, 1);
        // Elementwise: v = a s^2 + 1 - a; eps = sqrt(1-a)/v * (x - sqrt(a) mu).
        var x64 = x.to(ScalarType.Float64);
        var v = a * var_ + (1 - a);
        var eps = (1 - a).sqrt() / v * (x64 - a.sqrt() * mean);
        Tensor output = Prediction switch
        {
            PredictionType.Epsilon => eps,
            PredictionType.Sample => (x64 - (1 - a).sqrt() * eps) / a.sqrt(),
            PredictionType.VPrediction => a.sqrt() * eps - (1 - a).sqrt() * ((x64 - (1 - a).sqrt() * eps) / a.sqrt()),
            _ => throw new InvalidOperationException(),
        };
        output = output.to(x.dtype, x.device);
        if (LearnedSigma) output = torch.cat(new[] { output, torch.full_like(output, 7.0) }, 1);
        if (OutputHook is not null) output = OutputHook(output);
        return output;
    }
}
