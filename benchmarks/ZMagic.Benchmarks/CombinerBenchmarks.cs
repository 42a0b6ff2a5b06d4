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
    [Params(2, 3, 5)]
    public int K { get; set; }

    /// <summary>Combiner under test.</summary>
    [Params("sum", "cagrad", "cagrad-per-channel", "pcgrad", "mgda")]
    public string Combiner { get; set; } = "sum";

    /// <summary>Draws the task gradients once.</summary>
    [GlobalSetup]
    public void Setup()
    {
        torch.manual_seed(0);
        _tasks = Enumerable.Range(0, K).Select(_ => torch.randn(1, 3, 256, 256)).ToArray();
        _combiner = Combiner switch
        {
            "sum" => SumCombiner.Instance,
            "cagrad" => new CAGradCombiner(0.5),
            "cagrad-per-channel" => new CAGradCombiner(0.5, perChannel: true),
            "pcgrad" => new PCGradCombiner(),
            _ => new MGDACombiner(),
        };
    }

    /// <summary>One combine call.</summary>
    [Benchmark]
    public void Combine()
    {
        using var scope = torch.NewDisposeScope();
        _combiner.Combine(_tasks);
    }

    /// <summary>Frees the tasks.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in _tasks) t.Dispose();
    }
}
