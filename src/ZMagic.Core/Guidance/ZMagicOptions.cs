namespace ZMagic.Core.Guidance;

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
