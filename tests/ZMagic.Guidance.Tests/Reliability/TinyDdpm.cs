using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.IO;
using ZMagic.Core.Sampling;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Reliability;

/// <summary>A tiny DDPM (the real ermongroup UNet code, 1 x 8 x 8, ch 32, one level) with deterministic formula weights.</summary>
internal static class TinyDdpm
{
    public static DdpmUNetConfig Config { get; } = new()
    {
        Ch = 32, OutCh = 1, InChannels = 1, ChMult = [1], NumResBlocks = 1, AttnResolutions = [8],
        Dropout = 0, Resolution = 8,
    };

    public static DdpmDenoiser Create()
    {
        var d = new DdpmDenoiser(Config);
        FormulaWeights.Apply(d.Network);
        return d;
    }

    /// <summary>Three differentiable conditions of different kinds (mean level, a patch target, smoothness).</summary>
    public static IGuidanceCondition[] Conditions(double scale = 0.02) => new IGuidanceCondition[]
    {
        new Cond("mean", x0 => (x0.mean(new long[] { 1, 2, 3 }) - 0.3).square(), scale),
        new Cond("patch", x0 => (x0[.., .., ..4, ..4] + 0.5).square().flatten(1).sum(1), scale),
        new Cond("smooth", x0 => (x0[.., .., 1.., ..] - x0[.., .., ..^1, ..]).square().flatten(1).sum(1), scale),
    };

    public static SamplerOptions Options(int steps, long seed = 7, int batch = 2) => new()
    {
        Steps = steps, Seed = seed, BatchSize = batch,
        Strategy = new ZMagicStrategy(),
        Combiner = new CAGradCombiner(new CAGradOptions { C = 0.5 }),
    };
}

/// <summary>A condition from a lambda, with a hook called before each energy evaluation (call number, x0).</summary>
internal sealed class Cond : IGuidanceCondition
{
    private readonly Func<Tensor, Tensor> _energy;

    public Cond(string name, Func<Tensor, Tensor> energy, double scale = 0.02)
    {
        Name = name;
        _energy = energy;
        Schedule = new GuidanceSchedule(new NormRelativeStepSize(scale));
    }

    public string Name { get; }

    public GuidanceSchedule Schedule { get; }

    public int Calls { get; private set; }

    /// <summary>Called with the (1-based) call number; may throw, cancel a token, or return a replacement energy.</summary>
    public Func<int, Tensor, Tensor?>? Hook { get; set; }

    public Tensor Energy(Tensor x0)
    {
        Calls++;
        var e = _energy(x0);
        return Hook?.Invoke(Calls, e) ?? e;
    }
}

/// <summary>Wraps a combiner with a hook run before each combination (call number).</summary>
internal sealed class HookedCombiner(IGradientCombiner inner, Action<int> hook) : IGradientCombiner
{
    private int _calls;

    public string Name => "hooked-" + inner.Name;

    public int Calls => _calls;

    public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
    {
        hook(++_calls);
        return inner.Combine(taskGradients);
    }
}

/// <summary>Synchronous progress (System.Progress posts to the thread pool).</summary>
internal sealed class SyncProgress(Action<SamplingProgress> onReport) : IProgress<SamplingProgress>
{
    public void Report(SamplingProgress value) => onReport(value);
}

internal static class Native
{
    /// <summary>Whether every value is finite, without leaving temporaries alive.</summary>
    public static bool AllFinite(Tensor t)
    {
        using var scope = torch.NewDisposeScope();
        return t.isfinite().all().item<bool>();
    }

    /// <summary>Resident set size of this process in KiB (VmRSS from /proc/self/status).</summary>
    public static long RssKiB()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        return -1;
    }
}
