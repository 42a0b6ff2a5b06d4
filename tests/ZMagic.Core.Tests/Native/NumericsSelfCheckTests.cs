using ZMagic.Core.Native;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Native;

/// <summary>
/// The numerics self-check: the probes pass on this machine in the configuration the product leaves in place, and the
/// check itself catches each kind of defect seen on other CPUs (non-finite values, run-to-run differences, wrong
/// values, reads of memory a kernel did not write) and routes around it.
/// </summary>
public class NumericsSelfCheckTests
{
    private static NumericsProbe Probe(string name, Func<Tensor[], Tensor> op) =>
        new(name, name, [[2, 3, 6, 6], [4, 3, 3, 3], [4]], op);

    private static Tensor Conv(Tensor[] t) => nn.functional.conv2d(t[0], t[1], t[2], padding: [1, 1]);

    [Fact]
    public void Every_probe_passes_after_EnsureHealthy_and_the_report_names_the_machine()
    {
        var healthy = NumericsSelfCheck.EnsureHealthy();
        Assert.True(healthy.Healthy, string.Join("\n", healthy.Failures.Select(f => f.Describe())));

        // The configuration EnsureHealthy left in place passes when checked again, probe by probe.
        var again = NumericsSelfCheck.Run(repeats: 2);
        Assert.All(again.Probes, p => Assert.True(p.Passed, p.Describe()));
        // With oneMKL pinned (the assembly's module initializer did it before any matrix product), no probe's output
        // depends on the address alignment of its input.
        Assert.All(again.Probes, p => Assert.True(p.AlignmentIndependent, $"{p.Operation}: depends on the input's alignment"));
        Assert.Equal(NumericsSelfCheck.Probes.Count, again.Probes.Count);
        Assert.False(string.IsNullOrWhiteSpace(again.Cpu));
        Assert.False(string.IsNullOrWhiteSpace(again.VectorIsa));
        Assert.True(again.Threads >= 1);
        // libtorch 2.10 CPU bundles oneDNN 3.x and exports the switch.
        Assert.NotNull(again.OneDnnEnabled);
        Assert.Matches(@"^\d+\.\d+", again.OneDnnVersion ?? "");
    }

    [Fact]
    public void The_probes_cover_every_layer_family_the_networks_use()
    {
        var ops = NumericsSelfCheck.Probes.Select(p => p.Operation).ToList();
        Assert.Contains(ops, o => o.StartsWith("conv2d", StringComparison.Ordinal) && o.Contains("w[2,2,3,3]"));   // tiny channels
        Assert.Contains(ops, o => o.Contains("s2 p0", StringComparison.Ordinal));                                   // strided, unpadded
        Assert.Contains(ops, o => o.Contains("groups", StringComparison.Ordinal));                                  // depthwise
        Assert.Contains(ops, o => o.StartsWith("conv_transpose2d", StringComparison.Ordinal));
        Assert.Contains(ops, o => o.StartsWith("linear", StringComparison.Ordinal));
        Assert.Contains(ops, o => o.StartsWith("group_norm", StringComparison.Ordinal));
        Assert.Contains(NumericsSelfCheck.Probes, p => p.Name.EndsWith("NHWC", StringComparison.Ordinal));
        Assert.Equal(ops.Count, ops.Distinct().Count());
    }

    [Fact]
    public void A_correct_operation_passes()
    {
        var r = Probe("conv", Conv).Evaluate(3);
        Assert.True(r.Passed, r.Describe());
        Assert.InRange(r.OutputError, 0, 1e-6);
        Assert.InRange(r.InputGradError, 0, 1e-6);
    }

    [Fact]
    public void A_non_finite_float32_result_is_caught()
    {
        var r = Probe("nan", t =>
        {
            var y = Conv(t);
            if (y.dtype != ScalarType.Float32) return y;
            var mask = zeros_like(y);
            mask[0, 0, 0, 0] = tensor(float.NaN);
            return y + mask;
        }).Evaluate(2);
        Assert.False(r.Finite);
        Assert.False(r.Passed);
        Assert.Contains("non-finite", r.Describe());
    }

    [Fact]
    public void A_result_that_changes_between_identical_runs_is_caught()
    {
        int calls = 0;
        var r = Probe("racy", t =>
        {
            var y = Conv(t);
            return y.dtype == ScalarType.Float32 ? y + 1e-7f * (Interlocked.Increment(ref calls) % 3) : y;
        }).Evaluate(3);
        Assert.False(r.Deterministic);
        Assert.False(r.Passed);
        Assert.Contains("differs between identical runs", r.Describe());
    }

    [Fact]
    public void An_output_that_depends_on_the_input_alignment_is_reported_without_failing_the_probe()
    {
        // Rounding that changes with the input's offset in its buffer (as oneMKL's GEMM did on a Zen 5): within float32
        // precision, so the probe passes, but the report says the results depend on alignment.
        var r = Probe("aligned", t =>
        {
            var y = Conv(t);
            return y.dtype == ScalarType.Float32 ? y + 1e-7f * (t[0].storage_offset() % 4) : y;
        }).Evaluate(2);
        Assert.True(r.Passed, r.Describe());
        Assert.False(r.AlignmentIndependent);
        Assert.True(Probe("conv", Conv).Evaluate(2).AlignmentIndependent);
    }

    [Fact]
    public void The_alignment_check_moves_the_input_to_every_4_byte_offset_and_keeps_values_and_layout()
    {
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 5, 5);
        var nhwc = NumericsSelfCheck.ToChannelsLast(x);
        for (int offset = 0; offset < NumericsProbe.AlignmentSpanBytes / sizeof(float); offset++)
        {
            var moved = NumericsProbe.AtOffset(x, offset);
            Assert.Equal(offset, moved.storage_offset());
            Assert.True(moved.equal(x).all().item<bool>());
            var movedNhwc = NumericsProbe.AtOffset(nhwc, offset);
            Assert.Equal(1, movedNhwc.stride(1));
            Assert.True(movedNhwc.equal(x).all().item<bool>());
        }
    }

    /// <summary>
    /// The defect found on an AMD EPYC (Zen 5): oneMKL's float32 GEMM rounded a 2-row product differently when its
    /// input was not 64-byte aligned (12 of 16 four-byte offsets, up to 1.9e-6 on the timestep MLP's 32->128 layer),
    /// and a tensor built on a pinned .NET array lies wherever the GC put that array, so two identical sampler runs
    /// differed in the last bits. The assembly's module initializer pins oneMKL first (as the CLI and the sampler do);
    /// then the product is the same wherever the input lies. Without the pin this fails on such a CPU.
    /// </summary>
    [Theory]
    [InlineData(2, 32, 128)]
    [InlineData(2, 128, 128)]
    [InlineData(3, 512, 512)]
    public void A_matrix_product_does_not_depend_on_where_its_input_lies(int rows, int inFeatures, int outFeatures)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(7, CPU);
        var w = randn([outFeatures, inFeatures], generator: gen);
        var x = randn([rows, inFeatures], generator: gen);
        var expected = nn.functional.linear(x, w);
        var values = x.data<float>().ToArray();
        for (int offset = 0; offset < 16; offset++)
        {
            // A pinned .NET array (torch.tensor copies into a new managed array and pins it) and a view into a libtorch buffer.
            var managed = tensor(values, [rows, inFeatures]);
            Assert.True(nn.functional.linear(managed, w).equal(expected).all().item<bool>(), $"pinned .NET array, try {offset}");
            var view = NumericsProbe.AtOffset(x, offset);
            Assert.True(nn.functional.linear(view, w).equal(expected).all().item<bool>(), $"input {4 * offset} bytes into its buffer");
        }
        if (Environment.GetEnvironmentVariable("MKL_CBWR") is not { Length: > 0 })
            Assert.Equal("auto, strict", LibTorchRuntime.MklReproducibility);
        Assert.NotEqual(MklModeChange.TooLate, NumericsSelfCheck.PinMklMode());
    }

    [Fact]
    public void A_wrong_input_gradient_is_caught_even_when_the_forward_is_right()
    {
        // Forward exact; backward scaled by 1.01 in float32 only (a straight-through trick: y + 0.01 (y - y.detach())).
        var r = Probe("bad-grad", t =>
        {
            var y = Conv(t);
            return y.dtype == ScalarType.Float32 ? y + 0.01f * (y - y.detach()) : y;
        }).Evaluate(2);
        Assert.True(r.OutputError < NumericsSelfCheck.Tolerance);
        Assert.True(r.InputGradError > NumericsSelfCheck.Tolerance, r.Describe());
        Assert.False(r.Passed);
    }

    [Fact]
    public void A_kernel_that_reads_memory_it_did_not_write_is_caught()
    {
        // torch.empty hands out whatever was freed last, usually a plausible leftover; while the check runs, new
        // buffers hold 3.4e38, so an operation that adds 1e-30 * (uninitialised memory) is off by ~3e8.
        var r = Probe("uninitialised", t =>
        {
            var y = Conv(t);
            return y.dtype == ScalarType.Float32 ? y + 1e-30f * empty_like(y) : y;
        }).Evaluate(3);
        Assert.True(r.OutputError > 1e3, r.Describe());
        Assert.False(r.Passed);
    }

    [Fact]
    public void While_perturbed_every_new_buffer_holds_a_huge_value_and_afterwards_not()
    {
        const long n = 1000;
        using (NativeAllocator.PerturbAllocations())
        {
            using var e = empty(n);
            Assert.True((e == 3.3961514e38f).all().item<bool>());
        }
        using (var scope = NewDisposeScope()) _ = zeros(n);  // leave zeros in a freed block of that size
        using var after = empty(n);
        Assert.False((after == 3.3961514e38f).all().item<bool>());
    }

    private static NumericsReport Report(bool healthy) => new("cpu", "isa", "3.7.1", 1, true,
        [new NumericsProbeResult("p", "conv2d x", healthy ? 1e-7 : 0.5, 1e-7, true, true)], [], TimeSpan.Zero);

    [Fact]
    public void Decide_keeps_a_healthy_configuration_untouched()
    {
        bool touched = false;
        var r = NumericsSelfCheck.Decide(() => Report(true), () => true, v => touched = true, v => touched = true);
        Assert.True(r.Healthy);
        Assert.Empty(r.Workarounds);
        Assert.False(touched);
    }

    [Fact]
    public void Decide_tries_channels_last_first_and_leaves_oneDNN_on_when_that_is_enough()
    {
        bool enabled = true, channelsLast = false;
        var r = NumericsSelfCheck.Decide(() => Report(channelsLast), () => enabled, v => { enabled = v; return true; }, v => channelsLast = v);
        Assert.True(enabled);
        Assert.True(channelsLast);
        Assert.True(r.Healthy);
        var note = Assert.Single(r.Workarounds);
        Assert.Contains("channels-last", note);
        Assert.Contains("conv2d x", note);
    }

    [Fact]
    public void Decide_switches_oneDNN_off_when_channels_last_does_not_help_and_says_so()
    {
        bool enabled = true, channelsLast = false;
        var r = NumericsSelfCheck.Decide(() => Report(!enabled), () => enabled, v => { enabled = v; return true; }, v => channelsLast = v);
        Assert.False(enabled);
        Assert.False(channelsLast);
        Assert.True(r.Healthy);
        var note = Assert.Single(r.Workarounds);
        Assert.Contains("oneDNN switched off", note);
        Assert.Contains("conv2d x", note);
    }

    [Fact]
    public void Decide_restores_everything_and_names_the_probes_when_nothing_helps()
    {
        bool enabled = true, channelsLast = false;
        var e = Assert.Throws<NumericsException>(() =>
            NumericsSelfCheck.Decide(() => Report(false), () => enabled, v => { enabled = v; return true; }, v => channelsLast = v));
        Assert.True(enabled);
        Assert.False(channelsLast);
        Assert.Contains("even without oneDNN", e.Message);
        Assert.Contains("conv2d x", e.Message);
        Assert.False(e.Report.Healthy);
    }

    [Fact]
    public void Decide_fails_with_a_message_when_oneDNN_is_not_in_use()
    {
        var e = Assert.Throws<NumericsException>(() => NumericsSelfCheck.Decide(() => Report(false), () => null, _ => false, _ => { }));
        Assert.Contains("no workaround is known", e.Message);
    }

    [Fact]
    public void An_unknown_policy_is_refused_by_name()
    {
        var e = Assert.Throws<ArgumentException>(() => NumericsSelfCheck.ApplyPolicy("sometimes"));
        Assert.Contains("'sometimes'", e.Message);
    }
}

/// <summary>
/// The channels-last route changes process-wide state, so it runs alone (after the parallel tests), and restores the
/// state it found.
/// </summary>
[CollectionDefinition(nameof(ProcessWideNumerics), DisableParallelization = true)]
public sealed class ProcessWideNumerics;

[Collection(nameof(ProcessWideNumerics))]
public class ChannelsLastRouteTests
{
    [Fact]
    public void On_the_channels_last_route_every_probe_passes_and_networks_compute_the_same_values()
    {
        bool initial = NumericsSelfCheck.ChannelsLastConvolutions;   // auto may have chosen it on this CPU already
        using var net = nn.Sequential(("conv1", nn.Conv2d(3, 16, 3, padding: 1)), ("act", nn.SiLU()), ("conv2", nn.Conv2d(16, 4, 1)));
        using var x = randn(2, 3, 20, 20, generator: new Generator(7));
        using var before = net.forward(x).detach();   // built here, not loaded: NCHW weights
        Assert.Equal(initial, NumericsSelfCheck.ApplyConvolutionLayout(net));   // default route: nothing to do
        try
        {
            NumericsSelfCheck.ApplyPolicy("channels-last");
            Assert.True(NumericsSelfCheck.ChannelsLastConvolutions);
            var report = NumericsSelfCheck.Run(repeats: 2);
            Assert.All(report.Probes, p => Assert.True(p.Passed, p.Describe()));

            Assert.True(NumericsSelfCheck.ApplyConvolutionLayout(net));
            foreach (var p in net.parameters().Where(p => p.dim() == 4)) Assert.Equal(1, p.stride(1));   // NHWC strides
            using var after = net.forward(x).detach();
            Assert.True(after.allclose(before, rtol: 1e-5, atol: 1e-6));
        }
        finally
        {
            typeof(NumericsSelfCheck).GetField("channelsLastConvolutions", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .SetValue(null, initial);
        }
    }
}
