using TorchSharp;
using ZMagic.Core.Diffusion;
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
        var kit = new StepKit(step);
        var active = kit.Active();
        if (active.Count == 0) return kit.Unguided();

        using var gradMode = torch.enable_grad();
        double a = step.AlphaBar, an = step.AlphaBarNext;
        var x = step.X.detach().requires_grad_(true);
        var eps = kit.Forward(x);
        var x0 = Tweedie.X0(x, eps, a);
        var epsD = eps.detach();
        var x0D = x0.detach();
        kit.Inspect("eps", epsD);
        kit.Inspect("x0", x0D);
        bool needsVjp = Options.Jacobian != ZMagicJacobian.FirstOrder;
        bool full = Options.Jacobian == ZMagicJacobian.Full;
        var baseGraph = needsVjp ? step.Sampler.Step(x, x0, eps, a, an, step.Noise) : null;
        var baseD = baseGraph?.detach() ?? step.Sampler.Step(step.X, x0D, epsD, a, an, step.Noise);
        kit.Inspect("base", baseD);

        // The anchor: the first active condition with a finite energy, gradient and step size.
        int pos = 0, anchor = -1;
        Tensor? g1 = null;
        // Per-item step sizes [B] ({0} until an anchor is found).
        double[] rho1 = { 0.0 };
        while (!Options.AnchorOnBaseStep && pos < active.Count)
        {
            step.CancellationToken.ThrowIfCancellationRequested();
            int k = active[pos++];
            var name = step.Conditions[k].Name;
            var e = kit.Energy(k, x0);
            kit.RecordEnergy(k, e);
            if (!kit.CheckFinite(k, e.detach(), "energy")) continue;
            // The first graph stays alive for the pull-backs (and for a later anchor if this one is skipped).
            var g = kit.Backward(e.sum(), x, retainGraph: true, createGraph: full, what: $"gradient of '{name}'");
            if (!kit.CheckFinite(k, g.detach(), "gradient")) continue;
            kit.RecordNorm(k, g);
            var rho = kit.StepSize(k, epsD, g.detach());
            if (kit.Traces[k].Skipped) continue;
            anchor = k; g1 = g; rho1 = rho;
            break;
        }
        if (anchor < 0 && !Options.AnchorOnBaseStep) return baseD;
        var tasks = new List<Tensor>();
        var gradients = new List<Tensor>();
        var used = new List<int>();
        // With AnchorOnBaseStep there is no anchor energy: g1 = 0, the proposal is the base step itself.
        var g1D = g1?.detach() ?? torch.zeros_like(baseD);
        if (anchor >= 0)
        {
            var anchorName = step.Conditions[anchor].Name;
            kit.Inspect("g/" + anchorName, g1D);
            tasks.Add(StepKit.Times(g1D, rho1));
            gradients.Add(g1D);
            used.Add(anchor);
            kit.Inspect("task/" + anchorName, tasks[0]);
        }

        var later = active.Skip(pos).ToList();
        var firstProposal = baseD - StepKit.Times(g1D, rho1);
        // What the pull-back differentiates: the base step (research code), or the whole proposal (with the Hessian).
        var vjpOutput = !needsVjp ? null : full && g1 is not null ? baseGraph! - StepKit.Times(g1, rho1) : baseGraph!;
        bool exact = Options.Proposal == ZMagicProposal.Exact;
        // One proposal (one leaf, one forward when exact) for every later condition: star chaining, no branch noise.
        bool sharedProposal = Options.Chaining == ZMagicChaining.Star && !Options.BranchNoise;
        // Fused: with a linear (sum) combiner and gradient-free later step sizes, sum_k rho_k d_k = J^T grad_p sum_k rho_k E_k
        // (the pull-back is linear in its vector), so one backward at the proposal and one VJP serve them all.
        bool fuse = sharedProposal && later.Count >= 2 && !Options.PerConditionGradients
                    && step.Combiner.IsLinear && later.All(kit.GradientFreeStepSize);
        // Batched: one forward of the proposal replicated per later condition and one backward give every gh_k.
        bool batched = !fuse && sharedProposal && exact && later.Count >= 2 && Options.BatchConditionGradients;
        long batch = step.X.shape[0];

        Tensor? sharedLeaf = null, sharedX0 = null, sharedEps = null;
        // Energies already evaluated at the proposal (fused attempt or batched forward), by condition index.
        Dictionary<int, Tensor>? evaluated = null;
        Tensor? batchedGh = null;
        Tensor? fusedTask = null;
        int fusedTerms = 0;
        if (fuse || batched)
        {
            int copies = batched ? later.Count : 1;
            var leaf = batched ? StepKit.Replicate(firstProposal, copies) : firstProposal.detach().requires_grad_(true);
            var epsP = !exact ? epsD : batched ? kit.ForwardReplicated(leaf, copies) : kit.Forward(leaf);
            var x0p = Tweedie.X0(leaf, epsP, a);
            if (!batched) (sharedLeaf, sharedX0, sharedEps) = (leaf, x0p, epsP);
            evaluated = new Dictionary<int, Tensor>();
            for (int j = 0; j < later.Count; j++)
            {
                step.CancellationToken.ThrowIfCancellationRequested();
                int k = later[j];
                var name = step.Conditions[k].Name;
                var (lj, ej, xj) = batched
                    ? (StepKit.Chunk(leaf, j, batch), StepKit.Chunk(epsP, j, batch), StepKit.Chunk(x0p, j, batch))
                    : (leaf, epsP, x0p);
                kit.Inspect("proposal/" + name, lj);
                kit.Inspect("eps_proposal/" + name, ej);
                kit.Inspect("x0_proposal/" + name, xj);
                var e = kit.Energy(k, xj);
                kit.RecordEnergy(k, e);
                if (kit.CheckFinite(k, e.detach(), "energy")) evaluated[k] = e;
            }
            if (batched && evaluated.Count > 0)
            {
                // The copies share no graph: copy j of the gradient of sum_j E_j(copy j) is gh_j.
                Tensor total = evaluated.Values.First().sum();
                foreach (var e in evaluated.Values.Skip(1)) total = total + e.sum();
                batchedGh = kit.Backward(total, leaf, retainGraph: false, what: "batched gradients of the later conditions at the proposal");
            }
            if (fuse)
            {
                var terms = evaluated.Keys.Select(k => (K: k, Rho: kit.StepSize(k, epsD, null))).Where(t => !kit.Traces[t.K].Skipped).ToList();
                if (terms.Count == 0)
                {
                    fusedTerms = -1;   // nothing left to pull back; the per-condition loop is not needed
                }
                else
                {
                    // Per-item step sizes: item i's gradient of sum_i rho_ki E_ki is rho_ki gh_ki.
                    Tensor total = StepKit.WeightedEnergy(evaluated[terms[0].K], terms[0].Rho);
                    foreach (var (k, rho) in terms.Skip(1)) total = total + StepKit.WeightedEnergy(evaluated[k], rho);
                    // Graphs are kept so that a non-finite result can be traced back to its condition per condition.
                    var gh = exact
                        ? kit.Backward(total, leaf, retainGraph: true, what: "fused gradient of the later conditions at the proposal")
                        : kit.EncoderBackward(total, leaf, retainGraph: true);
                    if (torch.isfinite(gh).all().item<bool>())
                    {
                        var d = needsVjp ? kit.Vjp(vjpOutput!, x, gh, retainGraph: true) : gh;
                        if (torch.isfinite(d).all().item<bool>())
                        {
                            kit.Inspect("gh_fused", gh);
                            kit.Inspect("task_fused", d);
                            fusedTask = d;
                            fusedTerms = terms.Count;
                        }
                    }
                }
            }
        }

        var chainProposal = firstProposal;
        for (int j = 0; j < later.Count && fusedTerms == 0; j++)
        {
            step.CancellationToken.ThrowIfCancellationRequested();
            int k = later[j];
            var name = step.Conditions[k].Name;
            bool lastLater = j + 1 == later.Count;
            // Skipped already (non-finite step size in the fused attempt): no passes for it.
            if (kit.Traces[k].Skipped) continue;

            Tensor gh;
            if (batchedGh is not null)
            {
                if (!evaluated!.ContainsKey(k)) continue;
                gh = StepKit.Chunk(batchedGh, j, batch);
            }
            else
            {
                Tensor leaf, e;
                if (evaluated is not null)
                {
                    // Fallback after a non-finite fused result: the energies at the shared proposal are reused.
                    if (!evaluated.TryGetValue(k, out var cached)) continue;
                    (leaf, e) = (sharedLeaf!, cached);
                }
                else
                {
                    Tensor x0p, epsP;
                    if (sharedProposal && exact && sharedLeaf is not null)
                    {
                        (leaf, x0p, epsP) = (sharedLeaf, sharedX0!, sharedEps!);
                    }
                    else
                    {
                        Tensor proposal;
                        if (Options.Chaining == ZMagicChaining.Chain) proposal = chainProposal;
                        else if (Options.BranchNoise && j > 0 && step.Sampler.UsesNoise)
                        {
                            var draw = step.DrawNoise ?? throw new GuidanceException(
                                "ZMagicOptions.BranchNoise needs GuidedStep.DrawNoise to draw a noise tensor per branch; the caller provided none.", name, kit.T);
                            var noise = draw();
                            if (!noise.shape.SequenceEqual(step.X.shape))
                                throw new GuidanceException($"DrawNoise returned shape [{string.Join(", ", noise.shape)}]; expected [{string.Join(", ", step.X.shape)}].", name, kit.T);
                            proposal = step.Sampler.Step(step.X, x0D, epsD, a, an, noise) - StepKit.Times(g1D, rho1);
                        }
                        else proposal = firstProposal;

                        leaf = proposal.detach().requires_grad_(true);
                        epsP = exact ? kit.Forward(leaf) : epsD;
                        x0p = Tweedie.X0(leaf, epsP, a);
                        if (sharedProposal && exact) (sharedLeaf, sharedX0, sharedEps) = (leaf, x0p, epsP);
                    }
                    kit.Inspect("proposal/" + name, leaf);
                    kit.Inspect("eps_proposal/" + name, epsP);
                    kit.Inspect("x0_proposal/" + name, x0p);

                    e = kit.Energy(k, x0p);
                    kit.RecordEnergy(k, e);
                    if (!kit.CheckFinite(k, e.detach(), "energy")) continue;
                }
                // The graph at a shared proposal serves the next conditions too.
                bool retainProposal = sharedLeaf is not null && !lastLater;
                gh = exact
                    ? kit.Backward(e.sum(), leaf, retainGraph: retainProposal, what: $"gradient of '{name}' at the proposal")
                    : kit.EncoderBackward(e.sum(), leaf, retainGraph: retainProposal);
            }
            if (!kit.CheckFinite(k, gh, "gradient at the proposal")) continue;
            kit.Inspect("gh/" + name, gh);

            var d = needsVjp ? kit.Vjp(vjpOutput!, x, gh, retainGraph: !lastLater) : gh;
            if (!kit.CheckFinite(k, d, "pulled-back gradient")) continue;
            kit.Inspect("d/" + name, d);
            kit.RecordNorm(k, d);
            var rho = kit.StepSize(k, epsD, d);
            if (kit.Traces[k].Skipped) continue;
            var task = StepKit.Times(d, rho);
            kit.Inspect("task/" + name, task);
            tasks.Add(task);
            gradients.Add(d);
            used.Add(k);
            if (Options.Chaining == ZMagicChaining.Chain) chainProposal = chainProposal - StepKit.Times(gh, rho);
        }

        // The number of task terms the update rule sees (the fused task stands for fusedTerms of them).
        int termCount = tasks.Count;
        if (fusedTask is not null)
        {
            tasks.Add(fusedTask);
            termCount += fusedTerms;
        }
        else
        {
            kit.RecordCosines(used, gradients);
        }
        Tensor next;
        if (tasks.Count == 0)
        {
            next = baseD;
        }
        else if (termCount == 1)
        {
            next = baseD - tasks[0];
            kit.Inspect("update", tasks[0]);
        }
        else
        {
            var update = kit.Combine(tasks);
            kit.Inspect("update", update);
            if (Options.UpdateRule == ZMagicUpdateRule.Replacement)
            {
                next = baseD - update;
            }
            else
            {
                var sequential = baseD - tasks[0];
                for (int i = 1; i < tasks.Count; i++) sequential = sequential - tasks[i];
                kit.Inspect("sequential", sequential);
                var again = update + tasks[0];
                for (int i = 1; i < tasks.Count; i++) again = again + tasks[i];
                next = sequential - again;
            }
        }
        kit.Inspect("next", next);
        return next;
    }
}
