using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>
/// The exact denoiser of Gaussian data x0 ~ N(mu, diag(s^2)) (per element): E[x0 | x_t] is affine in x_t with a
/// per-element gain k = sqrt(a) s^2 / (a s^2 + 1 - a), so every Jacobian is a known diagonal.
/// </summary>
internal sealed class GaussianDenoiser : IDenoiser
{
    public GaussianDenoiser(Tensor mu, Tensor s, NoiseSchedule? schedule = null)
    {
        Mu = mu; S = s;
        Schedule = schedule ?? NoiseSchedule.Linear();
        Channels = (int)mu.shape[0];
        SampleSize = (int)mu.shape[1];
    }

    public Tensor Mu { get; }
    public Tensor S { get; }
    public NoiseSchedule Schedule { get; }
    public PredictionType Prediction => PredictionType.Epsilon;
    public int Channels { get; }
    public int SampleSize { get; }
    public bool LearnedSigma => false;

    /// <summary>Gain dx0/dx_t at abar a.</summary>
    public Tensor Gain(double a) => S.square() * Math.Sqrt(a) / (S.square() * a + (1 - a));

    public Tensor X0(Tensor x, double a) => Mu + Gain(a).to(x.dtype) * (x - Mu * Math.Sqrt(a));

    public Tensor Forward(Tensor x, Tensor t)
    {
        double a = Schedule.AlphaBar((int)t[0].item<float>());
        var x0 = X0(x, a);
        return (x - x0 * Math.Sqrt(a)) / Math.Sqrt(1 - a);
    }

    public static GaussianDenoiser Random(int channels, int size, long seed, ScalarType dtype = ScalarType.Float64)
    {
        using var g = new Generator((ulong)seed);
        var mu = (torch.rand(new long[] { channels, size, size }, ScalarType.Float64, generator: g) - 0.5).to(dtype);
        var s = (torch.rand(new long[] { channels, size, size }, ScalarType.Float64, generator: g) * 0.8 + 0.3).to(dtype);
        return new GaussianDenoiser(mu, s);
    }
}

/// <summary>E(x0) = 0.5 ||m * x0 - y||^2 per item (m, y broadcast over the batch): gradient m (m x0 - y), Hessian m^2.</summary>
internal sealed class QuadraticCondition : IGuidanceCondition
{
    public QuadraticCondition(string name, Tensor mask, Tensor target, IStepSizeRule rule, GuidanceWindow? window = null)
    {
        Name = name; Mask = mask; Target = target;
        Schedule = new GuidanceSchedule(rule, window);
    }

    public string Name { get; }
    public GuidanceSchedule Schedule { get; }
    public Tensor Mask { get; }
    public Tensor Target { get; }

    public Tensor Energy(Tensor x0) => ((Mask * x0 - Target).square() * 0.5).flatten(1).sum(1);

    /// <summary>dE/dx0.</summary>
    public Tensor GradX0(Tensor x0) => Mask * (Mask * x0 - Target);
}

/// <summary>E(x0) = ||P x0_b - y|| per item (FreeDoM's plain L2 norm of a residual) for a linear map P.</summary>
internal sealed class LinearNormCondition : IGuidanceCondition
{
    public LinearNormCondition(string name, Tensor p, Tensor y, IStepSizeRule rule, GuidanceWindow? window = null)
    {
        Name = name; P = p; Y = y;
        Schedule = new GuidanceSchedule(rule, window);
    }

    public string Name { get; }
    public GuidanceSchedule Schedule { get; }
    public Tensor P { get; }
    public Tensor Y { get; }

    public Tensor Energy(Tensor x0)
    {
        var flat = x0.flatten(1);                          // [B, d]
        var r = torch.matmul(flat, P.t().to(flat.dtype)) - Y.to(flat.dtype);
        return r.square().sum(1).add(1e-12).sqrt();
    }
}

/// <summary>A condition that returns whatever the test wants (NaN, wrong shapes, ...).</summary>
internal sealed class FuncCondition : IGuidanceCondition
{
    private readonly Func<Tensor, Tensor> _energy;

    public FuncCondition(string name, Func<Tensor, Tensor> energy, IStepSizeRule? rule = null, GuidanceWindow? window = null)
    {
        Name = name; _energy = energy;
        Schedule = new GuidanceSchedule(rule ?? new ConstantStepSize(1.0), window);
    }

    public string Name { get; }
    public GuidanceSchedule Schedule { get; }
    public Tensor Energy(Tensor x0) => _energy(x0);
}

internal static class StepHarness
{
    /// <summary>Builds one guided step; the probe stores clones of every intermediate.</summary>
    public static (GuidedStep Step, Dictionary<string, Tensor> Seen) Make(
        IDenoiser denoiser, Tensor x, int t, int next, ISamplerStep sampler, Tensor? noise,
        IReadOnlyList<IGuidanceCondition> conditions, IGradientCombiner? combiner = null,
        NonFinitePolicy policy = NonFinitePolicy.Fail, Func<Tensor>? drawNoise = null)
    {
        var seen = new Dictionary<string, Tensor>();
        var step = new GuidedStep
        {
            Denoiser = denoiser,
            X = x,
            TimestepTensor = torch.full(x.shape[0], (float)t, ScalarType.Float32),
            Timesteps = new TimestepPair(t, next),
            AlphaBar = denoiser.Schedule.AlphaBar(t),
            AlphaBarNext = denoiser.Schedule.AlphaBar(next),
            Sampler = sampler,
            Noise = noise,
            Conditions = conditions,
            Combiner = combiner ?? SumCombiner.Instance,
            NonFinitePolicy = policy,
            Trace = new StepTrace { T = t, Next = next },
            DrawNoise = drawNoise,
            Inspect = (name, v) => seen[name] = v.clone(),
        };
        return (step, seen);
    }
}
