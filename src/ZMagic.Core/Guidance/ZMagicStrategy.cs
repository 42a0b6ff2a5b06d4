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
/// <para>Passes per step with n active conditions (star chaining, one shared proposal):
/// Exact proposal + ResearchCode/Full Jacobian: 2 forwards, n backwards + (n - 1) VJPs = 2n - 1 backward passes;
/// ReuseFirstForward: 1 forward, 1 backward + (n - 1) VJPs through the denoiser (the later gradients pass through the
/// encoders only); FirstOrder Jacobian: no VJPs. Chain chaining and branch noise need one forward per later condition.
/// A single active condition costs 1 forward + 1 backward and gives S(x_t) - rho1 g1.</para>
/// <para>Intermediates passed to <see cref="GuidedStep.Inspect"/>: eps, x0, base, g/NAME, proposal/NAME,
/// eps_proposal/NAME, x0_proposal/NAME, gh/NAME, d/NAME, task/NAME, sequential, update, next.</para>
/// </remarks>
public sealed class ZMagicStrategy : IGuidanceStrategy
{
    /// <summary>Creates the strategy.</summary>
    public ZMagicStrategy(ZMagicOptions? options = null) => Options = options ?? new ZMagicOptions();

    /// <summary>The options.</summary>
    public ZMagicOptions Options { get; }

    /// <inheritdoc />
    public string Name => $"zmagic({Options.Jacobian},{Options.Chaining},{Options.UpdateRule},{Options.Proposal}{(Options.BranchNoise ? ",branch-noise" : "")})";

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
        double rho1 = 0;
        while (pos < active.Count)
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
            double rho = kit.StepSize(k, epsD, g.detach());
            if (kit.Traces[k].Skipped) continue;
            anchor = k; g1 = g; rho1 = rho;
            break;
        }
        if (anchor < 0) return baseD;
        var g1D = g1!.detach();
        var anchorName = step.Conditions[anchor].Name;
        kit.Inspect("g/" + anchorName, g1D);
        var tasks = new List<Tensor> { g1D * rho1 };
        var gradients = new List<Tensor> { g1D };
        var used = new List<int> { anchor };
        kit.Inspect("task/" + anchorName, tasks[0]);

        var later = active.Skip(pos).ToList();
        var firstProposal = baseD - g1D * rho1;
        // What the pull-back differentiates: the base step (research code), or the whole proposal (with the Hessian).
        var vjpOutput = !needsVjp ? null : full ? baseGraph! - g1! * rho1 : baseGraph!;
        bool shared = Options.Chaining == ZMagicChaining.Star && !Options.BranchNoise && Options.Proposal == ZMagicProposal.Exact;
        Tensor? sharedLeaf = null, sharedX0 = null, sharedEps = null;
        var chainProposal = firstProposal;

        for (int j = 0; j < later.Count; j++)
        {
            step.CancellationToken.ThrowIfCancellationRequested();
            int k = later[j];
            var name = step.Conditions[k].Name;
            bool lastLater = j + 1 == later.Count;

            Tensor leaf, x0p, epsP;
            if (shared && sharedLeaf is not null)
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
                    proposal = step.Sampler.Step(step.X, x0D, epsD, a, an, noise) - g1D * rho1;
                }
                else proposal = firstProposal;

                leaf = proposal.detach().requires_grad_(true);
                epsP = Options.Proposal == ZMagicProposal.Exact ? kit.Forward(leaf) : epsD;
                x0p = Tweedie.X0(leaf, epsP, a);
                if (shared) (sharedLeaf, sharedX0, sharedEps) = (leaf, x0p, epsP);
            }
            kit.Inspect("proposal/" + name, leaf);
            kit.Inspect("eps_proposal/" + name, epsP);
            kit.Inspect("x0_proposal/" + name, x0p);

            var e = kit.Energy(k, x0p);
            kit.RecordEnergy(k, e);
            if (!kit.CheckFinite(k, e.detach(), "energy")) continue;
            bool retainProposal = shared && !lastLater;
            var gh = Options.Proposal == ZMagicProposal.Exact
                ? kit.Backward(e.sum(), leaf, retainGraph: retainProposal, what: $"gradient of '{name}' at the proposal")
                : kit.EncoderBackward(e.sum(), leaf, retainGraph: false);
            if (!kit.CheckFinite(k, gh, "gradient at the proposal")) continue;
            kit.Inspect("gh/" + name, gh);

            var d = needsVjp ? kit.Vjp(vjpOutput!, x, gh, retainGraph: !lastLater) : gh;
            if (!kit.CheckFinite(k, d, "pulled-back gradient")) continue;
            kit.Inspect("d/" + name, d);
            kit.RecordNorm(k, d);
            double rho = kit.StepSize(k, epsD, d);
            if (kit.Traces[k].Skipped) continue;
            var task = d * rho;
            kit.Inspect("task/" + name, task);
            tasks.Add(task);
            gradients.Add(d);
            used.Add(k);
            if (Options.Chaining == ZMagicChaining.Chain) chainProposal = chainProposal - gh * rho;
        }

        kit.RecordCosines(used, gradients);
        Tensor next;
        if (tasks.Count == 1)
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
