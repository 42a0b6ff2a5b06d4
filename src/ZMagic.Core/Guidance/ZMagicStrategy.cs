using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Z-Magic's sequential conditioning (Deng et al., CVPR 2025): the first active condition proposes a guided step,
/// later conditions are evaluated at that proposal (same t) and their gradients are pulled back to x_t by one
/// vector-Jacobian product each (the "Hessian trick"); the task gradients are combined by the step's combiner.
/// </summary>
/// <remarks>
/// <para>For conditions c1..cn (active ones, in the given order):
/// g1 = grad_{x_t} E1(x0(x_t)); proposal p = S(x_t) - rho1 g1; gh_k = grad_p E_k(x0(p)) with eps(p, t);
/// d_k = J^T gh_k; tasks D = {rho1 g1, rho_k d_k}; x_t' = S(x_t) - combiner(D) (or the research rule).</para>
/// <para>Passes per step with n active conditions (star chaining, one shared proposal), per-condition form:
/// Exact proposal + ResearchCode/Full Jacobian: 2 forwards, n backwards + (n - 1) VJPs = 2n - 1 backward passes;
/// ReuseFirstForward: 1 forward, 1 backward + (n - 1) VJPs through the denoiser (the later gradients pass through the
/// encoders only); FirstOrder Jacobian: no VJPs. Chain chaining and branch noise need one forward per later condition.
/// A single active condition costs 1 forward + 1 backward and gives S(x_t) - rho1 g1.</para>
/// <para>Fused form (the default where it applies: a linear combiner (<see cref="IGradientCombiner.IsLinear"/>, e.g. the sum), gradient-free step sizes of the later conditions, one
/// shared proposal, two or more later conditions; see <see cref="ZMagicOptions.PerConditionGradients"/>): the pull-back
/// is linear, so <c>sum_k rho_k d_k = J^T grad_p(sum_k rho_k E_k)</c> takes one backward at the proposal and one VJP
/// whatever n: exact 2 forwards + 3 backward passes (1 VJP); ReuseFirstForward 1 + 2 (1 VJP); FirstOrder 2 + 2.
/// Both update rules stay exact (with the sum, each is a fixed multiple of the summed tasks). A non-finite fused result
/// falls back to the per-condition form on the retained graphs, so that the offending condition is named or skipped.
/// Later conditions then carry energies and step sizes but no gradient norms in the trace, and no cosines.</para>
/// <para>Batched form (<see cref="ZMagicOptions.BatchConditionGradients"/>, exact shared proposal, conflict combiners
/// or gradient-based step sizes): the later gradients at the proposal come from one forward and one backward of the
/// proposal replicated n - 1 times along the batch; the n - 1 VJPs stay separate.</para>
/// <para>Intermediates passed to <see cref="GuidedStep.Inspect"/>: eps, x0, base, g/NAME, proposal/NAME,
/// eps_proposal/NAME, x0_proposal/NAME, gh/NAME, d/NAME, task/NAME (per-condition form), gh_fused and task_fused
/// (fused form: <c>sum_k rho_k gh_k</c> and <c>sum_k rho_k d_k</c> of the later conditions), sequential, update,
/// next.</para>
/// </remarks>
public sealed class ZMagicStrategy : IGuidanceStrategy
{
    /// <summary>Creates the strategy.</summary>
    /// <exception cref="ArgumentException">Conflicting options (see <see cref="ZMagicOptions.Validate"/>).</exception>
    public ZMagicStrategy(ZMagicOptions? options = null)
    {
        Options = options ?? new ZMagicOptions();
        Options.Validate();
    }

    /// <summary>The options.</summary>
    public ZMagicOptions Options { get; }

    /// <inheritdoc />
    public string Name => $"zmagic({Options.Jacobian},{Options.Chaining},{Options.UpdateRule},{Options.Proposal}{(Options.BranchNoise ? ",branch-noise" : "")}"
                          + $"{(Options.PerConditionGradients ? ",per-condition" : "")}{(Options.BatchConditionGradients ? ",batched" : "")})";

    /// <inheritdoc />
    public Tensor Step(GuidedStep step)
    {
        ArgumentNullException.ThrowIfNull(step);
        var parts = new StepParts(step);
        var active = parts.Conditions.Active;
        if (active.Count == 0) return parts.Unguided();
        using var gradMode = torch.enable_grad();
        bool vjp = Options.Jacobian != ZMagicJacobian.FirstOrder, hessian = Options.Jacobian == ZMagicJacobian.Full;

        // 1. eps(x_t), x0(x_t) and the base step S(x_t), kept in the graph of x_t when the pull-back differentiates it.
        var xt = EvaluationPoint.AtXt(parts, copies: 1);
        var at = xt.Estimate(parts.Recorder);
        var baseGraph = vjp ? step.Sampler.Step(xt.Leaf, xt.X0, xt.Eps, step.AlphaBar, step.AlphaBarNext, step.Noise) : null;
        var baseStep = baseGraph?.detach() ?? step.Sampler.Step(step.X, at.X0, at.Eps, step.AlphaBar, step.AlphaBarNext, step.Noise);
        parts.Recorder.Inspect("base", baseStep);

        // 2. The anchor: g1 = grad_{x_t} E_1(x0(x_t)) and rho_1 of the first active condition that stays finite, task
        //    rho_1 g1 (none when anchored on the base step: every condition is then a later one).
        var tasks = new TaskList();
        var anchor = Options.AnchorOnBaseStep
            ? ZMagicAnchor.None(active, baseStep)
            : ZMagicAnchor.Find(parts, at, xt, active, hessian, tasks);
        if (anchor is null) return baseStep;

        // 3. The proposal p = S(x_t) - rho_1 g1, and the pull-back d = J^T gh with J = d(S(x_t)) / d x_t (research
        //    code), d(S(x_t) - rho_1 g1) / d x_t (the paper, with the Hessian of E_1) or the identity (first order).
        var proposals = new ZMagicProposals(parts, Options, at, baseStep, anchor);
        var jacobianOf = !vjp ? null : hessian && anchor.G1 is { } g1 ? baseGraph! - PerItem.Times(g1, anchor.Rho1) : baseGraph;
        var pullBack = new PullBack(parts.Denoiser, xt.Leaf, jacobianOf);

        // 4. The later conditions at the proposal: gh_k = grad_p E_k(x0(p)), d_k = J^T gh_k, tasks rho_k d_k, by the
        //    plan chosen once (fused: one backward and one pull-back of sum_k rho_k E_k; batched; per condition).
        var plan = PassPlans.Choose(anchor.Later, parts, Options.PerConditionGradients || !proposals.Shared, Options.BatchConditionGradients, fuseFrom: 2);
        LaterTasks(parts, at, plan, anchor.Later, proposals, pullBack, tasks);

        // 5. The update u = combiner(D); x_t' = S(x_t) - u, or the research code's S(x_t) - 2 sum_k D_k - u.
        var next = Update(parts, baseStep, tasks);
        parts.Recorder.Inspect("next", next);
        return next;
    }

    /// <summary>Step 4: the later conditions' tasks, by the plan.</summary>
    private static void LaterTasks(StepParts parts, XtEstimate at, PassPlan plan, IReadOnlyList<int> later, ZMagicProposals proposals, PullBack pullBack, TaskList tasks)
    {
        if (later.Count == 0) return;
        if (!proposals.Shared)
        {
            PerConditionPass.Run(parts, at, later, j => proposals.PointFor(j, later[j]), shared: false, energies: null, pullBack, tasks, proposals.Accepted);
            return;
        }
        var p = EvaluationPoint.AtProposal(parts, proposals.First, plan == PassPlan.Batched ? later.Count : 1, proposals.ReusedEps);
        if (plan == PassPlan.PerCondition)
        {
            PerConditionPass.Run(parts, at, later, _ => p, shared: true, energies: null, pullBack, tasks);
            return;
        }
        var energies = p.Energies(parts, later);
        if (plan == PassPlan.Batched) BatchedPass.Run(parts, at, later, p, energies, pullBack, tasks);
        else if (FusedPass.Run(parts, at, later, p, energies, pullBack, tasks) is { } retry)
            PerConditionPass.Run(parts, at, retry, _ => p, shared: true, energies, pullBack, tasks);
    }

    /// <summary>Step 5: the combined update and the update rule.</summary>
    private Tensor Update(StepParts parts, Tensor baseStep, TaskList tasks)
    {
        if (tasks.Fused is null) parts.Recorder.Cosines(tasks);
        var all = tasks.All;
        if (all.Count == 0) return baseStep;
        if (tasks.TermCount == 1)
        {
            parts.Recorder.Inspect("update", all[0]);
            return baseStep - all[0];
        }
        var update = parts.Combiner.Combine(all);
        parts.Recorder.Inspect("update", update);
        if (Options.UpdateRule == ZMagicUpdateRule.Replacement) return baseStep - update;
        // The research code subtracts every term once into its sequential state, then again with the combined update.
        var sequential = baseStep - all[0];
        for (int i = 1; i < all.Count; i++) sequential = sequential - all[i];
        parts.Recorder.Inspect("sequential", sequential);
        var again = update + all[0];
        for (int i = 1; i < all.Count; i++) again = again + all[i];
        return sequential - again;
    }
}
