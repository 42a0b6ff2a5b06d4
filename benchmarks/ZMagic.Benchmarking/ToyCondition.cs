using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Benchmarking;

/// <summary>
/// A cheap, differentiable stand-in for an attribute encoder, so that step benchmarks measure the denoiser and the
/// guidance machinery rather than an encoder: the mean squared distance of a 4x average-pooled x0 to a fixed random
/// target (one target per condition, drawn once at construction).
/// </summary>
public sealed class ToyCondition : IGuidanceCondition
{
    private readonly Tensor _target;

    /// <summary>Creates the condition for samples of <paramref name="channels"/> x <paramref name="size"/> x <paramref name="size"/>.</summary>
    /// <param name="name">Unique name.</param>
    /// <param name="channels">Sample channels.</param>
    /// <param name="size">Sample height and width (a multiple of 4).</param>
    /// <param name="seed">Seed of the target.</param>
    /// <param name="device">Device of the target (the sample's device).</param>
    /// <param name="dtype">Floating dtype of the target (the sample's dtype).</param>
    /// <param name="stepSize">Constant step size rho (default 0.1).</param>
    public ToyCondition(string name, int channels, int size, long seed, Device? device = null, ScalarType dtype = ScalarType.Float32, double stepSize = 0.1)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels), channels, "At least one channel.");
        if (size < 4 || size % 4 != 0) throw new ArgumentOutOfRangeException(nameof(size), size, "The sample size must be a positive multiple of 4.");
        Name = name;
        Schedule = new GuidanceSchedule(new ConstantStepSize(stepSize));
        var g = new TorchSharp.torch.Generator((ulong)seed);
        using var t = rand(new long[] { 1, channels, size / 4, size / 4 }, generator: g) * 2 - 1;
        _target = t.to(dtype, device ?? CPU).DetachFromDisposeScope();
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <inheritdoc />
    public Tensor Energy(Tensor x0)
    {
        ArgumentNullException.ThrowIfNull(x0);
        var pooled = nn.functional.avg_pool2d(x0, 4);
        if (pooled.shape[1] != _target.shape[1] || pooled.shape[2] != _target.shape[2] || pooled.shape[3] != _target.shape[3])
            throw new ArgumentException($"ToyCondition '{Name}' expects x0 of shape [B, {_target.shape[1]}, {_target.shape[2] * 4}, {_target.shape[3] * 4}]; got [{string.Join(", ", x0.shape)}].", nameof(x0));
        return (pooled - _target).square().mean(new long[] { 1, 2, 3 });
    }

    /// <summary>n toy conditions named toy1..toyN with distinct targets.</summary>
    public static IReadOnlyList<IGuidanceCondition> Many(int n, int channels, int size, Device? device = null, ScalarType dtype = ScalarType.Float32, long seed = 1)
    {
        if (n < 0) throw new ArgumentOutOfRangeException(nameof(n), n, "The number of conditions must not be negative.");
        return Enumerable.Range(1, n).Select(i => (IGuidanceCondition)new ToyCondition($"toy{i}", channels, size, seed * 1000 + i, device, dtype)).ToList();
    }
}
