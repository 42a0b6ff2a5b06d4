using BenchmarkDotNet.Attributes;
using TorchSharp;
using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Benchmarks;

/// <summary>Gradient combiners alone on K task gradients of shape [1, 3, 256, 256] (a face-sized step).</summary>
[MemoryDiagnoser]
public class CombinerBenchmarks
{
    private Tensor[] _tasks = Array.Empty<Tensor>();
    private IGradientCombiner _combiner = SumCombiner.Instance;

    /// <summary>Number of tasks.</summary>
    [Params(2, 3, 4, 5)]
    public int K { get; set; }

    /// <summary>Combiner under test.</summary>
    [Params("sum", "cagrad", "cagrad-per-channel", "pcgrad", "pcgrad-per-channel", "mgda", "mgda-per-channel")]
    public string Combiner { get; set; } = "sum";

    /// <summary>Device: cpu, cuda or cuda:N (from env ZMAGIC_BENCH_DEVICES).</summary>
    [ParamsSource(nameof(DeviceValues))]
    public string Device { get; set; } = "cpu";

    /// <summary>The device values.</summary>
    public static IEnumerable<string> DeviceValues => Backbones.Devices;

    private Device _device = torch.CPU;

    /// <summary>Draws the task gradients once.</summary>
    [GlobalSetup]
    public void Setup()
    {
        torch.manual_seed(0);
        _device = ZMagic.Benchmarking.StepBenchmark.ParseDevice(Device);
        _tasks = Enumerable.Range(0, K).Select(_ => torch.randn(1, 3, 256, 256).to(_device)).ToArray();
        _combiner = Combiner switch
        {
            "sum" => SumCombiner.Instance,
            "cagrad" => new CAGradCombiner(0.5),
            "cagrad-per-channel" => new CAGradCombiner(0.5, perChannel: true),
            "pcgrad" => new PCGradCombiner(),
            "pcgrad-per-channel" => new PCGradCombiner(perChannel: true),
            "mgda" => new MGDACombiner(),
            _ => new MGDACombiner(perChannel: true),
        };
    }

    /// <summary>One combine call.</summary>
    [Benchmark]
    public void Combine()
    {
        using var scope = torch.NewDisposeScope();
        _combiner.Combine(_tasks);
        ZMagic.Benchmarking.StepBenchmark.Synchronize(_device);
    }

    /// <summary>Frees the tasks.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in _tasks) t.Dispose();
    }
}
