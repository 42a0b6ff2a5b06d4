using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>The plain sum of task gradients (FreeDoM / TFG).</summary>
public sealed class SumCombiner : IGradientCombiner
{
    /// <summary>The shared instance.</summary>
    public static SumCombiner Instance { get; } = new();

    /// <inheritdoc />
    public string Name => "sum";

    /// <inheritdoc />
    public bool IsElementwise => true;

    /// <inheritdoc />
    public bool IsLinear => true;

    /// <inheritdoc />
    public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
    {
        ArgumentNullException.ThrowIfNull(taskGradients);
        if (taskGradients.Count == 0) throw new ArgumentException("No task gradients to combine.", nameof(taskGradients));
        var sum = taskGradients[0].clone();
        for (int i = 1; i < taskGradients.Count; i++) sum.add_(taskGradients[i]);
        return sum;
    }
}
