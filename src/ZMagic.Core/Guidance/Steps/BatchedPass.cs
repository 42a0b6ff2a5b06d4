using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Per-condition gradients from one backward pass at a replicated point: condition j is evaluated on copy j, the
/// copies share no graph, so copy j of <c>grad sum_j E_j(copy j)</c> is condition j's gradient. Pull-backs stay
/// per condition.
/// </summary>
internal static class BatchedPass
{
    public static void Run(StepParts parts, XtEstimate at, IReadOnlyList<int> conditions, EvaluationPoint point,
        IReadOnlyDictionary<int, Tensor> energies, PullBack? pullBack, TaskList tasks)
    {
        var evaluated = conditions.Where(energies.ContainsKey).ToList();
        if (evaluated.Count == 0) return;
        Tensor total = energies[evaluated[0]].sum();
        foreach (var k in evaluated.Skip(1)) total = total + energies[k].sum();
        var grads = point.Gradient(parts, total, retainGraph: false, $"batched per-condition gradients{point.Where}");
        for (int j = 0; j < conditions.Count; j++)
        {
            parts.Step.CancellationToken.ThrowIfCancellationRequested();
            if (!energies.ContainsKey(conditions[j])) continue;
            ConditionTask.Add(parts, at, conditions[j], point.Copy(grads, j), point, pullBack, retainPullBack: j + 1 < conditions.Count, tasks);
        }
    }
}
