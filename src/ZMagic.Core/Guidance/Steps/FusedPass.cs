using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// One backward pass for several conditions at one point: <c>grad sum_k rho_k E_k = sum_k rho_k g_k</c> (per item,
/// since items share no graph), pulled back once (the pull-back is linear). Needs a linear combiner and
/// gradient-free step sizes. Graphs are retained so that a non-finite result can be retried per condition.
/// </summary>
internal static class FusedPass
{
    /// <summary>
    /// Adds the fused task; returns null when done (or when every step size was skipped), else the conditions to
    /// retry per condition because the fused gradient is not finite.
    /// </summary>
    public static IReadOnlyList<int>? Run(StepParts parts, XtEstimate at, IReadOnlyList<int> conditions, EvaluationPoint point,
        IReadOnlyDictionary<int, Tensor> energies, PullBack? pullBack, TaskList tasks)
    {
        var terms = new List<(int K, double[] Rho)>();
        foreach (var k in conditions.Where(energies.ContainsKey))
            if (parts.Conditions.StepSizes(k, at, null) is { } rho) terms.Add((k, rho));
        if (terms.Count == 0) return null;
        Tensor total = PerItem.WeightedEnergy(energies[terms[0].K], terms[0].Rho);
        foreach (var (k, rho) in terms.Skip(1)) total = total + PerItem.WeightedEnergy(energies[k], rho);
        var g = point.Gradient(parts, total, retainGraph: true, $"fused gradient{point.Where}");
        if (!AllFinite(g)) return terms.Select(t => t.K).ToList();
        var d = pullBack?.Apply(g, retainGraph: true) ?? g;
        if (!AllFinite(d)) return terms.Select(t => t.K).ToList();
        parts.Recorder.Inspect(pullBack is null ? "grad_sum" : "gh_fused", g);
        if (pullBack is not null) parts.Recorder.Inspect("task_fused", d);
        if (terms.Count == 1) parts.Recorder.FusedGradientNorm(terms[0].K, d, terms[0].Rho);
        tasks.AddFused(d, terms.Count);
        return null;
    }

    private static bool AllFinite(Tensor t) => torch.isfinite(t).all().item<bool>();
}
