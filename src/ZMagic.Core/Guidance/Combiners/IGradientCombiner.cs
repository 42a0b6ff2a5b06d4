using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>Combines per-condition task gradients of one step into one update.</summary>
/// <remarks>
/// <see cref="Combine"/> treats its tensors as one problem. The strategies call it once per batch item (tasks of shape
/// [1, ...]), so that the weights a conflict combiner finds for one sample never depend on its batch mates; only a
/// combiner that declares <see cref="IsElementwise"/> receives the whole batch at once.
/// </remarks>
public interface IGradientCombiner
{
    /// <summary>Name for traces and reports.</summary>
    string Name { get; }

    /// <summary>
    /// The update for task gradients of equal shape. When all tasks agree, the result equals their plain sum.
    /// </summary>
    Tensor Combine(IReadOnlyList<Tensor> taskGradients);

    /// <summary>
    /// True when every element of the output depends only on the same element of the tasks (the plain sum), so the
    /// whole batch can be combined in one call. False by default: the strategies then call <see cref="Combine"/> once
    /// per batch item.
    /// </summary>
    bool IsElementwise => false;

    /// <summary>
    /// True when the combined update is the plain sum of the tasks, <c>Combine(D) = sum_k D_k</c>, whatever the tasks
    /// are. The strategies may then skip the per-condition gradients: with gradient-free step sizes,
    /// <c>sum_k rho_k d_k</c> is computed as ONE backward pass of <c>sum_k rho_k E_k</c> (the fused path; see
    /// <see cref="VanillaOptions.PerConditionGradients"/> and <see cref="ZMagicOptions.PerConditionGradients"/>), and
    /// <see cref="Combine"/> is not called with the individual tasks. False by default: declare it only for a combiner
    /// that is linear in exactly this sense (a weighted or conflict-aware combiner is not).
    /// </summary>
    bool IsLinear => false;
}
