using TorchSharp;
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
        var parts = new StepParts(step);
        var active = parts.Conditions.Active;
        if (active.Count == 0) return parts.Unguided();
        using var grad = torch.enable_grad();

        // 1. The pass plan, chosen once: fused (one backward of sum_k rho_k E_k, as FreeDoM), batched (x_t replicated
        //    once per condition, condition k on copy k) or one backward per condition.
        var plan = PassPlans.Choose(active, parts, Options.PerConditionGradients, Options.BatchConditionGradients, fuseFrom: 1);

        // 2. eps(x_t) and x0(x_t) in one graph, every active condition's energy E_k(x0(x_t)), and the base step S(x_t).
        var xt = EvaluationPoint.AtXt(parts, plan == PassPlan.Batched ? active.Count : 1);
        var at = xt.Estimate(parts.Recorder);
        var energies = xt.Energies(parts, active);
        var evaluated = active.Where(energies.ContainsKey).ToList();
        var baseStep = step.Sampler.Step(step.X, at.X0, at.Eps, step.AlphaBar, step.AlphaBarNext, step.Noise);
        parts.Recorder.Inspect("base", baseStep);
        if (evaluated.Count == 0) return baseStep;

        // 3. The tasks rho_k g_k, g_k = grad_{x_t} E_k, by the plan (a non-finite fused gradient is retried per condition).
        var tasks = new TaskList();
        if (plan == PassPlan.Batched) BatchedPass.Run(parts, at, active, xt, energies, pullBack: null, tasks);
        var perCondition = plan switch
        {
            PassPlan.Fused => FusedPass.Run(parts, at, evaluated, xt, energies, pullBack: null, tasks),
            PassPlan.PerCondition => evaluated,
            _ => null,
        };
        if (perCondition is not null) PerConditionPass.Run(parts, at, perCondition, _ => xt, shared: true, energies, pullBack: null, tasks);

        // 4. x_t' = S(x_t) - combiner({rho_k g_k}); the fused backward is their sum already.
        if (tasks.All.Count == 0) return baseStep;
        if (tasks.Fused is null) parts.Recorder.Cosines(tasks);
        var update = tasks.Fused ?? parts.Combiner.Combine(tasks.All);
        parts.Recorder.Inspect("update", update);
        var next = baseStep - update;
        parts.Recorder.Inspect("next", next);
        return next;
    }
}
