using TorchSharp;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>Options of <see cref="VanillaStrategy"/>.</summary>
public sealed record VanillaOptions
{
    /// <summary>
    /// Always compute each condition's gradient with its own backward pass (K backwards), so that the trace carries
    /// per-condition gradient norms and the pairwise cosines (the paper's Fig. 1). When false (default), a step whose
    /// combiner is the plain sum and whose step-size rules ignore the gradient takes ONE backward pass of
    /// <c>sum_k rho_k E_k</c> for all conditions together, as FreeDoM does; otherwise per-condition backwards are used.
    /// </summary>
    public bool PerConditionGradients { get; init; }
}

/// <summary>
/// Independent guidance (FreeDoM, TFG): every condition's energy is evaluated on the same Tweedie estimate
/// x0(x_t), its gradient g_k = grad_{x_t} E_k is taken through the denoiser, and
/// <c>x_t' = S(x_t) - combiner({rho_k g_k})</c>.
/// </summary>
/// <remarks>
/// Cost per step: one denoiser forward; one backward when the sum combiner and gradient-free step sizes allow the
/// fused form, else one backward per active condition (the graph is retained between them). Intermediates passed to
/// <see cref="GuidedStep.Inspect"/>: eps, x0, base, grad_sum (fused), g/NAME, task/NAME, update, next.
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
        var x = step.X.detach().requires_grad_(true);
        var eps = kit.Forward(x);
        var x0 = Tweedie.X0(x, eps, step.AlphaBar);
        var epsD = eps.detach();
        var x0D = x0.detach();
        kit.Inspect("eps", epsD);
        kit.Inspect("x0", x0D);

        var energies = new Dictionary<int, Tensor>();
        foreach (var k in active)
        {
            step.CancellationToken.ThrowIfCancellationRequested();
            var e = kit.Energy(k, x0);
            kit.RecordEnergy(k, e);
            if (kit.CheckFinite(k, e.detach(), "energy")) energies[k] = e;
        }

        var baseStep = step.Sampler.Step(step.X, x0D, epsD, step.AlphaBar, step.AlphaBarNext, step.Noise);
        kit.Inspect("base", baseStep);
        if (energies.Count == 0) return baseStep;

        var remaining = energies.Keys.ToList();
        bool fused = !Options.PerConditionGradients
                     && step.Combiner is SumCombiner
                     && remaining.All(k => !step.Conditions[k].Schedule.StepSize.UsesGradient);
        Tensor update;
        if (fused)
        {
            var rhos = remaining.ToDictionary(k => k, k => kit.StepSize(k, epsD, null));
            remaining = remaining.Where(k => !kit.Traces[k].Skipped).ToList();
            if (remaining.Count == 0) return baseStep;
            Tensor total = energies[remaining[0]].sum() * rhos[remaining[0]];
            foreach (var k in remaining.Skip(1)) total = total + energies[k].sum() * rhos[k];
            // The graph is kept so that a non-finite sum can be traced back to its condition below.
            var g = kit.Backward(total, x, retainGraph: true, what: "guidance gradient");
            if (torch.isfinite(g).all().item<bool>())
            {
                kit.Inspect("grad_sum", g);
                if (remaining.Count == 1 && rhos[remaining[0]] != 0)
                    kit.Traces[remaining[0]].GradientNorm = g.to(ScalarType.Float64).norm().item<double>() / Math.Abs(rhos[remaining[0]]);
                update = g;
                kit.Inspect("update", update);
                var fusedNext = baseStep - update;
                kit.Inspect("next", fusedNext);
                return fusedNext;
            }
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
            var g = kit.Backward(energies[k].sum(), x, retainGraph: i + 1 < remaining.Count, what: $"gradient of '{name}'");
            if (!kit.CheckFinite(k, g, "gradient")) continue;
            kit.RecordNorm(k, g);
            double rho = kit.StepSize(k, epsD, g);
            if (kit.Traces[k].Skipped) continue;
            kit.Inspect("g/" + name, g);
            var task = g * rho;
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
