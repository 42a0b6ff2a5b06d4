using TorchSharp;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Independent guidance (FreeDoM, TFG): every condition's energy is evaluated on the same Tweedie estimate
/// x0(x_t), its gradient g_k = grad_{x_t} E_k is taken through the denoiser, and
/// <c>x_t' = S(x_t) - combiner({rho_k g_k})</c>.
/// </summary>
/// <remarks>
/// Cost per step: one denoiser forward; one backward when a linear combiner (<see cref="IGradientCombiner.IsLinear"/>, e.g. the sum) and gradient-free step sizes allow the
/// fused form, else one backward per active condition (the graph is retained between them), or, with
/// <see cref="VanillaOptions.BatchConditionGradients"/>, one forward and one backward of K x B items. Intermediates
/// passed to <see cref="GuidedStep.Inspect"/>: eps, x0, base, grad_sum (fused), g/NAME, task/NAME, update, next.
/// </remarks>
public sealed class VanillaStrategy : IGuidanceStrategy
{
    /// <summary>Creates the strategy.</summary>
    public VanillaStrategy(VanillaOptions? options = null) => Options = options ?? new VanillaOptions();

    /// <summary>The options.</summary>
    public VanillaOptions Options { get; }

    /// <inheritdoc />
    public string Name => "vanilla";

    /// <inheritdoc />
    public Tensor Step(GuidedStep step)
    {
        ArgumentNullException.ThrowIfNull(step);
        var kit = new StepKit(step);
        var active = kit.Active();
        if (active.Count == 0) return kit.Unguided();

        using var grad = torch.enable_grad();
        bool fusable = !Options.PerConditionGradients && step.Combiner.IsLinear && active.All(kit.GradientFreeStepSize);
        // Batched: condition active[i] is evaluated on copy i of x_t replicated along the batch dimension.
        int copies = Options.BatchConditionGradients && !fusable && active.Count >= 2 ? active.Count : 1;
        long batch = step.X.shape[0];
        var x = copies > 1 ? StepKit.Replicate(step.X, copies) : step.X.detach().requires_grad_(true);
        var eps = copies > 1 ? kit.ForwardReplicated(x, copies) : kit.Forward(x);
        var x0 = Tweedie.X0(x, eps, step.AlphaBar);
        var epsD = (copies > 1 ? StepKit.Chunk(eps, 0, batch) : eps).detach();
        var x0D = (copies > 1 ? StepKit.Chunk(x0, 0, batch) : x0).detach();
        kit.Inspect("eps", epsD);
        kit.Inspect("x0", x0D);

        var energies = new Dictionary<int, Tensor>();
        for (int i = 0; i < active.Count; i++)
        {
            step.CancellationToken.ThrowIfCancellationRequested();
            int k = active[i];
            var e = kit.Energy(k, copies > 1 ? StepKit.Chunk(x0, i, batch) : x0);
            kit.RecordEnergy(k, e);
            if (kit.CheckFinite(k, e.detach(), "energy")) energies[k] = e;
        }

        var baseStep = step.Sampler.Step(step.X, x0D, epsD, step.AlphaBar, step.AlphaBarNext, step.Noise);
        kit.Inspect("base", baseStep);
        if (energies.Count == 0) return baseStep;

        var remaining = energies.Keys.ToList();
        bool fused = copies == 1
                     && !Options.PerConditionGradients
                     && step.Combiner.IsLinear
                     && remaining.All(kit.GradientFreeStepSize);
        Tensor update;
        if (fused)
        {
            var rhos = remaining.ToDictionary(k => k, k => kit.StepSize(k, epsD, null));
            remaining = remaining.Where(k => !kit.Traces[k].Skipped).ToList();
            if (remaining.Count == 0) return baseStep;
            // Per-item step sizes: item i's gradient of sum_i rho_ki E_ki is rho_ki g_ki (items share no graph).
            Tensor total = StepKit.WeightedEnergy(energies[remaining[0]], rhos[remaining[0]]);
            foreach (var k in remaining.Skip(1)) total = total + StepKit.WeightedEnergy(energies[k], rhos[k]);
            // The graph is kept so that a non-finite sum can be traced back to its condition below.
            var g = kit.Backward(total, x, retainGraph: true, what: "guidance gradient");
            if (torch.isfinite(g).all().item<bool>())
            {
                kit.Inspect("grad_sum", g);
                if (remaining.Count == 1) kit.RecordFusedNorm(remaining[0], g, rhos[remaining[0]]);
                update = g;
                kit.Inspect("update", update);
                var fusedNext = baseStep - update;
                kit.Inspect("next", fusedNext);
                return fusedNext;
            }
        }

        // Batched: one backward of sum_k E_k(copy k) gives every g_k (copy k of the gradient; the copies share no graph).
        Tensor? batchedGrad = null;
        if (copies > 1)
        {
            Tensor total = energies[remaining[0]].sum();
            foreach (var k in remaining.Skip(1)) total = total + energies[k].sum();
            batchedGrad = kit.Backward(total, x, retainGraph: false, what: "batched per-condition gradients");
        }

        // Per-condition gradients (K backwards through the retained graph).
        var tasks = new List<Tensor>();
        var gradients = new List<Tensor>();
        var used = new List<int>();
        for (int i = 0; i < remaining.Count; i++)
        {
            step.CancellationToken.ThrowIfCancellationRequested();
            int k = remaining[i];
            var name = step.Conditions[k].Name;
            var g = batchedGrad is not null
                ? StepKit.Chunk(batchedGrad, active.IndexOf(k), batch)
                : kit.Backward(energies[k].sum(), x, retainGraph: i + 1 < remaining.Count, what: $"gradient of '{name}'");
            if (!kit.CheckFinite(k, g, "gradient")) continue;
            kit.RecordNorm(k, g);
            var rho = kit.StepSize(k, epsD, g);
            if (kit.Traces[k].Skipped) continue;
            kit.Inspect("g/" + name, g);
            var task = StepKit.Times(g, rho);
            kit.Inspect("task/" + name, task);
            tasks.Add(task);
            gradients.Add(g);
            used.Add(k);
        }
        if (tasks.Count == 0) return baseStep;
        kit.RecordCosines(used, gradients);
        update = kit.Combine(tasks);
        kit.Inspect("update", update);
        var next = baseStep - update;
        kit.Inspect("next", next);
        return next;
    }
}
