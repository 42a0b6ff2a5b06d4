namespace ZMagic.Core.Guidance;

/// <summary>How the gradients of a set of conditions evaluated at one point are taken.</summary>
internal enum PassPlan
{
    /// <summary>One backward pass per condition (the graph retained between them).</summary>
    PerCondition,
    /// <summary>One backward pass of <c>sum_k rho_k E_k</c>: needs a linear combiner and gradient-free step sizes.</summary>
    Fused,
    /// <summary>One forward and one backward of the point replicated once per condition.</summary>
    Batched,
}

/// <summary>Chooses a <see cref="PassPlan"/> once per step, from the options, the combiner and the step-size rules.</summary>
internal static class PassPlans
{
    /// <param name="conditions">The conditions evaluated at the point.</param>
    /// <param name="parts">The step.</param>
    /// <param name="perCondition">Per-condition gradients requested (or needed, e.g. for separate proposals).</param>
    /// <param name="batched">Batched gradients requested.</param>
    /// <param name="fuseFrom">The fewest conditions for which fusion pays.</param>
    public static PassPlan Choose(IReadOnlyList<int> conditions, StepParts parts, bool perCondition, bool batched, int fuseFrom)
    {
        if (!perCondition && conditions.Count >= fuseFrom && parts.Step.Combiner.IsLinear && conditions.All(parts.Conditions.GradientFree))
            return PassPlan.Fused;
        return batched && conditions.Count >= 2 ? PassPlan.Batched : PassPlan.PerCondition;
    }
}
