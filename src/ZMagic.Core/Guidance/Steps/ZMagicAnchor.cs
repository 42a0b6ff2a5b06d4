using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Z-Magic's first condition: <c>g1 = grad_{x_t} E_1(x0(x_t))</c> and <c>rho_1</c>, or none when the sequence is
/// anchored on the base step (then g1 = 0 and the proposal is S(x_t) itself).
/// </summary>
/// <param name="G1">g1 in the graph of x_t (with its own graph under the Full Jacobian); null without an anchor.</param>
/// <param name="G1Detached">g1 detached (zeros without an anchor).</param>
/// <param name="Rho1">The anchor's per-item step sizes ({0} without an anchor).</param>
/// <param name="Later">The active conditions after the anchor, in order.</param>
internal sealed record ZMagicAnchor(Tensor? G1, Tensor G1Detached, double[] Rho1, IReadOnlyList<int> Later)
{
    /// <summary>No anchor condition: every active condition is a later one.</summary>
    public static ZMagicAnchor None(IReadOnlyList<int> active, Tensor baseStep) => new(null, zeros_like(baseStep), new[] { 0.0 }, active);

    /// <summary>
    /// The first active condition whose energy, gradient and step sizes are finite becomes the anchor, and its task
    /// <c>rho_1 g1</c> the first of <paramref name="tasks"/>; null when the policy skipped them all.
    /// </summary>
    public static ZMagicAnchor? Find(StepParts parts, XtEstimate at, EvaluationPoint xt, IReadOnlyList<int> active, bool withHessian, TaskList tasks)
    {
        for (int pos = 0; pos < active.Count; pos++)
        {
            parts.Step.CancellationToken.ThrowIfCancellationRequested();
            int k = active[pos];
            if (xt.Energy(parts, k, 0) is not { } e) continue;
            // The graph of x_t stays alive for the pull-backs (and for a later anchor if this one is skipped).
            var g = xt.Gradient(parts, e.sum(), retainGraph: true, $"gradient of '{parts.Conditions.Name(k)}'", createGraph: withHessian);
            if (ConditionTask.Add(parts, at, k, g.detach(), xt, pullBack: null, retainPullBack: false, tasks) is { } rho)
                return new ZMagicAnchor(g, g.detach(), rho, active.Skip(pos + 1).ToList());
        }
        return null;
    }
}
