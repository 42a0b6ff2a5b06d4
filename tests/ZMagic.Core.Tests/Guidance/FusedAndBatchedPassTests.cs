using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>
/// A small nonlinear denoiser (a fixed 3x3 convolution through tanh, a skip term and a timestep-dependent scale):
/// unlike the Gaussian bed its Jacobian depends on the input, so fused and batched passes are checked against the
/// per-condition ones where the linearisation is not trivially constant. Items never mix (batch-independent).
/// </summary>
internal sealed class TanhConvDenoiser : IDenoiser
{
    private readonly Tensor _w;

    public TanhConvDenoiser(int channels, int size, long seed)
    {
        using var g = new Generator((ulong)seed);
        _w = torch.randn(new long[] { channels, channels, 3, 3 }, ScalarType.Float64, generator: g) * 0.3;
        Channels = channels;
        SampleSize = size;
    }

    public NoiseSchedule Schedule { get; } = NoiseSchedule.Linear();
    public PredictionType Prediction => PredictionType.Epsilon;
    public int Channels { get; }
    public int SampleSize { get; }
    public bool LearnedSigma => false;

    public Tensor Forward(Tensor x, Tensor t) =>
        torch.tanh(nn.functional.conv2d(x, ZMagic.Core.Native.NumericsSelfCheck.ConvolutionWeight(_w.to(x.dtype)), padding: new long[] { 1, 1 })) * (1 + t.to(x.dtype).reshape(-1, 1, 1, 1) / 1000) + x * 0.2;
}

/// <summary>
/// Z-Magic's fused later conditions and the batched per-condition gradients of Vanilla and Z-Magic: results equal the
/// per-condition, unbatched passes within float tolerance, with the pass counts and items of docs/performance.md.
/// </summary>
public class FusedAndBatchedPassTests
{
    private const int T = 500, Next = 490;

    /// <summary>n conditions on a 2x6x6 sample: quadratic ones and a nonlinear (softplus) one, gradient-free step sizes.</summary>
    private static (IDenoiser Den, Tensor X, Tensor Noise, IGuidanceCondition[] Conds) Bed(int n, int batch, long seed, ScalarType dtype = ScalarType.Float32)
    {
        var den = new TanhConvDenoiser(2, 6, seed);
        using var g = new Generator((ulong)seed + 1);
        Tensor R(params long[] s) => torch.randn(s, ScalarType.Float64, generator: g).to(dtype);
        var x = R(batch, 2, 6, 6);
        var noise = R(batch, 2, 6, 6);
        var conds = new IGuidanceCondition[n];
        for (int i = 0; i < n; i++)
        {
            // Per-item targets ([B, ...]) so that a condition evaluated on one copy of a replicated batch must see its own items.
            var mask = R(2, 6, 6).abs() + 0.2;
            var target = R(batch, 2, 6, 6);
            IStepSizeRule rule = i % 2 == 0 ? new SqrtAlphaBarStepSize(0.3 + 0.1 * i) : new ConstantStepSize(0.2);
            conds[i] = i % 3 == 2
                ? new FuncCondition($"c{i}", x0 => nn.functional.softplus(mask * x0 - target).flatten(1).sum(1), rule)
                : new QuadraticCondition($"c{i}", mask, target, rule);
        }
        return (den, x, noise, conds);
    }

    private static (Tensor Next, GuidedStep Step, Dictionary<string, Tensor> Seen) Run(IGuidanceStrategy strategy, IDenoiser den, Tensor x, Tensor noise,
        IReadOnlyList<IGuidanceCondition> conds, IGradientCombiner? combiner = null, NonFinitePolicy policy = NonFinitePolicy.Fail)
    {
        var (step, seen) = StepHarness.Make(den, x, T, Next, new FreeDoMEtaStep(0.5), noise, conds, combiner, policy);
        var next = strategy.Step(step);
        return (next, step, seen);
    }

    public static TheoryData<int, ZMagicJacobian, ZMagicUpdateRule, ZMagicProposal, ScalarType> FusionCases()
    {
        var d = new TheoryData<int, ZMagicJacobian, ZMagicUpdateRule, ZMagicProposal, ScalarType>();
        foreach (int n in new[] { 2, 3, 5 })
            foreach (var j in new[] { ZMagicJacobian.ResearchCode, ZMagicJacobian.Full, ZMagicJacobian.FirstOrder })
                foreach (var r in new[] { ZMagicUpdateRule.Replacement, ZMagicUpdateRule.ResearchCode })
                    foreach (var p in new[] { ZMagicProposal.Exact, ZMagicProposal.ReuseFirstForward })
                        foreach (var t in new[] { ScalarType.Float32, ScalarType.Float64 })
                            d.Add(n, j, r, p, t);
        return d;
    }

    [Theory]
    [MemberData(nameof(FusionCases))]
    public void Fused_later_conditions_equal_the_per_condition_passes(int n, ZMagicJacobian jacobian, ZMagicUpdateRule rule, ZMagicProposal proposal, ScalarType dtype)
    {
        var (den, x, noise, conds) = Bed(n, 2, 100 + n, dtype);
        var options = new ZMagicOptions { Jacobian = jacobian, UpdateRule = rule, Proposal = proposal };
        var (fused, fs, fSeen) = Run(new ZMagicStrategy(options), den, x, noise, conds);
        var (split, ss, _) = Run(new ZMagicStrategy(options with { PerConditionGradients = true }), den, x, noise, conds);
        var what = $"n={n} {jacobian} {rule} {proposal} {dtype}: fused vs per-condition x_t'";
        TensorAssert.RelL2(fused, split, 1e-5, what);
        // In float64 the two agree to rounding elementwise: the fusion is exact algebra, not an approximation. (In float32
        // the Full Jacobian's large, partly cancelling Hessian terms leave elementwise differences of ~1e-4 relative.)
        if (dtype == ScalarType.Float64) TensorAssert.Close(fused, split, 1e-10, 1e-10, what + " (elementwise)");
        // The step really moved (the comparison is not between two base steps).
        Assert.True((split - fSeen["base"]).abs().max().to(ScalarType.Float64).item<double>() > 1e-4, "the guided step equals the base step");

        bool exact = proposal == ZMagicProposal.Exact, vjp = jacobian != ZMagicJacobian.FirstOrder;
        var fp = fs.Trace.Passes;
        var sp = ss.Trace.Passes;
        // Per-condition: exact 2 forwards, n backwards (1 with the reused forward: the later ones are encoder-only), n-1 VJPs.
        Assert.Equal((exact ? 2 : 1, exact ? n : 1, vjp ? n - 1 : 0, n), (sp.DenoiserForwards, sp.DenoiserBackwards, sp.Vjps, sp.EncoderCalls));
        if (n >= 3)
        {
            // Fused: one backward at the proposal and one VJP for all later conditions, every energy evaluated once.
            Assert.Equal((exact ? 2 : 1, exact ? 2 : 1, vjp ? 1 : 0, n), (fp.DenoiserForwards, fp.DenoiserBackwards, fp.Vjps, fp.EncoderCalls));
            Assert.True(fSeen.ContainsKey("task_fused") && !fSeen.ContainsKey("d/c1"));
            Assert.Null(fs.Trace.GradientCosines);
            Assert.NotNull(ss.Trace.GradientCosines);
            foreach (var c in fs.Trace.Conditions.Skip(1))
                Assert.True(double.IsFinite(c.Energy) && double.IsFinite(c.StepSize) && double.IsNaN(c.GradientNorm) && !c.Skipped, $"{c.Name}: fused trace entry");
            Assert.True(double.IsFinite(fs.Trace.Conditions[0].GradientNorm), "the anchor keeps its gradient norm");
            Assert.All(ss.Trace.Conditions, c => Assert.True(double.IsFinite(c.GradientNorm), $"{c.Name}: per-condition norm"));
        }
        else
        {
            Assert.Equal((sp.DenoiserForwards, sp.DenoiserBackwards, sp.Vjps), (fp.DenoiserForwards, fp.DenoiserBackwards, fp.Vjps));
        }
    }

    [Theory]
    [InlineData(2, ZMagicJacobian.ResearchCode, ZMagicUpdateRule.Replacement)]
    [InlineData(2, ZMagicJacobian.ResearchCode, ZMagicUpdateRule.ResearchCode)]
    [InlineData(3, ZMagicJacobian.ResearchCode, ZMagicUpdateRule.ResearchCode)]
    [InlineData(3, ZMagicJacobian.ResearchCode, ZMagicUpdateRule.Replacement)]
    public void Fusion_covers_every_condition_when_anchored_on_the_base_step(int n, ZMagicJacobian jacobian, ZMagicUpdateRule rule)
    {
        // No anchor task: the fused task alone stands for n terms (the research rule must still triple it).
        var (den, x, noise, conds) = Bed(n, 1, 200 + n);
        var options = new ZMagicOptions { AnchorOnBaseStep = true, Jacobian = jacobian, UpdateRule = rule };
        var (fused, fs, _) = Run(new ZMagicStrategy(options), den, x, noise, conds);
        var (split, ss, _) = Run(new ZMagicStrategy(options with { PerConditionGradients = true }), den, x, noise, conds);
        TensorAssert.RelL2(fused, split, 1e-5, $"n={n} {rule} anchored on the base step");
        Assert.Equal((2, 1, 1), (fs.Trace.Passes.DenoiserForwards, fs.Trace.Passes.DenoiserBackwards, fs.Trace.Passes.Vjps));
        Assert.Equal((2, n, n), (ss.Trace.Passes.DenoiserForwards, ss.Trace.Passes.DenoiserBackwards, ss.Trace.Passes.Vjps));
    }

    [Fact]
    public void Conflict_combiners_gradient_rules_and_chaining_keep_the_per_condition_passes()
    {
        var (den, x, noise, conds) = Bed(3, 1, 300);
        var (_, cagrad, _) = Run(new ZMagicStrategy(), den, x, noise, conds, new CAGradCombiner(0.5));
        Assert.Equal((2, 3, 2), (cagrad.Trace.Passes.DenoiserForwards, cagrad.Trace.Passes.DenoiserBackwards, cagrad.Trace.Passes.Vjps));
        var relative = conds.Select((c, i) => i == 2 ? new FuncCondition(c.Name, c.Energy, new NormRelativeStepSize(0.02)) : c).ToArray();
        var (_, rel, _) = Run(new ZMagicStrategy(), den, x, noise, relative);
        Assert.Equal((2, 3, 2), (rel.Trace.Passes.DenoiserForwards, rel.Trace.Passes.DenoiserBackwards, rel.Trace.Passes.Vjps));
        var (_, chain, _) = Run(new ZMagicStrategy(new ZMagicOptions { Chaining = ZMagicChaining.Chain }), den, x, noise, conds);
        Assert.Equal((3, 3, 2), (chain.Trace.Passes.DenoiserForwards, chain.Trace.Passes.DenoiserBackwards, chain.Trace.Passes.Vjps));
    }

    /// <summary>A user combiner that sums its tasks and declares (or not) <see cref="IGradientCombiner.IsLinear"/>.</summary>
    private sealed class UserSumCombiner(bool linear) : IGradientCombiner
    {
        public string Name => linear ? "user-linear" : "user-opaque";
        public bool IsLinear => linear;
        public int Calls { get; private set; }

        public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
        {
            Calls++;
            var sum = taskGradients[0].clone();
            foreach (var t in taskGradients.Skip(1)) sum.add_(t);
            return sum;
        }
    }

    [Fact]
    public void Fusion_follows_the_combiners_declared_linearity_not_its_type()
    {
        var (den, x, noise, conds) = Bed(3, 2, 350, ScalarType.Float64);
        var linear = new UserSumCombiner(linear: true);
        var opaque = new UserSumCombiner(linear: false);

        // Vanilla: a declared-linear user combiner takes FreeDoM's single backward, as the built-in sum does.
        var (vl, vls, _) = Run(new VanillaStrategy(), den, x, noise, conds, linear);
        var (vo, vos, _) = Run(new VanillaStrategy(), den, x, noise, conds, opaque);
        var (vs, vss, _) = Run(new VanillaStrategy(), den, x, noise, conds, SumCombiner.Instance);
        Assert.Equal((1, 1), (vls.Trace.Passes.DenoiserForwards, vls.Trace.Passes.DenoiserBackwards));
        Assert.Equal((vss.Trace.Passes.DenoiserForwards, vss.Trace.Passes.DenoiserBackwards), (vls.Trace.Passes.DenoiserForwards, vls.Trace.Passes.DenoiserBackwards));
        Assert.Equal((1, 3), (vos.Trace.Passes.DenoiserForwards, vos.Trace.Passes.DenoiserBackwards));
        TensorAssert.Close(vl, vo, 1e-10, 1e-10, "vanilla: fused vs per-condition with the same (summing) combiner");
        TensorAssert.Close(vl, vs, 1e-12, 1e-12, "vanilla: user linear combiner vs SumCombiner");

        // Z-Magic: one backward at the proposal and one VJP for the two later conditions, against one each.
        var (zl, zls, zlSeen) = Run(new ZMagicStrategy(), den, x, noise, conds, linear);
        var (zo, zos, zoSeen) = Run(new ZMagicStrategy(), den, x, noise, conds, opaque);
        Assert.Equal((2, 2, 1), (zls.Trace.Passes.DenoiserForwards, zls.Trace.Passes.DenoiserBackwards, zls.Trace.Passes.Vjps));
        Assert.Equal((2, 3, 2), (zos.Trace.Passes.DenoiserForwards, zos.Trace.Passes.DenoiserBackwards, zos.Trace.Passes.Vjps));
        Assert.True(zlSeen.ContainsKey("task_fused") && !zoSeen.ContainsKey("task_fused"));
        TensorAssert.Close(zl, zo, 1e-10, 1e-10, "zmagic: fused vs per-condition with the same (summing) combiner");
        // The opaque combiner saw the individual tasks (per batch item: it is not elementwise).
        Assert.True(opaque.Calls >= 2, $"the non-linear combiner was called {opaque.Calls} times");
    }

    private static FuncCondition NanGradient() => new("bad", x0 => (x0.flatten(1).sum(1) * 0).sqrt(), new ConstantStepSize(0.1));

    [Theory]
    [InlineData(ZMagicJacobian.ResearchCode, ZMagicProposal.Exact)]
    [InlineData(ZMagicJacobian.Full, ZMagicProposal.Exact)]
    [InlineData(ZMagicJacobian.FirstOrder, ZMagicProposal.Exact)]
    [InlineData(ZMagicJacobian.ResearchCode, ZMagicProposal.ReuseFirstForward)]
    public void A_non_finite_fused_gradient_falls_back_and_names_or_skips_the_condition(ZMagicJacobian jacobian, ZMagicProposal proposal)
    {
        var (den, x, noise, conds) = Bed(3, 2, 400, ScalarType.Float64);
        var options = new ZMagicOptions { Jacobian = jacobian, Proposal = proposal };
        var withBad = new[] { conds[0], conds[1], NanGradient(), conds[2] };
        var ex = Assert.Throws<GuidanceException>(() => Run(new ZMagicStrategy(options), den, x, noise, withBad));
        Assert.Equal("bad", ex.Condition);
        Assert.Contains("'bad'", ex.Message);

        var (skipped, st, _) = Run(new ZMagicStrategy(options), den, x, noise, withBad, policy: NonFinitePolicy.SkipCondition);
        var (clean, _, _) = Run(new ZMagicStrategy(options), den, x, noise, conds);
        TensorAssert.Close(skipped, clean, 1e-12, 1e-10, "skipping the bad condition equals leaving it out");
        Assert.True(st.Trace.Conditions.Single(c => c.Name == "bad").Skipped);
        Assert.All(st.Trace.Conditions.Where(c => c.Name != "bad"), c => Assert.False(c.Skipped));
        // Every energy once; the fused attempt plus the per-condition fallback on the retained graphs (no new forward).
        bool exact = proposal == ZMagicProposal.Exact, vjp = jacobian != ZMagicJacobian.FirstOrder;
        var p = st.Trace.Passes;
        Assert.Equal(4, p.EncoderCalls);
        Assert.Equal(exact ? 2 : 1, p.DenoiserForwards);
        Assert.Equal(exact ? 1 + 1 + 3 : 1, p.DenoiserBackwards);
        // The fused VJP only runs when the fused gradient is finite; here it is not, so only the per-condition VJPs of c1 and c2.
        Assert.Equal(vjp ? 2 : 0, p.Vjps);
    }

    public static TheoryData<int, int, ZMagicJacobian> BatchCases()
    {
        var d = new TheoryData<int, int, ZMagicJacobian>();
        foreach (int n in new[] { 2, 3, 5 })
            foreach (int b in new[] { 1, 2 })
                foreach (var j in new[] { ZMagicJacobian.ResearchCode, ZMagicJacobian.Full })
                    d.Add(n, b, j);
        return d;
    }

    [Theory]
    [MemberData(nameof(BatchCases))]
    public void Zmagic_batched_gradients_at_the_proposal_equal_the_unbatched_ones(int n, int batch, ZMagicJacobian jacobian)
    {
        var (den, x, noise, conds) = Bed(n, batch, 500 + n * 10 + batch);
        var combiner = new CAGradCombiner(0.5);
        var options = new ZMagicOptions { Jacobian = jacobian };
        var (plain, ps, pSeen) = Run(new ZMagicStrategy(options), den, x, noise, conds, combiner);
        var (batched, bs, bSeen) = Run(new ZMagicStrategy(options with { BatchConditionGradients = true }), den, x, noise, conds, combiner);
        TensorAssert.RelL2(batched, plain, 1e-5, $"n={n} B={batch} {jacobian}: batched vs unbatched x_t'");
        foreach (var c in conds.Skip(1))
        {
            Assert.Equal(pSeen["proposal/" + c.Name].shape, bSeen["proposal/" + c.Name].shape);
            TensorAssert.RelL2(bSeen["gh/" + c.Name], pSeen["gh/" + c.Name], 1e-5, $"gh/{c.Name}");
            TensorAssert.RelL2(bSeen["d/" + c.Name], pSeen["d/" + c.Name], 1e-5, $"d/{c.Name}");
        }
        for (int k = 0; k < n; k++)
        {
            var (pc, bc) = (ps.Trace.Conditions[k], bs.Trace.Conditions[k]);
            Assert.True(Math.Abs(pc.Energy - bc.Energy) <= 1e-5 * (1 + Math.Abs(pc.Energy)), $"{pc.Name}: energy {bc.Energy:R} vs {pc.Energy:R}");
            Assert.True(Math.Abs(pc.GradientNorm - bc.GradientNorm) <= 1e-5 * (1 + pc.GradientNorm), $"{pc.Name}: gradient norm {bc.GradientNorm:R} vs {pc.GradientNorm:R}");
        }
        var p = ps.Trace.Passes;
        var q = bs.Trace.Passes;
        Assert.Equal((2, n, n - 1, 2 * batch, (2 * n - 1) * batch), (p.DenoiserForwards, p.DenoiserBackwards, p.Vjps, p.DenoiserForwardItems, p.BackwardItems));
        if (n >= 3)
        {
            // One forward and one backward of the proposal replicated n - 1 times; the n - 1 VJPs stay per condition.
            Assert.Equal((2, 2, n - 1, n * batch, (1 + 2 * (n - 1)) * batch),
                (q.DenoiserForwards, q.DenoiserBackwards, q.Vjps, q.DenoiserForwardItems, q.BackwardItems));
        }
        else
        {
            Assert.Equal((p.DenoiserForwards, p.DenoiserBackwards, p.Vjps, p.DenoiserForwardItems), (q.DenoiserForwards, q.DenoiserBackwards, q.Vjps, q.DenoiserForwardItems));
        }
    }

    public static TheoryData<int, int> VanillaBatchCases() => new() { { 2, 1 }, { 2, 2 }, { 3, 1 }, { 3, 2 }, { 5, 2 } };

    [Theory]
    [MemberData(nameof(VanillaBatchCases))]
    public void Vanilla_batched_gradients_equal_the_unbatched_ones(int n, int batch)
    {
        var (den, x, noise, conds) = Bed(n, batch, 600 + n * 10 + batch);
        foreach (var (combiner, options) in new (IGradientCombiner, VanillaOptions)[]
                 {
                     (new CAGradCombiner(0.5), new VanillaOptions()),
                     (SumCombiner.Instance, new VanillaOptions { PerConditionGradients = true }),
                 })
        {
            var (plain, ps, pSeen) = Run(new VanillaStrategy(options), den, x, noise, conds, combiner);
            var (batched, bs, bSeen) = Run(new VanillaStrategy(options with { BatchConditionGradients = true }), den, x, noise, conds, combiner);
            TensorAssert.RelL2(batched, plain, 1e-5, $"n={n} B={batch} {combiner.Name}: batched vs unbatched x_t'");
            TensorAssert.RelL2(bSeen["base"], pSeen["base"], 1e-6, "base step from copy 0");
            foreach (var c in conds) TensorAssert.RelL2(bSeen["g/" + c.Name], pSeen["g/" + c.Name], 1e-5, $"g/{c.Name}");
            Assert.Equal((1, n, batch, n * batch), (ps.Trace.Passes.DenoiserForwards, ps.Trace.Passes.DenoiserBackwards, ps.Trace.Passes.DenoiserForwardItems, ps.Trace.Passes.BackwardItems));
            Assert.Equal((1, 1, n * batch, n * batch), (bs.Trace.Passes.DenoiserForwards, bs.Trace.Passes.DenoiserBackwards, bs.Trace.Passes.DenoiserForwardItems, bs.Trace.Passes.BackwardItems));
            Assert.NotNull(bs.Trace.GradientCosines);
        }
    }

    [Fact]
    public void Vanilla_batching_is_ignored_where_the_fused_backward_applies()
    {
        var (den, x, noise, conds) = Bed(3, 2, 700);
        var (fused, fs, _) = Run(new VanillaStrategy(new VanillaOptions { BatchConditionGradients = true }), den, x, noise, conds);
        var (plain, _, _) = Run(new VanillaStrategy(), den, x, noise, conds);
        Assert.True(fused.eq(plain).all().item<bool>());
        Assert.Equal((1, 1, 2, 2), (fs.Trace.Passes.DenoiserForwards, fs.Trace.Passes.DenoiserBackwards, fs.Trace.Passes.DenoiserForwardItems, fs.Trace.Passes.BackwardItems));
    }

    [Theory]
    [InlineData("vanilla")]
    [InlineData("zmagic")]
    public void Batched_non_finite_gradients_name_or_skip_their_condition(string strategy)
    {
        var (den, x, noise, conds) = Bed(3, 2, 800, ScalarType.Float64);
        IGuidanceStrategy Make() => strategy == "vanilla"
            ? new VanillaStrategy(new VanillaOptions { BatchConditionGradients = true })
            : new ZMagicStrategy(new ZMagicOptions { BatchConditionGradients = true });
        var combiner = new CAGradCombiner(0.5);
        var withBad = new[] { conds[0], conds[1], NanGradient(), conds[2] };
        var ex = Assert.Throws<GuidanceException>(() => Run(Make(), den, x, noise, withBad, combiner));
        Assert.Equal("bad", ex.Condition);
        var (skipped, st, _) = Run(Make(), den, x, noise, withBad, combiner, NonFinitePolicy.SkipCondition);
        var (clean, _, _) = Run(strategy == "vanilla" ? new VanillaStrategy() : new ZMagicStrategy(), den, x, noise, conds, combiner);
        TensorAssert.Close(skipped, clean, 1e-10, 1e-8, $"{strategy}: skipping the bad copy equals leaving the condition out");
        Assert.True(st.Trace.Conditions.Single(c => c.Name == "bad").Skipped);
    }

    [Fact]
    public void Batched_sampling_runs_through_the_sampler_and_matches_the_unbatched_run()
    {
        var (den, _, _, conds) = Bed(3, 2, 900);
        var sampler = new ConditionalSampler(den);
        var opts = new SamplerOptions { Steps = 4, Seed = 5, BatchSize = 2, Combiner = new CAGradCombiner(0.5) };
        using var plain = sampler.Sample(conds, opts with { Strategy = new ZMagicStrategy() });
        using var batched = sampler.Sample(conds, opts with { Strategy = new ZMagicStrategy(new ZMagicOptions { BatchConditionGradients = true }) });
        TensorAssert.RelL2(batched.Images, plain.Images, 1e-4, "4-step run, batched vs unbatched");
        Assert.All(batched.Trace.Steps, s => Assert.Equal(2 + 2 * 2, s.Passes.DenoiserForwardItems));
        Assert.Contains(",batched)", batched.Trace.Strategy, StringComparison.Ordinal);
    }
}
