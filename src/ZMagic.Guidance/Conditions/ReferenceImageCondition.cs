using TorchSharp;
using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Conditions;

/// <summary>
/// A generic built-in condition: the mean squared distance between x0 and a reference image (in the denoiser's data
/// range), optionally compared at a lower resolution so only the coarse layout is steered.
/// </summary>
public sealed class ReferenceImageCondition : IGuidanceCondition, IDisposable
{
    private readonly Tensor _reference;
    private readonly int _compareSize;

    /// <summary>Creates the condition.</summary>
    /// <param name="reference">The reference [C, H, W] or [1, C, H, W]; copied.</param>
    /// <param name="schedule">Step size and window; default a constant step of 1.</param>
    /// <param name="compareSize">Side length both images are average-pooled to before comparing (0 = full resolution).</param>
    /// <param name="name">Name in traces.</param>
    /// <exception cref="ArgumentException">The reference is not 3-D/4-D with one item, or <paramref name="compareSize"/> is negative or does not divide its size.</exception>
    public ReferenceImageCondition(Tensor reference, GuidanceSchedule? schedule = null, int compareSize = 0, string name = "reference")
    {
        ArgumentNullException.ThrowIfNull(reference);
        var r = reference.dim() == 3 ? reference.unsqueeze(0) : reference;
        if (r.dim() != 4 || r.shape[0] != 1)
            throw new ArgumentException($"The reference must be [C, H, W] or [1, C, H, W]; got [{string.Join(", ", reference.shape)}].", nameof(reference));
        if (compareSize < 0 || (compareSize > 0 && (r.shape[2] % compareSize != 0 || r.shape[3] % compareSize != 0)))
            throw new ArgumentException($"compareSize {compareSize} must be 0 or divide the reference size {r.shape[2]}x{r.shape[3]}.", nameof(compareSize));
        _compareSize = compareSize;
        _reference = Pool(r.detach().to(ScalarType.Float32)).clone().DetachFromDisposeScope();
        Schedule = schedule ?? new GuidanceSchedule(new ConstantStepSize(1.0));
        Name = name;
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <inheritdoc />
    public Tensor Energy(Tensor x0)
    {
        ArgumentNullException.ThrowIfNull(x0);
        if (x0.dim() != 4 || x0.shape[1] != _reference.shape[1] || (_compareSize == 0 && (x0.shape[2] != _reference.shape[2] || x0.shape[3] != _reference.shape[3])))
            throw new ArgumentException($"x0 [{string.Join(", ", x0.shape)}] does not match the reference [{string.Join(", ", _reference.shape)}].", nameof(x0));
        var diff = Pool(x0) - _reference.to(x0.dtype, x0.device);
        return diff.square().flatten(1).mean([1L]);
    }

    private Tensor Pool(Tensor x)
    {
        if (_compareSize == 0 || x.shape[2] == _compareSize) return x;
        if (x.shape[2] % _compareSize != 0 || x.shape[3] % _compareSize != 0)
            throw new ArgumentException($"Image size {x.shape[2]}x{x.shape[3]} is not a multiple of compareSize {_compareSize}.");
        return nn.functional.avg_pool2d(x, [x.shape[2] / _compareSize, x.shape[3] / _compareSize]);
    }

    /// <inheritdoc />
    public void Dispose() => _reference.Dispose();
}
