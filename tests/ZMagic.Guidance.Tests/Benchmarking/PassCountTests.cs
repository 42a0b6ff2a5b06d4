using ZMagic.Core.Guidance;
using System.Text.Json;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Benchmarking;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Benchmarking;

/// <summary>
/// A cheap differentiable denoiser (one 3x3 convolution and a timestep-dependent scale) for the pass-count tests: pass
/// counts are a property of the strategy, not of the network, so a network that costs microseconds keeps the tests fast.
/// </summary>
public sealed class ConvDenoiserFixture : IDisposable, IDenoiser
{
    private readonly Tensor _weight;

    /// <summary>Builds the 1x16x16 denoiser.</summary>
    public ConvDenoiserFixture()
    {
        var g = new torch.Generator(3);
        _weight = (torch.randn(new long[] { 1, 1, 3, 3 }, generator: g) * 0.2).DetachFromDisposeScope();
        Schedule = NoiseSchedule.Linear(1000, 1e-4, 0.02);
    }

    /// <summary>The denoiser.</summary>
    public IDenoiser Denoiser => this;

    /// <inheritdoc />
    public NoiseSchedule Schedule { get; }

    /// <inheritdoc />
    public PredictionType Prediction => PredictionType.Epsilon;

    /// <inheritdoc />
    public int Channels => 1;

    /// <inheritdoc />
    public int SampleSize => 16;

    /// <inheritdoc />
    public bool LearnedSigma => false;

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t) =>
        torch.tanh(torch.nn.functional.conv2d(x, ZMagic.Core.Native.NumericsSelfCheck.ConvolutionWeight(_weight), padding: new long[] { 1, 1 })) * (1 + t.reshape(-1, 1, 1, 1) / 1000);

    /// <inheritdoc />
    public void Dispose() => _weight.Dispose();
}

/// <summary>
/// Passes per guided step, read from the step traces through <see cref="StepBenchmark"/>: the cost model of
/// docs/performance.md (counts only, never timings).
/// </summary>
public class PassCountTests : IClassFixture<ConvDenoiserFixture>
{
    private readonly ConvDenoiserFixture _f;

    public PassCountTests(ConvDenoiserFixture f) => _f = f;

    private StepBenchmarkResult Measure(string method, string combiner, int n) =>
        StepBenchmark.Run(_f.Denoiser, ToyCondition.Many(n, _f.Denoiser.Channels, _f.Denoiser.SampleSize), GuidanceMethods.Strategy(method),
            GuidanceMethods.Combiner(combiner), new StepBenchmarkOptions { Steps = 1, Warmup = 0 });

    public static TheoryData<int> ConditionCounts => new() { 1, 2, 3, 5 };

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Unguided_costs_one_forward_and_no_backward(int n)
    {
        var r = Measure("unguided", "sum", n);
        Assert.Equal((1, 0, 0), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.EncoderCallsPerStep));
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Vanilla_with_the_sum_costs_one_forward_and_one_backward_whatever_n(int n)
    {
        var r = Measure("vanilla", "sum", n);
        Assert.Equal((1, 1, 0, n), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep, r.EncoderCallsPerStep));
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Vanilla_with_a_conflict_combiner_needs_one_backward_per_condition(int n)
    {
        var r = Measure("vanilla", "cagrad", n);
        Assert.Equal((1, n, 0), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep));
    }

    [Theory]
    [InlineData("zmagic", 1)]
    [InlineData("zmagic", 2)]
    [InlineData("zmagic", 3)]
    [InlineData("zmagic", 5)]
    [InlineData("zmagic-full", 2)]
    [InlineData("zmagic-full", 3)]
    public void Exact_zmagic_costs_two_forwards_and_2n_minus_1_backward_passes(string method, int n)
    {
        var r = Measure(method, "cagrad", n);
        int forwards = n == 1 ? 1 : 2;
        Assert.Equal(forwards, r.ForwardPassesPerStep);
        Assert.Equal(2 * n - 1, r.BackwardPassesPerStep);
        Assert.Equal(n - 1, r.VjpsPerStep);
        Assert.Equal(n, r.EncoderCallsPerStep);
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Exact_zmagic_with_the_sum_fuses_its_later_conditions_into_one_backward_and_one_VJP(int n)
    {
        // Before fusion (and with *-percondition): 2 forwards + 2n - 1 backward passes (n - 1 VJPs). Fused: 2 + 3 (1 VJP) for any n >= 2.
        foreach (var method in new[] { "zmagic", "zmagic-full" })
        {
            var r = Measure(method, "sum", n);
            Assert.Equal((n == 1 ? 1 : 2, n == 1 ? 1 : 3, n - 1 == 0 ? 0 : 1, n), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep, r.EncoderCallsPerStep));
        }
        foreach (var method in new[] { "zmagic-percondition", "zmagic-full-percondition" })
        {
            var r = Measure(method, "sum", n);
            Assert.Equal((n == 1 ? 1 : 2, 2 * n - 1, n - 1, n), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep, r.EncoderCallsPerStep));
        }
        var reuse = Measure("zmagic-reuse", "sum", n);
        Assert.Equal((1, Math.Min(n, 2), Math.Min(n - 1, 1)), (reuse.ForwardPassesPerStep, reuse.BackwardPassesPerStep, reuse.VjpsPerStep));
        var first = Measure("zmagic-firstorder", "sum", n);
        Assert.Equal((n == 1 ? 1 : 2, Math.Min(n, 2), 0), (first.ForwardPassesPerStep, first.BackwardPassesPerStep, first.VjpsPerStep));
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Batched_vanilla_takes_every_condition_gradient_from_one_forward_and_one_backward_of_n_copies(int n)
    {
        foreach (var (method, combiner) in new[] { ("vanilla-batched", "cagrad"), ("vanilla-batched", "sum") })
        {
            var r = Measure(method, combiner, n);
            Assert.Equal((1, 1, 0, n), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep, r.EncoderCallsPerStep));
            Assert.Equal((n, n), (r.ForwardItemsPerStep, r.BackwardItemsPerStep));
        }
        var plain = Measure("vanilla", "cagrad", n);
        Assert.Equal((1, n), (plain.ForwardItemsPerStep, plain.BackwardItemsPerStep));
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Batched_zmagic_takes_the_later_gradients_from_one_forward_and_one_backward_of_the_replicated_proposal(int n)
    {
        var r = Measure("zmagic-batched", "cagrad", n);
        if (n >= 3)
        {
            // anchor backward + one batched backward at the proposal + n - 1 VJPs.
            Assert.Equal((2, 2 + (n - 1), n - 1, n), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep, r.EncoderCallsPerStep));
            Assert.Equal((1 + (n - 1), 1 + 2 * (n - 1)), (r.ForwardItemsPerStep, r.BackwardItemsPerStep));
        }
        else
        {
            var plain = Measure("zmagic", "cagrad", n);
            Assert.Equal((plain.ForwardPassesPerStep, plain.BackwardPassesPerStep, plain.VjpsPerStep, plain.ForwardItemsPerStep, plain.BackwardItemsPerStep),
                (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep, r.ForwardItemsPerStep, r.BackwardItemsPerStep));
        }
        var unbatched = Measure("zmagic", "cagrad", n);
        Assert.Equal((n == 1 ? 1 : 2, 2 * n - 1), (unbatched.ForwardItemsPerStep, unbatched.BackwardItemsPerStep));
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void Reusing_the_first_forward_costs_one_forward_and_n_backward_passes(int n)
    {
        var r = Measure("zmagic-reuse", "cagrad", n);
        Assert.Equal((1, n, n - 1), (r.ForwardPassesPerStep, r.BackwardPassesPerStep, r.VjpsPerStep));
    }

    [Theory]
    [MemberData(nameof(ConditionCounts))]
    public void First_order_needs_no_vector_Jacobian_product(int n)
    {
        var exact = Measure("zmagic-firstorder", "cagrad", n);
        Assert.Equal((n == 1 ? 1 : 2, n, 0), (exact.ForwardPassesPerStep, exact.BackwardPassesPerStep, exact.VjpsPerStep));
        var reuse = Measure("zmagic-firstorder-reuse", "cagrad", n);
        Assert.Equal((1, 1, 0), (reuse.ForwardPassesPerStep, reuse.BackwardPassesPerStep, reuse.VjpsPerStep));
    }

    [Fact]
    public void Bench_json_has_the_interface_fields()
    {
        var r = StepBenchmark.Run(_f.Denoiser, ToyCondition.Many(3, 1, 16), GuidanceMethods.Strategy("zmagic"), GuidanceMethods.Combiner("cagrad"),
            new StepBenchmarkOptions { Steps = 2, Warmup = 1 });
        using var doc = JsonDocument.Parse(r.ToJson());
        var root = doc.RootElement;
        Assert.Equal(JsonValueKind.Object, root.ValueKind);
        foreach (var key in new[] { "ms_per_step_median", "ms_per_step_mad", "ms_per_step_min", "ms_per_step_max", "peak_memory_mb", "managed_memory_mb", "resident_memory_mb", "combiner_ms_median", "combiner_fraction" })
            Assert.True(root.GetProperty(key).GetDouble() >= 0, key);
        Assert.True(root.GetProperty("ms_per_step_median").GetDouble() > 0);
        Assert.True(root.GetProperty("peak_memory_mb").GetDouble() > 0);
        // Where the time goes: each phase took time and none can exceed the slowest whole step.
        foreach (var key in new[] { "forward_ms_median", "backward_ms_median", "vjp_ms_median", "encoder_ms_median" })
        {
            double phase = root.GetProperty(key).GetDouble();
            Assert.True(phase > 0 && phase <= root.GetProperty("ms_per_step_max").GetDouble(), $"{key} = {phase}");
        }
        Assert.Equal(2, root.GetProperty("forward_passes_per_step").GetInt32());
        Assert.Equal(5, root.GetProperty("backward_passes_per_step").GetInt32());
        Assert.Equal(2, root.GetProperty("vjps_per_step").GetInt32());
        Assert.Equal(2, root.GetProperty("forward_items_per_step").GetInt32());
        Assert.Equal(5, root.GetProperty("backward_items_per_step").GetInt32());
        Assert.Equal(3, root.GetProperty("conditions").GetInt32());
        Assert.Equal(2, root.GetProperty("steps").GetInt32());
        Assert.Equal(2, root.GetProperty("ms_per_step").GetArrayLength());
        Assert.Equal(new long[] { 1, 1, 16, 16 }, root.GetProperty("sample_shape").EnumerateArray().Select(e => e.GetInt64()).ToArray());
        Assert.StartsWith("zmagic(", root.GetProperty("method").GetString());
        Assert.StartsWith("cagrad(", root.GetProperty("combiner").GetString());
        Assert.Single(JsonDocument.Parse(r.ToJson(indented: false)).RootElement.ToString().Split('\n'));
    }

    [Fact]
    public void Compare_alternates_cases_and_measures_each_K_times()
    {
        var conditions = ToyCondition.Many(2, 1, 16);
        var cases = new[]
        {
            new StepBenchmarkCase("v", GuidanceMethods.Strategy("vanilla"), GuidanceMethods.Combiner("sum"), conditions),
            new StepBenchmarkCase("z", GuidanceMethods.Strategy("zmagic-reuse"), GuidanceMethods.Combiner("pcgrad"), conditions),
        };
        var order = new List<string>();
        var results = StepBenchmark.Compare(_f.Denoiser, cases, new StepBenchmarkOptions { Steps = 3, Warmup = 0 }, line => order.Add(line.Split(':')[0]));
        Assert.Equal(new[] { "v", "z", "v", "z", "v", "z" }, order);
        Assert.All(results, r => Assert.Equal(3, r.MsPerStep.Length));
        Assert.Equal((1, 1), (results[0].ForwardPassesPerStep, results[0].BackwardPassesPerStep));
        Assert.Equal((1, 2), (results[1].ForwardPassesPerStep, results[1].BackwardPassesPerStep));
    }
}

/// <summary>Device handling of the benchmarks (the CUDA path exercised where only the CPU exists).</summary>
public class BenchmarkDeviceTests
{
    [Fact]
    public void Cpu_parses_and_synchronising_it_is_a_no_op()
    {
        var d = StepBenchmark.ParseDevice(" CPU ");
        Assert.Equal(DeviceType.CPU, d.type);
        StepBenchmark.Synchronize(d);
        StepBenchmark.Synchronize(null);
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("cuda:x")]
    [InlineData("")]
    public void Unknown_devices_are_refused_with_the_expected_forms(string device)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() => StepBenchmark.ParseDevice(device));
        if (device.Length > 0 && torch.cuda.is_available() == false) Assert.Contains(device.StartsWith("cuda", StringComparison.Ordinal) ? "CUDA" : "cpu, cuda or cuda:N", ex.Message);
    }

    [Fact]
    public void Cuda_is_refused_clearly_without_a_cuda_backend()
    {
        if (torch.cuda.is_available())
        {
            Assert.Equal(DeviceType.CUDA, StepBenchmark.ParseDevice("cuda:0").type);
            return;
        }
        var ex = Assert.Throws<ArgumentException>(() => StepBenchmark.ParseDevice("cuda"));
        Assert.Contains("CUDA TorchSharp backend", ex.Message);
    }

    [Fact]
    public void Unknown_methods_and_combiners_list_the_known_names()
    {
        Assert.Contains("zmagic-reuse", Assert.Throws<ArgumentException>(() => GuidanceMethods.Strategy("fast")).Message);
        Assert.Contains("cagrad-per-channel", Assert.Throws<ArgumentException>(() => GuidanceMethods.Combiner("avg")).Message);
        foreach (var m in GuidanceMethods.Methods) Assert.NotNull(GuidanceMethods.Strategy(m));
        foreach (var c in GuidanceMethods.Combiners) Assert.NotNull(GuidanceMethods.Combiner(c));
    }

    [Fact]
    public void Memory_snapshot_reads_resident_and_peak_memory()
    {
        var m = StepBenchmark.Memory();
        Assert.True(m.ResidentMb > 0 && m.PeakResidentMb >= m.ResidentMb && m.ManagedMb > 0, m.ToString());
    }
}
