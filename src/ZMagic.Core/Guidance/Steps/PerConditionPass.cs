using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// One backward pass per condition: <c>g_k = grad E_k(x0(point_k))</c>, then its task (<see cref="ConditionTask"/>).
/// The conditions share one point (its graph is retained between them) or each gets its own (Z-Magic's chained and
/// branch-noise proposals).
/// </summary>
internal static class PerConditionPass
{
    /// <param name="parts">The step.</param>
    /// <param name="at">The estimate at x_t (for the step sizes).</param>
    /// <param name="conditions">The conditions, in order.</param>
    /// <param name="pointFor">Condition j's point (called in order, after the previous condition's task).</param>
    /// <param name="shared">Whether every condition gets the same point.</param>
    /// <param name="energies">Energies already evaluated at the shared point (a condition without one is skipped), or null to evaluate each when reached.</param>
    /// <param name="pullBack">Z-Magic's pull-back to x_t; null when the point is x_t.</param>
    /// <param name="tasks">Receives the tasks.</param>
    /// <param name="accepted">Called with each condition's gradient and step sizes once its task is added.</param>
    public static void Run(StepParts parts, XtEstimate at, IReadOnlyList<int> conditions, Func<int, EvaluationPoint> pointFor, bool shared,
        IReadOnlyDictionary<int, Tensor>? energies, PullBack? pullBack, TaskList tasks, Action<Tensor, double[]>? accepted = null)
    {
        for (int j = 0; j < conditions.Count; j++)
        {
            parts.Step.CancellationToken.ThrowIfCancellationRequested();
            int k = conditions[j];
            bool more = j + 1 < conditions.Count;
            var point = pointFor(j);
            var e = energies is null ? point.Energy(parts, k, 0) : energies.GetValueOrDefault(k);
            if (e is null) continue;
            var g = point.Gradient(parts, e.sum(), retainGraph: shared && more, $"gradient of '{parts.Conditions.Name(k)}'{point.Where}");
            if (ConditionTask.Add(parts, at, k, g, point, pullBack, retainPullBack: more, tasks) is { } rho) accepted?.Invoke(g, rho);
        }
    }
}
