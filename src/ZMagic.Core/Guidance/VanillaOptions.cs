namespace ZMagic.Core.Guidance;

/// <summary>Options of <see cref="VanillaStrategy"/>.</summary>
public sealed record VanillaOptions
{
    /// <summary>
    /// Always compute each condition's gradient with its own backward pass (K backwards), so that the trace carries
    /// per-condition gradient norms and the pairwise cosines (the paper's Fig. 1). When false (default), a step whose
    /// combiner is the plain sum (<see cref="IGradientCombiner.IsLinear"/>) and whose step-size rules ignore the gradient takes ONE backward pass of
    /// <c>sum_k rho_k E_k</c> for all conditions together, as FreeDoM does; otherwise per-condition backwards are used.
    /// </summary>
    public bool PerConditionGradients { get; init; }

    /// <summary>
    /// When per-condition gradients are needed (a conflict combiner such as CAGrad, gradient-based step sizes, or
    /// <see cref="PerConditionGradients"/>), take them from ONE denoiser forward of x_t replicated K times along the
    /// batch dimension ([K*B, ...]; condition k is evaluated on copy k) and ONE backward pass, instead of one forward
    /// and K backwards. The results equal the unbatched path within float tolerance. Pays where a call's fixed cost
    /// dominates (GPUs at batch 1); on a CPU a batch-K pass costs about K passes (measured slower even on the 32x32 net), and the memory of the graph
    /// grows K-fold. Off by default; ignored when the fused single backward applies.
    /// </summary>
    public bool BatchConditionGradients { get; init; }
}
