using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Turns condition k's gradient at a point into its task: the non-finite policy, the pull-back to x_t (Z-Magic), the
/// gradient norm, the step size and <c>rho_k d_k</c>. Shared by every per-condition pass.
/// </summary>
internal static class ConditionTask
{
    /// <summary>Adds condition k's task to <paramref name="tasks"/> and returns its step sizes (null when skipped).</summary>
    public static double[]? Add(StepParts parts, XtEstimate at, int k, Tensor g, EvaluationPoint point, PullBack? pullBack, bool retainPullBack, TaskList tasks)
    {
        var (ev, rec, name) = (parts.Conditions, parts.Recorder, parts.Conditions.Name(k));
        if (!ev.Finite(k, g, "gradient" + point.Where)) return null;
        rec.Inspect(point.GradientName + name, g);
        var d = g;
        if (pullBack is not null)
        {
            d = pullBack.Apply(g, retainPullBack);
            if (!ev.Finite(k, d, "pulled-back gradient")) return null;
            rec.Inspect("d/" + name, d);
        }
        rec.GradientNorm(k, d);
        if (ev.StepSizes(k, at, d) is not { } rho) return null;
        var task = PerItem.Times(d, rho);
        rec.Inspect("task/" + name, task);
        tasks.Add(k, d, task);
        return rho;
    }
}
