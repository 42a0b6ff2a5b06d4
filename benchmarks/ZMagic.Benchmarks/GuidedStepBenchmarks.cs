using BenchmarkDotNet.Attributes;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Benchmarking;
using ZMagic.Models;
using static TorchSharp.torch;

namespace ZMagic.Benchmarks;

/// <summary>
/// Shared body of the one-guided-step benchmarks: a fixed x_t at t = 500, FreeDoM's eta step, toy energies, the
/// method and combiner by name, the device as a parameter with CUDA synchronisation after the step.
/// </summary>
public abstract class GuidedStepBenchmarkBase
{
    private BackboneDenoiser? _denoiser;
    private IReadOnlyList<IGuidanceCondition> _conditions = Array.Empty<IGuidanceCondition>();
    private IGuidanceStrategy _strategy = UnguidedStrategy.Instance;
    private IGradientCombiner _combiner = SumCombiner.Instance;
    private Tensor? _x, _noise, _t;
    private Device _device = torch.CPU;
    private FaceEnergies? _face;
    private readonly ISamplerStep _sampler = new FreeDoMEtaStep(0.5);

    /// <summary>The backbone name (see <see cref="Backbones"/>).</summary>
    protected abstract string Backbone { get; }

    /// <summary>Method name (see <see cref="GuidanceMethods.Methods"/>).</summary>
    public abstract string Method { get; set; }

    /// <summary>Combiner name (see <see cref="GuidanceMethods.Combiners"/>).</summary>
    public abstract string Combiner { get; set; }

    /// <summary>Number of toy conditions.</summary>
    public abstract int Conditions { get; set; }

    /// <summary>Device: cpu, cuda or cuda:N (from env ZMAGIC_BENCH_DEVICES).</summary>
    /// <summary>Condition energies: "toy" (cheap, the denoiser dominates) or "face" (<see cref="FaceEnergies"/>).</summary>
    public virtual string Energies { get; set; } = "toy";

    [ParamsSource(nameof(DeviceValues))]
    public string Device { get; set; } = "cpu";

    /// <summary>The device values.</summary>
    public static IEnumerable<string> DeviceValues => Backbones.Devices;

    /// <summary>Builds the backbone, the conditions and the step inputs once.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _device = StepBenchmark.ParseDevice(Device);
        _denoiser = Backbones.Create(Backbone, _device);
        if (Energies == "face")
        {
            _face = new FaceEnergies(_device);
            _conditions = _face.Conditions(Conditions, _denoiser.Channels, _denoiser.SampleSize, _device);
        }
        else _conditions = ToyCondition.Many(Conditions, _denoiser.Channels, _denoiser.SampleSize, _device);
        _strategy = GuidanceMethods.Strategy(Method);
        _combiner = GuidanceMethods.Combiner(Combiner);
        var g = new torch.Generator(7);
        var shape = new long[] { 1, _denoiser.Channels, _denoiser.SampleSize, _denoiser.SampleSize };
        _x = torch.randn(shape, generator: g).to(_device).DetachFromDisposeScope();
        _noise = torch.randn(shape, generator: g).to(_device).DetachFromDisposeScope();
        _t = torch.full(1, 500f, ScalarType.Float32, _device).DetachFromDisposeScope();
    }

    /// <summary>One guided step (device-synchronised).</summary>
    [Benchmark]
    public int Step()
    {
        var d = _denoiser!;
        var trace = new StepTrace { T = 500, Next = 490 };
        using (torch.NewDisposeScope())
        {
            _strategy.Step(new GuidedStep
            {
                Denoiser = d, X = _x!, TimestepTensor = _t!, Timesteps = new TimestepPair(500, 490),
                AlphaBar = d.Schedule.AlphaBar(500), AlphaBarNext = d.Schedule.AlphaBar(490), Sampler = _sampler,
                Noise = _noise, Conditions = _conditions, Combiner = _combiner, Trace = trace,
            });
            StepBenchmark.Synchronize(_device);
        }
        return trace.Passes.DenoiserForwards + trace.Passes.DenoiserBackwards + trace.Passes.Vjps;
    }

    /// <summary>Frees the backbone and the inputs.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _x?.Dispose();
        _noise?.Dispose();
        _t?.Dispose();
        _denoiser?.Dispose();
        _face?.Dispose();
    }
}

/// <summary>One guided step on the small 1x32x32 DDPM (formula weights), every method x combiner x 1, 2, 3, 5 conditions.</summary>
[MemoryDiagnoser]
public class DigitsStepBenchmarks : GuidedStepBenchmarkBase
{
    /// <inheritdoc />
    protected override string Backbone => "digits32";

    /// <inheritdoc />
    [Params("unguided", "vanilla", "zmagic", "zmagic-full", "zmagic-firstorder", "zmagic-reuse", "zmagic-firstorder-reuse",
            "vanilla-percondition", "vanilla-batched", "zmagic-percondition", "zmagic-batched")]
    public override string Method { get; set; } = "vanilla";

    /// <inheritdoc />
    [Params("sum", "cagrad", "pcgrad", "mgda")]
    public override string Combiner { get; set; } = "sum";

    /// <inheritdoc />
    [Params(1, 2, 3, 5)]
    public override int Conditions { get; set; } = 2;
}

/// <summary>
/// One guided step on the full CelebA-HQ DDPM at 3x256x256 (formula weights). Each step takes seconds on a CPU, so
/// one launch, one warm-up and three measured single-step iterations.
/// </summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 1, iterationCount: 3, invocationCount: 1)]
public class CelebAHqStepBenchmarks : GuidedStepBenchmarkBase
{
    /// <inheritdoc />
    protected override string Backbone => "celebahq";

    /// <inheritdoc />
    [Params("unguided", "vanilla", "zmagic", "zmagic-full", "zmagic-firstorder", "zmagic-reuse", "zmagic-firstorder-reuse")]
    public override string Method { get; set; } = "vanilla";

    /// <inheritdoc />
    [Params("sum", "cagrad", "pcgrad", "mgda")]
    public override string Combiner { get; set; } = "sum";

    /// <inheritdoc />
    [Params(1, 2, 3, 5)]
    public override int Conditions { get; set; } = 2;

    /// <summary>Toy energies, or the real face encoders (identity, parsing, landmarks; toy beyond three).</summary>
    [Params("toy", "face")]
    public override string Energies { get; set; } = "toy";
}
