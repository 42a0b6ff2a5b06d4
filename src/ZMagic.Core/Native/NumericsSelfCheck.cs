using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Native;

/// <summary>
/// A numerics self-check of the libtorch kernels that guided sampling relies on: convolution, transposed
/// convolution, linear and group norm, forward and input-gradient, at the layer shapes of the backbones and encoders,
/// in float32 against a float64 reference (which runs ATen's own kernels, never oneDNN), each repeated to expose
/// non-determinism. <see cref="Run"/> only measures; <see cref="EnsureHealthy"/> also routes around what is broken.
/// </summary>
/// <remarks>
/// Why: oneDNN's JIT kernels are chosen per CPU; a defective one (docs/reliability.md, "Numerics on every CPU") gives
/// wrong or non-finite input gradients on some CPUs only, and guidance then steers by garbage. The check takes about a
/// second. It runs in the calling thread; libtorch's thread count is left as it is.
/// </remarks>
public static class NumericsSelfCheck
{
    /// <summary>Relative L2 error above which a float32 result counts as wrong (float32 rounding is ~1e-6).</summary>
    public const double Tolerance = 1e-4;

    private static readonly object gate = new();
    private static volatile bool channelsLastConvolutions;
    private static NumericsReport? healthyReport;
    private static MklModeChange? mklMode;

    /// <summary>The probes: one per layer family and shape class that the built-in networks run through oneDNN or oneMKL.</summary>
    public static IReadOnlyList<NumericsProbe> Probes { get; } = BuildProbes();

    /// <summary>
    /// Runs every probe <paramref name="repeats"/> times with oneDNN in its current state and reports each one; changes
    /// nothing.
    /// </summary>
    public static NumericsReport Run(int repeats = 3, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 2);
        var sw = Stopwatch.StartNew();
        var results = new List<NumericsProbeResult>(Probes.Count);
        foreach (var probe in Probes)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(probe.Name);
            results.Add(probe.Evaluate(repeats));
        }
        return new NumericsReport(LibTorchRuntime.CpuDescription, LibTorchRuntime.VectorIsa, LibTorchRuntime.OneDnnVersion,
            LibTorchRuntime.Threads, LibTorchRuntime.OneDnnEnabled, results, [], sw.Elapsed)
        {
            MklReproducibility = LibTorchRuntime.MklReproducibility,
        };
    }

    /// <summary>
    /// Runs the check once per process (later calls return the first answer) and, when a probe fails, routes around
    /// the kernels, narrowest first, checking again after each: convolutions in channels-last layout
    /// (<see cref="ChannelsLastConvolutions"/>), then ATen's use of oneDNN switched off
    /// (<see cref="LibTorchRuntime.TrySetOneDnnEnabled"/>). Returns the report of the configuration left in place; its
    /// <see cref="NumericsReport.Workarounds"/> says which workaround was taken and what failed before it.
    /// </summary>
    /// <exception cref="NumericsException">Probes still fail on every route: this libtorch computes wrong numbers on
    /// this CPU and no workaround is known; the message names the probes.</exception>
    public static NumericsReport EnsureHealthy(IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        PinMklMode();
        lock (gate)
        {
            return healthyReport ??= Decide(() => Run(3, progress, cancellationToken),
                () => LibTorchRuntime.OneDnnEnabled, LibTorchRuntime.TrySetOneDnnEnabled, v => channelsLastConvolutions = v);
        }
    }

    /// <summary>
    /// Asks oneMKL, once per process, for matrix products that do not depend on memory alignment
    /// (<see cref="LibTorchRuntime.TryMakeMklAlignmentIndependent"/>) and returns the outcome; later calls return the
    /// first outcome. <see cref="EnsureHealthy"/> and <see cref="ApplyPolicy"/> call it first of all. oneMKL accepts the
    /// mode only before its first computation, so an application that wants it for its own tensor work calls this (or
    /// one of those) before any.
    /// </summary>
    public static MklModeChange PinMklMode()
    {
        lock (gate) return mklMode ??= LibTorchRuntime.TryMakeMklAlignmentIndependent();
    }

    /// <summary>
    /// Applies a numerics policy by name, as the <c>zmagic</c> command does with its <c>ZMAGIC_ONEDNN</c> variable:
    /// <c>auto</c> (or null/empty) runs <see cref="EnsureHealthy"/>; <c>on</c> trusts the kernels (no check);
    /// <c>channels-last</c> runs every convolution channels-last; <c>off</c> switches oneDNN off. The last two skip the
    /// check, for machines where the answer is known, and for running a test suite on each route.
    /// </summary>
    /// <returns>The check's report for <c>auto</c>; null otherwise.</returns>
    /// <exception cref="ArgumentException">Another value.</exception>
    public static NumericsReport? ApplyPolicy(string? policy, CancellationToken cancellationToken = default)
    {
        PinMklMode();
        switch (string.IsNullOrWhiteSpace(policy) ? "auto" : policy.Trim().ToLowerInvariant())
        {
            case "auto":
                return EnsureHealthy(cancellationToken: cancellationToken);
            case "on":
                return null;
            case "channels-last":
                channelsLastConvolutions = true;
                return null;
            case "off":
                LibTorchRuntime.TrySetOneDnnEnabled(false);
                return null;
            default:
                throw new ArgumentException($"'{policy}' is not a numerics policy; expected auto, on, channels-last or off.", nameof(policy));
        }
    }

    /// <summary>
    /// True when <see cref="EnsureHealthy"/> found oneDNN's direct convolution kernels wrong on this CPU and its
    /// brgemm kernels right: networks then keep their convolution weights in channels-last (NHWC) memory, which makes
    /// ATen run every convolution through the latter (<see cref="ApplyConvolutionLayout"/>). Same speed on the CPUs
    /// measured; see docs/reliability.md.
    /// </summary>
    public static bool ChannelsLastConvolutions => channelsLastConvolutions;

    /// <summary>
    /// Puts every 4-d parameter of <paramref name="module"/> into channels-last memory when
    /// <see cref="ChannelsLastConvolutions"/> is set (values unchanged, in place, idempotent); otherwise does nothing.
    /// The checkpoint loaders (<see cref="ZMagic.Core.IO.StateDictLoader"/>, the digits and face-api loaders) and the
    /// backbones' first forward call it; call it for a network built another way, and
    /// <see cref="ConvolutionWeight"/> for a weight used with a functional convolution.
    /// </summary>
    /// <returns>True when the layout was applied.</returns>
    public static bool ApplyConvolutionLayout(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        if (!channelsLastConvolutions) return false;
        using var noGrad = no_grad();
        foreach (var p in module.parameters())
            if (p.dim() == 4 && !IsChannelsLast(p)) p.set_(ToChannelsLast(p));
        return true;
    }

    /// <summary>
    /// For a convolution weight held outside a module (a functional <c>conv2d</c>): the weight in channels-last
    /// memory when <see cref="ChannelsLastConvolutions"/> is set (a new tensor, same values), otherwise the weight
    /// itself.
    /// </summary>
    public static Tensor ConvolutionWeight(Tensor weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return channelsLastConvolutions && weight.dim() == 4 && !IsChannelsLast(weight) ? ToChannelsLast(weight) : weight;
    }

    internal static Tensor ToChannelsLast(Tensor t) => t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2);

    internal static bool IsChannelsLast(Tensor t) => t.stride(1) == 1 && t.shape[1] > 1;

    /// <summary>
    /// The decision of <see cref="EnsureHealthy"/>, on injected measurements, from the narrowest workaround to the
    /// widest: check; if something fails, run convolutions through oneDNN's channels-last (brgemm) kernels and check
    /// again; if that fails too, switch oneDNN off and check again; if nothing helps, restore and throw.
    /// </summary>
    internal static NumericsReport Decide(Func<NumericsReport> run, Func<bool?> oneDnnEnabled, Func<bool, bool> setOneDnn,
        Action<bool> setChannelsLast)
    {
        var first = run();
        if (first.Healthy) return first;
        var failedAsIs = string.Join("; ", first.Failures.Select(f => f.Describe()));
        var elapsed = first.Elapsed;
        if (oneDnnEnabled() != true)
            throw new NumericsException(first, "libtorch computes wrong numbers on this CPU and oneDNN is not in use, so no "
                + $"workaround is known (see docs/reliability.md): {failedAsIs}");

        setChannelsLast(true);
        var channelsLast = run();
        elapsed += channelsLast.Elapsed;
        if (channelsLast.Healthy)
            return channelsLast with
            {
                Workarounds = ["convolutions run in channels-last layout (oneDNN's brgemm kernels) for this process; with "
                    + $"the default layout: {failedAsIs}"],
                Elapsed = elapsed,
            };
        setChannelsLast(false);

        if (setOneDnn(false))
        {
            var second = run();
            elapsed += second.Elapsed;
            if (second.Healthy)
                return second with
                {
                    Workarounds = [$"oneDNN switched off for this process (ATen's own kernels instead); with it on: {failedAsIs}"],
                    Elapsed = elapsed,
                };
            setOneDnn(true);
            throw new NumericsException(second, "libtorch computes wrong numbers on this CPU even without oneDNN (see "
                + "docs/reliability.md): " + string.Join("; ", second.Failures.Select(f => f.Describe())));
        }
        throw new NumericsException(channelsLast, "libtorch computes wrong numbers on this CPU and oneDNN cannot be switched "
            + $"off here (see docs/reliability.md): {failedAsIs}");
    }

    /// <summary>The report of the last successful <see cref="EnsureHealthy"/> in this process, or null.</summary>
    public static NumericsReport? LastHealthyReport
    {
        get { lock (gate) return healthyReport; }
    }

    private static List<NumericsProbe> BuildProbes()
    {
        var list = new List<NumericsProbe>();
        void Conv(string name, int b, int cin, int cout, int hw, int k, int stride, int pad) =>
            list.Add(NumericsProbe.Conv2d(name, b, cin, cout, hw, k, stride, pad));
        // Tiny channel counts (fewer than one 8/16-lane block: the padded-channel paths of the blocked kernels), as in
        // the tests' small UNets, at batch 2 and 4 (batched per-condition passes replicate the batch).
        Conv("conv3x3 tiny c2->2 b2", 2, 2, 2, 6, 3, 1, 1);
        Conv("conv3x3 tiny c2->2 b4", 4, 2, 2, 6, 3, 1, 1);
        Conv("conv6x6 tiny c1->2 b2", 2, 1, 2, 6, 6, 1, 1);
        Conv("conv3x3 c3->32 b2", 2, 3, 32, 16, 3, 1, 1);
        // A kernel as large as its input (a classifier's last layer): oneDNN runs it as an inner product.
        Conv("conv8x8 full c2->32 b32", 32, 2, 32, 8, 8, 1, 0);
        Conv("conv3x3 c32->32 b2", 2, 32, 32, 8, 3, 1, 1);
        // Stems and output layers of the small UNets: one side of the convolution narrower than a channel block.
        Conv("conv3x3 c1->32 b2 (stem)", 2, 1, 32, 8, 3, 1, 1);
        Conv("conv3x3 c32->1 b2 (output)", 2, 32, 1, 8, 3, 1, 1);
        Conv("conv3x3 c32->3 b2 (output)", 2, 32, 3, 16, 3, 1, 1);
        Conv("conv3x3 c32->6 b2 (learned sigma)", 2, 32, 6, 8, 3, 1, 1);
        Conv("conv3x3 c16->4 b2 (latent output)", 2, 16, 4, 16, 3, 1, 1);
        Conv("conv3x3 s2 p0 c3->32 b1", 1, 3, 32, 33, 3, 2, 0);
        // Patch embeddings (CLIP): kernel = stride.
        Conv("conv8x8 s8 c3->64 b2 (patches)", 2, 3, 64, 32, 8, 8, 0);
        // Backbone widths (DDPM/ADM UNets, SD): stride 1, the stride-2 downsample without padding, 1x1 shortcuts.
        Conv("conv3x3 c128->128 b1", 1, 128, 128, 16, 3, 1, 1);
        Conv("conv3x3 c128->256 b2", 2, 128, 256, 8, 3, 1, 1);
        Conv("conv3x3 s2 c128->128 b1", 1, 128, 128, 17, 3, 2, 0);
        Conv("conv1x1 c256->512 b2", 2, 256, 512, 8, 1, 1, 0);
        Conv("conv3x3 c3->128 b1 (stem)", 1, 3, 128, 32, 3, 1, 1);
        // Encoders: ResNet stems (7x7 s2), IR-SE 1x1 stride-2 shortcuts, depthwise (MobileFaceNet).
        Conv("conv7x7 s2 c3->64 b1", 1, 3, 64, 32, 7, 2, 3);
        Conv("conv1x1 s2 c128->256 b1", 1, 128, 256, 14, 1, 2, 0);
        Conv("conv3x3 p0 c32->32 b1", 1, 32, 32, 37, 3, 1, 0);
        list.Add(NumericsProbe.DepthwiseConv2d("conv3x3 depthwise c64 b2", 2, 64, 16, 1, 1));
        list.Add(NumericsProbe.DepthwiseConv2d("conv3x3 depthwise s2 p0 c128 b1", 1, 128, 15, 2, 0));
        list.Add(NumericsProbe.DepthwiseConv2d("conv3x3 depthwise c128 b1", 1, 128, 28, 1, 1));
        // Channels-last inputs (the face-api networks' NHWC tensors) select oneDNN's brgemm kernels instead.
        list.Add(NumericsProbe.Conv2d("conv3x3 p0 c32->32 b1 NHWC", 1, 32, 32, 37, 3, 1, 0).ChannelsLast());
        list.Add(NumericsProbe.Conv2d("conv1x1 s2 c128->256 b1 NHWC", 1, 128, 256, 14, 1, 2, 0).ChannelsLast());
        list.Add(NumericsProbe.DepthwiseConv2d("conv3x3 depthwise p0 c128 b1 NHWC", 1, 128, 16, 1, 0).ChannelsLast());
        list.Add(NumericsProbe.ConvTranspose2d("conv_transpose4x4 s2 c16->8 b2", 2, 16, 8, 8));
        list.Add(NumericsProbe.Linear("linear 512->512 b2", 2, 512, 512));
        // oneMKL's GEMM: the UNets' timestep MLP (a few rows) and attention's batched products.
        list.Add(NumericsProbe.Linear("linear 32->128 b2 (timestep MLP)", 2, 32, 128));
        list.Add(NumericsProbe.MatMul("matmul [2,64,32]x[2,32,64] (attention)", 2, 64, 32));
        list.Add(NumericsProbe.GroupNorm("group_norm 32 groups c128 b2", 2, 128, 8));
        return list;
    }
}

/// <summary>One probe of <see cref="NumericsSelfCheck"/>: an operation at one shape.</summary>
public sealed class NumericsProbe
{
    private readonly long[][] inputShapes;
    private readonly Func<Tensor[], Tensor> op;

    private bool channelsLast;  // set once, by ChannelsLast()

    internal NumericsProbe(string name, string operation, long[][] inputShapes, Func<Tensor[], Tensor> op)
    {
        Name = name;
        Operation = operation;
        this.inputShapes = inputShapes;
        this.op = op;
    }

    /// <summary>A short name with the shape class, e.g. "conv3x3 c128->128 b1".</summary>
    public string Name { get; }

    /// <summary>The operation and its exact shapes, e.g. "conv2d x[1,128,16,16] w[128,128,3,3] s1 p1".</summary>
    public string Operation { get; }

    internal NumericsProbe ChannelsLast() =>
        new(Name, Operation + " channels-last", inputShapes, op) { channelsLast = true };

    internal static NumericsProbe Conv2d(string name, int b, int cin, int cout, int hw, int k, int stride, int pad) =>
        new(name, $"conv2d x[{b},{cin},{hw},{hw}] w[{cout},{cin},{k},{k}] s{stride} p{pad}",
            [[b, cin, hw, hw], [cout, cin, k, k], [cout]],
            t => nn.functional.conv2d(t[0], t[1], t[2], strides: [stride, stride], padding: [pad, pad]));

    internal static NumericsProbe DepthwiseConv2d(string name, int b, int c, int hw, int stride, int pad) =>
        new(name, $"conv2d x[{b},{c},{hw},{hw}] w[{c},1,3,3] s{stride} p{pad} groups {c}",
            [[b, c, hw, hw], [c, 1, 3, 3], [c]],
            t => nn.functional.conv2d(t[0], t[1], t[2], strides: [stride, stride], padding: [pad, pad], groups: c));

    internal static NumericsProbe ConvTranspose2d(string name, int b, int cin, int cout, int hw) =>
        new(name, $"conv_transpose2d x[{b},{cin},{hw},{hw}] w[{cin},{cout},4,4] s2 p1",
            [[b, cin, hw, hw], [cin, cout, 4, 4], [cout]],
            t => nn.functional.conv_transpose2d(t[0], t[1], t[2], strides: [2, 2], padding: [1, 1]));

    internal static NumericsProbe Linear(string name, int b, int inF, int outF) =>
        new(name, $"linear x[{b},{inF}] w[{outF},{inF}]", [[b, inF], [outF, inF], [outF]],
            t => nn.functional.linear(t[0], t[1], t[2]));

    internal static NumericsProbe MatMul(string name, int b, int n, int d) =>
        new(name, $"matmul x[{b},{n},{d}] y[{b},{d},{n}]", [[b, n, d], [b, d, n]], t => t[0].matmul(t[1]));

    internal static NumericsProbe GroupNorm(string name, int b, int c, int hw) =>
        new(name, $"group_norm x[{b},{c},{hw},{hw}] 32 groups", [[b, c, hw, hw], [c], [c]],
            t => nn.functional.group_norm(t[0], 32, t[1], t[2], 1e-6));

    /// <summary>Runs the probe <paramref name="repeats"/> times in float32 and once in float64.</summary>
    public NumericsProbeResult Evaluate(int repeats)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(1234, CPU);
        var inputs64 = inputShapes.Select((s, i) => randn(s, float64, CPU, generator: gen) * (i == 0 ? 1.0 : 1.0 / Math.Sqrt(Math.Max(1, s.Skip(1).Aggregate(1L, (a, d) => a * d))))).ToArray();
        var (refOut, refGrad, gradOut64) = ForwardAndInputGrad(inputs64, null);

        double worstOut = 0, worstGrad = 0;
        bool finite = true, deterministic = true;
        Tensor? firstOut = null, firstGrad = null;
        var gradOut32 = Layout(gradOut64.to_type(float32));
        for (int r = 0; r < repeats; r++)
        {
            // Fresh float32 copies each time, and every buffer allocated meanwhile filled with 3.4e38 (glibc's malloc
            // perturbation): a kernel that reads memory it did not write (an accumulator it did not zero, the padding
            // of a channel block) then gives a huge error instead of a plausible one.
            Tensor out32, grad32, inferred;
            using (NativeAllocator.PerturbAllocations())
            {
                var inputs32 = inputs64.Select(t => Layout(t.to_type(float32))).ToArray();
                (out32, grad32, _) = ForwardAndInputGrad(inputs32, gradOut32);
                // Inference (no autograd) can select other kernels than training: check its output as well.
                using (no_grad()) inferred = op(inputs32);
            }
            finite = finite && out32.isfinite().all().item<bool>() && grad32.isfinite().all().item<bool>()
                && inferred.isfinite().all().item<bool>();
            worstOut = Math.Max(worstOut, Math.Max(RelativeError(out32, refOut), RelativeError(inferred, refOut)));
            worstGrad = Math.Max(worstGrad, RelativeError(grad32, refGrad));
            if (firstOut is null) { firstOut = out32; firstGrad = grad32; }
            else deterministic = deterministic && SameBits(out32, firstOut) && SameBits(grad32, firstGrad!);
        }
        return new NumericsProbeResult(Name, Operation, worstOut, worstGrad, finite, deterministic)
        {
            AlignmentIndependent = SameAtEveryAlignment(inputs64.Select(t => Layout(t.to_type(float32))).ToArray()),
        };
    }

    /// <summary>The alignment check moves the first input to every 4-byte offset within this many bytes.</summary>
    public const int AlignmentSpanBytes = 64;

    // The inference output with the first input moved to each 4-byte offset within 64 bytes of a fresh buffer (libtorch
    // allocates 64-byte aligned; pinned .NET arrays and views into larger tensors are not) must equal, bit for bit, the
    // output at offset 0.
    private bool SameAtEveryAlignment(Tensor[] inputs)
    {
        using var noGrad = no_grad();
        var reference = op([AtOffset(inputs[0], 0), .. inputs.Skip(1)]);
        for (int offset = 1; offset < AlignmentSpanBytes / sizeof(float); offset++)
            if (!SameBits(op([AtOffset(inputs[0], offset), .. inputs.Skip(1)]), reference)) return false;
        return true;
    }

    // A copy of x (same strides: contiguous or channels-last) that starts `offset` elements into a new buffer.
    internal static Tensor AtOffset(Tensor x, int offset)
    {
        var buffer = zeros(x.numel() + AlignmentSpanBytes / sizeof(float), x.dtype, x.device).narrow(0, offset, x.numel());
        if (x.dim() == 4 && NumericsSelfCheck.IsChannelsLast(x))
        {
            var nhwc = buffer.view(x.shape[0], x.shape[2], x.shape[3], x.shape[1]);
            nhwc.copy_(x.permute(0, 2, 3, 1));
            return nhwc.permute(0, 3, 1, 2);
        }
        var view = buffer.view(x.shape);
        view.copy_(x);
        return view;
    }

    private (Tensor Output, Tensor InputGrad, Tensor GradOutput) ForwardAndInputGrad(Tensor[] inputs, Tensor? gradOutput)
    {
        var x = inputs[0].detach().requires_grad_(true);
        using var enable = enable_grad();
        var y = op([x, .. inputs.Skip(1)]);
        var gy = gradOutput ?? randn(y.shape, y.dtype, CPU, generator: new Generator(4321, CPU));
        var gx = autograd.grad([y], [x], [gy], retain_graph: false)[0];
        return (y.detach(), gx.detach(), gy);
    }

    // NHWC strides (what PyTorch calls channels_last) for the 4-d tensors of a channels-last probe, and for every
    // probe while the process runs its convolutions channels-last (as the networks then do).
    private Tensor Layout(Tensor t) =>
        (channelsLast || NumericsSelfCheck.ChannelsLastConvolutions) && t.dim() == 4 ? NumericsSelfCheck.ToChannelsLast(t) : t.contiguous();

    private static bool SameBits(Tensor a, Tensor b) =>
        a.data<float>().ToArray().AsSpan().SequenceEqual(b.data<float>().ToArray());

    private static double RelativeError(Tensor got, Tensor reference)
    {
        var g = got.to_type(float64);
        double num = (g - reference).norm().item<double>();
        double den = reference.norm().item<double>();
        if (double.IsNaN(num) || double.IsInfinity(num)) return double.PositiveInfinity;
        return den > 0 ? num / den : num;
    }
}

/// <summary>The outcome of one <see cref="NumericsProbe"/>.</summary>
/// <param name="Name">The probe's short name.</param>
/// <param name="Operation">The operation and its shapes.</param>
/// <param name="OutputError">Worst relative L2 error of the float32 output against float64, over the repeats.</param>
/// <param name="InputGradError">Worst relative L2 error of the float32 input gradient against float64.</param>
/// <param name="Finite">Every float32 output and gradient was finite.</param>
/// <param name="Deterministic">Every repeat gave the same bits.</param>
public sealed record NumericsProbeResult(string Name, string Operation, double OutputError, double InputGradError, bool Finite, bool Deterministic)
{
    /// <summary>
    /// The output did not change, bit for bit, when the first input was moved to another address alignment (each
    /// 4-byte offset within 64 bytes). Not part of <see cref="Passed"/>: a dependence rounds differently, within float32
    /// precision, but makes runs irreproducible when a tensor lives in pinned .NET memory; see
    /// <see cref="LibTorchRuntime.TryMakeMklAlignmentIndependent"/>.
    /// </summary>
    public bool AlignmentIndependent { get; init; } = true;

    /// <summary>Finite, deterministic and within <see cref="NumericsSelfCheck.Tolerance"/> forward and backward.</summary>
    public bool Passed => Finite && Deterministic && OutputError <= NumericsSelfCheck.Tolerance && InputGradError <= NumericsSelfCheck.Tolerance;

    /// <summary>One line: what failed and by how much.</summary>
    public string Describe()
    {
        var what = new List<string>();
        if (!Finite) what.Add("non-finite values");
        if (!Deterministic) what.Add("differs between identical runs");
        if (OutputError > NumericsSelfCheck.Tolerance) what.Add($"forward rel. error {OutputError:G3}");
        if (InputGradError > NumericsSelfCheck.Tolerance) what.Add($"input-gradient rel. error {InputGradError:G3}");
        return $"{Operation}: {(what.Count == 0 ? "ok" : string.Join(", ", what))}";
    }
}

/// <summary>What <see cref="NumericsSelfCheck"/> found.</summary>
/// <param name="Cpu">CPU vendor and model.</param>
/// <param name="VectorIsa">The widest vector ISA available.</param>
/// <param name="OneDnnVersion">The oneDNN version inside libtorch, or null.</param>
/// <param name="Threads">libtorch's intra-op threads.</param>
/// <param name="OneDnnEnabled">Whether ATen routes to oneDNN (null: unknown).</param>
/// <param name="Probes">Every probe's result.</param>
/// <param name="Workarounds">The workaround taken to pass and what failed without it (empty when none was needed).</param>
/// <param name="Elapsed">Time taken.</param>
public sealed record NumericsReport(string Cpu, string VectorIsa, string? OneDnnVersion, int Threads, bool? OneDnnEnabled,
    IReadOnlyList<NumericsProbeResult> Probes, IReadOnlyList<string> Workarounds, TimeSpan Elapsed)
{
    /// <summary>Every probe passed.</summary>
    public bool Healthy => Probes.All(p => p.Passed);

    /// <summary>The probes that failed.</summary>
    public IEnumerable<NumericsProbeResult> Failures => Probes.Where(p => !p.Passed);

    /// <summary>oneMKL's reproducibility mode during the check (<see cref="LibTorchRuntime.MklReproducibility"/>).</summary>
    public string? MklReproducibility { get; init; }

    /// <summary>The probes whose output depended on the input's memory alignment (reproducibility, not correctness).</summary>
    public IEnumerable<NumericsProbeResult> AlignmentDependent => Probes.Where(p => !p.AlignmentIndependent);
}

/// <summary>libtorch computes wrong numbers on this machine and no workaround helped.</summary>
public sealed class NumericsException : Exception
{
    /// <summary>Creates the exception.</summary>
    public NumericsException(NumericsReport report, string message) : base(message) => Report = report;

    /// <summary>The failing check's report.</summary>
    public NumericsReport Report { get; }
}
