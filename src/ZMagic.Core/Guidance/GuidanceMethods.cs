namespace ZMagic.Core.Guidance;

/// <summary>
/// The one catalog of named guidance methods and combiners: <c>zmagic generate</c>, <c>zmagic bench</c>, the demo,
/// the dependency-injection generator and the benchmark suites all build their strategies and combiners here, so a
/// name means the same configuration everywhere.
/// </summary>
public static class GuidanceMethods
{
    /// <summary>
    /// Method names: unguided; vanilla (FreeDoM); zmagic (exact: research-code Jacobian, star chaining, one shared
    /// proposal forward); zmagic-full (with the Hessian of the first energy); zmagic-firstorder (J = I, still a second
    /// forward at the proposal); zmagic-reuse (reuse the first forward at the proposal); zmagic-firstorder-reuse (both
    /// shortcuts: one forward, one backward through the denoiser). With the sum combiner and gradient-free step sizes
    /// the Z-Magic methods fuse their later conditions (one backward at the proposal, one VJP); *-percondition turns
    /// that off (vanilla-percondition: one backward per condition instead of FreeDoM's fused one); *-batched takes the
    /// per-condition gradients from one forward and one backward of the sample (vanilla) or proposal (zmagic)
    /// replicated along the batch dimension.
    /// </summary>
    public static IReadOnlyList<string> Methods { get; } =
        ["unguided", "vanilla", "zmagic", "zmagic-full", "zmagic-firstorder", "zmagic-reuse", "zmagic-firstorder-reuse",
         "vanilla-percondition", "vanilla-batched", "zmagic-percondition", "zmagic-batched", "zmagic-full-percondition"];

    /// <summary>Combiner names: sum, cagrad (whole tensor), cagrad-per-channel, pcgrad, mgda.</summary>
    public static IReadOnlyList<string> Combiners { get; } = ["sum", "cagrad", "cagrad-per-channel", "pcgrad", "mgda"];

    /// <summary>The strategy for a method name (case-insensitive).</summary>
    /// <exception cref="ArgumentException">Unknown name (the message lists the known ones).</exception>
    public static IGuidanceStrategy Strategy(string method)
    {
        ArgumentNullException.ThrowIfNull(method);
        return method.Trim().ToLowerInvariant() switch
        {
            "unguided" => UnguidedStrategy.Instance,
            "vanilla" or "freedom" => new VanillaStrategy(),
            "zmagic" or "zmagic-exact" => new ZMagicStrategy(new ZMagicOptions()),
            "zmagic-full" => new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.Full }),
            "zmagic-firstorder" => new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder }),
            "zmagic-reuse" => new ZMagicStrategy(new ZMagicOptions { Proposal = ZMagicProposal.ReuseFirstForward }),
            "zmagic-firstorder-reuse" => new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder, Proposal = ZMagicProposal.ReuseFirstForward }),
            "vanilla-percondition" => new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }),
            "vanilla-batched" => new VanillaStrategy(new VanillaOptions { PerConditionGradients = true, BatchConditionGradients = true }),
            "zmagic-percondition" => new ZMagicStrategy(new ZMagicOptions { PerConditionGradients = true }),
            "zmagic-batched" => new ZMagicStrategy(new ZMagicOptions { PerConditionGradients = true, BatchConditionGradients = true }),
            "zmagic-full-percondition" => new ZMagicStrategy(new ZMagicOptions { Jacobian = ZMagicJacobian.Full, PerConditionGradients = true }),
            _ => throw new ArgumentException($"Unknown method '{method}'. Known methods: {string.Join(", ", Methods)}.", nameof(method)),
        };
    }

    /// <summary>The combiner for a name (case-insensitive); <paramref name="cagradC"/> is CAGrad's c (the CAGrad ones only).</summary>
    /// <exception cref="ArgumentException">Unknown name (the message lists the known ones).</exception>
    public static IGradientCombiner Combiner(string combiner, double cagradC = 0.5)
    {
        ArgumentNullException.ThrowIfNull(combiner);
        return combiner.Trim().ToLowerInvariant() switch
        {
            "sum" => SumCombiner.Instance,
            "cagrad" => new CAGradCombiner(cagradC),
            "cagrad-per-channel" => new CAGradCombiner(cagradC, perChannel: true),
            "pcgrad" => new PCGradCombiner(),
            "mgda" => new MGDACombiner(),
            _ => throw new ArgumentException($"Unknown combiner '{combiner}'. Known combiners: {string.Join(", ", Combiners)}.", nameof(combiner)),
        };
    }
}
