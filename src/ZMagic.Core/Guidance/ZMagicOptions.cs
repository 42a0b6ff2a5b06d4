namespace ZMagic.Core.Guidance;

/// <summary>What the Jacobian J = d proposal / d x_t of Z-Magic's pull-back contains.</summary>
public enum ZMagicJacobian
{
    /// <summary>
    /// As the research code: the sampler step and the denoiser, but not the Hessian of the first energy (g1 is
    /// taken without create_graph). One vector-Jacobian product per later condition. The default.
    /// </summary>
    ResearchCode,
    /// <summary>The paper's formula: J also contains <c>-rho_1 Hessian(E_1)</c> (g1 with create_graph; double backward).</summary>
    Full,
    /// <summary>First-order shortcut: J = identity, <c>d_k = gh_k</c>; no vector-Jacobian product.</summary>
    FirstOrder,
}

/// <summary>How three or more conditions are chained.</summary>
public enum ZMagicChaining
{
    /// <summary>Every later condition is evaluated at the proposal of the first condition (c1->c2, c1->c3). The default.</summary>
    Star,
    /// <summary>
    /// Each later condition is evaluated at the previous condition's proposal (c1->c2->c3): the proposal is moved by
    /// each evaluated condition's own gradient at it, <c>p_{k+1} = p_k - rho_k gh_k</c>. Every pull-back goes through
    /// the first step (gh treated as constants, as in <see cref="ZMagicJacobian.ResearchCode"/>).
    /// </summary>
    Chain,
}

/// <summary>How the combined update is applied.</summary>
public enum ZMagicUpdateRule
{
    /// <summary>The paper's reading: <c>x_t' = S(x_t) - u</c>, the combined update u replacing the individual terms. The default.</summary>
    Replacement,
    /// <summary>
    /// The research code's rule (for parity): the individual terms are subtracted once into the sequential state,
    /// then again together with the combined update: <c>x_t' = S(x_t) - 2 sum_k D_k - u</c>.
    /// </summary>
    ResearchCode,
}

/// <summary>Where later conditions get their noise prediction at the proposal.</summary>
public enum ZMagicProposal
{
    /// <summary>A second denoiser forward at the proposal, at the same t (the method as published). The default.</summary>
    Exact,
    /// <summary>
    /// Cheaper: reuse the first call's eps at the proposal, <c>x0(p) = (p - sqrt(1 - abar) eps(x_t)) / sqrt(abar)</c>
    /// (one forward; the later gradients then only pass through the encoders and the pull-back).
    /// </summary>
    ReuseFirstForward,
}

/// <summary>Options of <see cref="ZMagicStrategy"/>.</summary>
public sealed record ZMagicOptions
{
    /// <summary>What the pull-back's Jacobian contains.</summary>
    public ZMagicJacobian Jacobian { get; init; } = ZMagicJacobian.ResearchCode;

    /// <summary>Chaining of three or more conditions.</summary>
    public ZMagicChaining Chaining { get; init; } = ZMagicChaining.Star;

    /// <summary>How the combined update is applied.</summary>
    public ZMagicUpdateRule UpdateRule { get; init; } = ZMagicUpdateRule.Replacement;

    /// <summary>Second denoiser forward at the proposal, or reuse of the first.</summary>
    public ZMagicProposal Proposal { get; init; } = ZMagicProposal.Exact;

    /// <summary>
    /// Research-code parity for three or more conditions under star chaining: each later condition after the first
    /// builds its proposal from the base step with its own fresh noise draw (<see cref="GuidedStep.DrawNoise"/>), as
    /// the research code's separate branches do. Costs one denoiser forward per later condition instead of one
    /// shared forward. Off by default.
    /// </summary>
    public bool BranchNoise { get; init; }

    /// <summary>
    /// Anchor the sequence on the base step itself instead of on the first condition: the proposal is S(x_t) and every
    /// condition is evaluated there and pulled back through it. This is how Z-Magic runs on Stable Diffusion, where
    /// the text prompt acts through classifier-free guidance inside S (its CFG step is the first "condition's"
    /// proposal) and style and content are the later conditions. Off by default.
    /// </summary>
    public bool AnchorOnBaseStep { get; init; }

    /// <summary>
    /// Always compute each later condition's gradient at the proposal and its pull-back separately, so that the trace
    /// carries per-condition gradient norms and the pairwise cosines. When false (default), a step whose combiner is the
    /// plain sum (<see cref="IGradientCombiner.IsLinear"/>), whose later conditions' step-size rules ignore the gradient and whose later conditions share one
    /// proposal (star chaining, no branch noise) takes ONE backward at the proposal and ONE vector-Jacobian product for
    /// all later conditions together: <c>sum_k rho_k d_k = J^T grad_p sum_k rho_k E_k</c>, exact because the pull-back
    /// is linear. Exact Z-Magic then costs 2 forwards + 3 backward passes for any n &gt;= 2 instead of 2 + (2n - 1).
    /// </summary>
    public bool PerConditionGradients { get; init; }

    /// <summary>
    /// When the later conditions' gradients are needed one by one (a conflict combiner such as CAGrad, gradient-based
    /// step sizes, or <see cref="PerConditionGradients"/>) and they share one exact proposal, take them from ONE forward
    /// of the proposal replicated n - 1 times along the batch dimension ([(n-1)*B, ...]; later condition j is evaluated
    /// on copy j) and ONE backward, instead of one forward and n - 1 backwards. The n - 1 pull-backs stay separate
    /// (batching them would need the first forward replicated too). Results equal the unbatched path within float
    /// tolerance. Meant for devices where a call's fixed cost dominates (GPUs at batch 1); on a CPU a batch-K pass costs
    /// about K passes (measured slower even on the 32x32 net), and the proposal graph's memory grows (n - 1)-fold. Off
    /// by default.
    /// </summary>
    public bool BatchConditionGradients { get; init; }

    /// <summary>
    /// Rejects combinations that <see cref="ZMagicStrategy"/> would silently ignore, naming both options and why.
    /// <see cref="ZMagicStrategy"/> calls it in its constructor, so bad options fail before any step runs:
    /// <list type="bullet">
    /// <item><see cref="BranchNoise"/> with <see cref="ZMagicChaining.Chain"/>: a chained condition is evaluated at the
    /// previous condition's proposal, so no branch draws its own noise.</item>
    /// <item><see cref="ZMagicJacobian.Full"/> with <see cref="AnchorOnBaseStep"/>: without an anchor condition there is
    /// no first energy whose Hessian the Jacobian could contain (it equals <see cref="ZMagicJacobian.ResearchCode"/>).</item>
    /// <item><see cref="BatchConditionGradients"/> with <see cref="ZMagicProposal.ReuseFirstForward"/>: there is no
    /// forward at the proposal to batch.</item>
    /// <item><see cref="BatchConditionGradients"/> with <see cref="ZMagicChaining.Chain"/> or <see cref="BranchNoise"/>:
    /// batching needs one proposal shared by every later condition.</item>
    /// <item>An enum value outside its type (e.g. an integer cast).</item>
    /// </list>
    /// </summary>
    /// <exception cref="ArgumentException">The first conflict found; the message names both options.</exception>
    public void Validate()
    {
        const string n = nameof(ZMagicOptions);
        Defined(Jacobian, nameof(Jacobian));
        Defined(Chaining, nameof(Chaining));
        Defined(UpdateRule, nameof(UpdateRule));
        Defined(Proposal, nameof(Proposal));
        if (BranchNoise && Chaining == ZMagicChaining.Chain)
            throw new ArgumentException($"{n}.{nameof(BranchNoise)} conflicts with {n}.{nameof(Chaining)} = {nameof(ZMagicChaining.Chain)}: "
                                        + "chained conditions are evaluated at the previous condition's proposal, so no branch would draw its own noise. "
                                        + "Use star chaining with branch noise, or chain without it.");
        if (Jacobian == ZMagicJacobian.Full && AnchorOnBaseStep)
            throw new ArgumentException($"{n}.{nameof(Jacobian)} = {nameof(ZMagicJacobian.Full)} conflicts with {n}.{nameof(AnchorOnBaseStep)}: "
                                        + "anchored on the base step there is no first energy whose Hessian the Jacobian could contain, so Full would run as "
                                        + $"{nameof(ZMagicJacobian.ResearchCode)}. Use {nameof(ZMagicJacobian.ResearchCode)} (or {nameof(ZMagicJacobian.FirstOrder)}).");
        if (BatchConditionGradients && Proposal == ZMagicProposal.ReuseFirstForward)
            throw new ArgumentException($"{n}.{nameof(BatchConditionGradients)} conflicts with {n}.{nameof(Proposal)} = {nameof(ZMagicProposal.ReuseFirstForward)}: "
                                        + "batching replicates the denoiser forward at the proposal, and reusing the first forward takes none.");
        if (BatchConditionGradients && Chaining == ZMagicChaining.Chain)
            throw new ArgumentException($"{n}.{nameof(BatchConditionGradients)} conflicts with {n}.{nameof(Chaining)} = {nameof(ZMagicChaining.Chain)}: "
                                        + "batching needs one proposal shared by every later condition, and chaining gives each its own.");
        if (BatchConditionGradients && BranchNoise)
            throw new ArgumentException($"{n}.{nameof(BatchConditionGradients)} conflicts with {n}.{nameof(BranchNoise)}: "
                                        + "batching needs one proposal shared by every later condition, and branch noise gives each its own.");
    }

    private static void Defined<T>(T value, string name) where T : struct, Enum
    {
        if (!Enum.IsDefined(value))
            throw new ArgumentException($"{nameof(ZMagicOptions)}.{name} = {value} is not a {typeof(T).Name} value (known: {string.Join(", ", Enum.GetNames<T>())}).");
    }

    /// <summary>Everything as the research code runs it (research Jacobian, star, research update rule, branch noise).</summary>
    public static ZMagicOptions ResearchCodeParity { get; } = new()
    {
        Jacobian = ZMagicJacobian.ResearchCode,
        Chaining = ZMagicChaining.Star,
        UpdateRule = ZMagicUpdateRule.ResearchCode,
        Proposal = ZMagicProposal.Exact,
        BranchNoise = true,
    };
}
