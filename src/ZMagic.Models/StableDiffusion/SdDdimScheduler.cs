using System.Text.Json;
using TorchSharp;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Models.StableDiffusion;

/// <summary>The scheduler settings of an SD model folder (<c>scheduler/scheduler_config.json</c>).</summary>
public sealed record SdSchedulerConfig
{
    /// <summary>First beta.</summary>
    public double BetaStart { get; init; } = 0.00085;
    /// <summary>Last beta.</summary>
    public double BetaEnd { get; init; } = 0.012;
    /// <summary>"scaled_linear" or "linear".</summary>
    public string BetaSchedule { get; init; } = "scaled_linear";
    /// <summary>Training timesteps.</summary>
    public int TrainTimesteps { get; init; } = 1000;
    /// <summary>Use abar = 1 for the step past t = 0 (false in SD 1.x: abar_0 is used).</summary>
    public bool SetAlphaToOne { get; init; }
    /// <summary>Offset added to the "leading" timesteps (1 in SD 1.x).</summary>
    public int StepsOffset { get; init; } = 1;
    /// <summary>"epsilon" or "v_prediction".</summary>
    public string PredictionType { get; init; } = "epsilon";

    /// <summary>SD v1.5's scheduler config.</summary>
    public static SdSchedulerConfig Sd15 { get; } = new();

    /// <summary>Parses a diffusers scheduler config (PNDM/DDIM/... share these fields).</summary>
    public static SdSchedulerConfig FromJson(JsonElement json, string source = "scheduler_config.json")
    {
        var c = new SdSchedulerConfig();
        double Dbl(string n, double d) => json.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : d;
        int Int(string n, int d) => json.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : d;
        string Str(string n, string d) => json.TryGetProperty(n, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : d;
        bool Bool(string n, bool d) => json.TryGetProperty(n, out var v) && (v.ValueKind is JsonValueKind.True or JsonValueKind.False) ? v.GetBoolean() : d;
        c = c with
        {
            BetaStart = Dbl("beta_start", c.BetaStart),
            BetaEnd = Dbl("beta_end", c.BetaEnd),
            BetaSchedule = Str("beta_schedule", c.BetaSchedule),
            TrainTimesteps = Int("num_train_timesteps", c.TrainTimesteps),
            SetAlphaToOne = Bool("set_alpha_to_one", c.SetAlphaToOne),
            StepsOffset = Int("steps_offset", c.StepsOffset),
            PredictionType = Str("prediction_type", c.PredictionType),
        };
        if (c.BetaSchedule is not ("scaled_linear" or "linear"))
            throw new FormatException($"{source}: beta_schedule '{c.BetaSchedule}' is not supported (scaled_linear, linear).");
        if (c.PredictionType is not ("epsilon" or "v_prediction"))
            throw new FormatException($"{source}: prediction_type '{c.PredictionType}' is not supported (epsilon, v_prediction).");
        return c;
    }
}

/// <summary>
/// diffusers' <c>DDIMScheduler</c> as Stable Diffusion uses it: float32 scaled-linear betas, "leading" timestep spacing
/// with steps_offset, and <c>final_alpha_cumprod</c> for the last step. Computes in float32 like the reference.
/// </summary>
public sealed class SdDdimScheduler : IDisposable
{
    /// <summary>Creates the scheduler.</summary>
    public SdDdimScheduler(SdSchedulerConfig config)
    {
        Config = config ?? throw new ArgumentNullException(nameof(config));
        int n = config.TrainTimesteps;
        using var scope = torch.NewDisposeScope();
        var betas = config.BetaSchedule == "scaled_linear"
            ? LinspaceFloat32(Math.Sqrt(config.BetaStart), Math.Sqrt(config.BetaEnd), n).square()
            : LinspaceFloat32(config.BetaStart, config.BetaEnd, n);
        Betas = betas.MoveToOuterDisposeScope();
        AlphasCumprod = (1 - Betas).cumprod(0).MoveToOuterDisposeScope();
        FinalAlphaCumprod = config.SetAlphaToOne ? 1.0f : AlphasCumprod[0].item<float>();
        _abar = AlphasCumprod.data<float>().ToArray();
        Schedule = new NoiseSchedule(Betas.data<float>().Select(b => (double)b).ToArray()) { FinalAlphaBar = FinalAlphaCumprod };
    }

    private readonly float[] _abar;

    /// <summary>
    /// torch.linspace(start, end, n, dtype=float32) as PyTorch's CPU kernel computes it: a float32 step, the first
    /// half counted up from start and the second half down from end (so both ends are exact).
    /// </summary>
    internal static Tensor LinspaceFloat32(double start, double end, int n)
    {
        float s = (float)start, e = (float)end;
        var v = new float[n];
        if (n == 1) { v[0] = s; return torch.tensor(v); }
        float step = (e - s) / (n - 1);
        int half = n / 2;
        for (int i = 0; i < n; i++) v[i] = i < half ? s + step * i : e - step * (n - 1 - i);
        return torch.tensor(v);
    }

    /// <summary>The settings.</summary>
    public SdSchedulerConfig Config { get; }

    /// <summary>Betas [T] (float32).</summary>
    public Tensor Betas { get; }

    /// <summary>Cumulative alpha products [T] (float32, cumprod in float32 as diffusers).</summary>
    public Tensor AlphasCumprod { get; }

    /// <summary>abar used past the last timestep (abar_0 in SD 1.x since set_alpha_to_one is false).</summary>
    public float FinalAlphaCumprod { get; }

    /// <summary>The same betas as a core <see cref="NoiseSchedule"/> (float64), with SD's final abar.</summary>
    public NoiseSchedule Schedule { get; }

    /// <summary>"leading" timesteps for <paramref name="steps"/> inference steps: (arange(n) * (T / n))[::-1] + offset.</summary>
    public long[] Timesteps(int steps)
    {
        if (steps < 1 || steps > Config.TrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps, $"steps must be in [1, {Config.TrainTimesteps}].");
        long ratio = Config.TrainTimesteps / steps;
        return Enumerable.Range(0, steps).Select(i => (long)i * ratio + Config.StepsOffset).Reverse().ToArray();
    }

    /// <summary>The previous timestep of <paramref name="t"/> for a run of <paramref name="steps"/> steps (may be negative).</summary>
    public long PreviousTimestep(long t, int steps) => t - Config.TrainTimesteps / steps;

    /// <summary>abar at <paramref name="t"/>, or <see cref="FinalAlphaCumprod"/> when t &lt; 0.</summary>
    public float AlphaBar(long t) => t >= 0 ? _abar[t] : FinalAlphaCumprod;

    /// <summary>
    /// One DDIM step for an epsilon (or v) model output: returns the previous sample and the x0 prediction.
    /// <paramref name="noise"/> is required when eta &gt; 0.
    /// </summary>
    public (Tensor PrevSample, Tensor PredOriginal) Step(Tensor modelOutput, long t, Tensor sample, int steps, double eta = 0.0, Tensor? noise = null)
    {
        if (t < 0 || t >= Config.TrainTimesteps) throw new ArgumentOutOfRangeException(nameof(t), t, "Timestep outside the schedule.");
        long prevT = PreviousTimestep(t, steps);
        using var scope = torch.NewDisposeScope();
        var dt = sample.dtype;
        var at = torch.tensor(_abar[t], ScalarType.Float32).to(dt, sample.device);
        var ap = torch.tensor(AlphaBar(prevT), ScalarType.Float32).to(dt, sample.device);
        var bt = 1 - at;
        Tensor x0, eps;
        if (Config.PredictionType == "epsilon")
        {
            x0 = (sample - bt.sqrt() * modelOutput) / at.sqrt();
            eps = modelOutput;
        }
        else
        {
            x0 = at.sqrt() * sample - bt.sqrt() * modelOutput;
            eps = at.sqrt() * modelOutput + bt.sqrt() * sample;
        }
        var variance = (1 - ap) / (1 - at) * (1 - at / ap);
        var std = variance.sqrt() * eta;
        var prev = ap.sqrt() * x0 + (1 - ap - std.square()).sqrt() * eps;
        if (eta > 0)
        {
            ArgumentNullException.ThrowIfNull(noise);
            prev = prev + std * noise;
        }
        return (prev.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
    }

    /// <summary>Forward noising: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.</summary>
    public Tensor AddNoise(Tensor original, Tensor noise, Tensor timesteps)
    {
        var a = AlphasCumprod.to(original.device).index_select(0, timesteps.to(ScalarType.Int64).to(original.device)).to(original.dtype);
        while (a.dim() < original.dim()) a = a.unsqueeze(-1);
        return a.sqrt() * original + (1 - a).sqrt() * noise;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Betas.Dispose();
        AlphasCumprod.Dispose();
    }
}
