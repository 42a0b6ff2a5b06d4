namespace ZMagic.Core.Guidance;

/// <summary>The dual's solution for one group (the whole tensor or one channel).</summary>
/// <param name="Weights">The simplex weights w (for 2 tasks: [x, 1 - x]).</param>
/// <param name="Lambda">The multiplier of g_w in <c>d = g0 + lambda g_w</c>.</param>
/// <param name="Objective">The dual objective at w (in the variant's own form).</param>
/// <param name="Coefficients">The final per-task coefficients, rescaling included: the output is <c>sum_k Coefficients[k] g_k</c>.</param>
/// <param name="Evaluations">Objective evaluations or iterations the solver used.</param>
public sealed record CAGradGroupSolution(double[] Weights, double Lambda, double Objective, double[] Coefficients, int Evaluations);
