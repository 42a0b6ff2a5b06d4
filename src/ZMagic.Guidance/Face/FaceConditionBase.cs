using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Encoders.Face;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Face;

/// <summary>
/// Shared plumbing of the face conditions: name and schedule, input checks, and a reference target kept on the CPU
/// and copied once to each device/dtype that x0 arrives in.
/// </summary>
public abstract class FaceConditionBase : IGuidanceCondition, IDisposable
{
    private readonly Tensor _target;
    private readonly Dictionary<(DeviceType, int, ScalarType), Tensor> _targets = new();
    private bool _disposed;

    /// <summary>Stores the detached reference target (leading dimension 1 or the batch size).</summary>
    protected FaceConditionBase(FaceConditionOptions options, Tensor target)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(target);
        Schedule = options.ToSchedule();
        Name = options.Name;
        _target = target.detach().cpu().clone();
        _target.DetachFromDisposeScope();
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <summary>The reference target (embedding, landmarks, logits or labels) on the CPU; batch 1 broadcasts.</summary>
    public Tensor Target => _target;

    /// <inheritdoc />
    public abstract Tensor Energy(Tensor x0);

    /// <summary>The target on <paramref name="like"/>'s device (in its dtype when floating), checked against its batch size.</summary>
    protected Tensor TargetFor(Tensor like, bool keepDType = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long b = like.shape[0], tb = _target.shape[0];
        if (tb != 1 && tb != b)
            throw new ArgumentException($"condition '{Name}': the reference has batch size {tb}, x0 has {b}; give one reference or one per item.");
        var dtype = keepDType ? _target.dtype : like.dtype;
        var key = (like.device_type, like.device_index, dtype);
        if (!_targets.TryGetValue(key, out var t))
        {
            t = _target.to(dtype, like.device);
            t.DetachFromDisposeScope();
            _targets[key] = t;
        }
        return t;
    }

    /// <summary>Checks x0 is a floating [B, 3, H, W] batch.</summary>
    protected void CheckInput(Tensor x0) => FaceInput.RequireImageBatch(x0, $"condition '{Name}': x0");

    /// <summary>Checks a reference image: [N, 3, H, W], finite, within [-1, 1].</summary>
    protected static void CheckReference(Tensor image, string who)
    {
        FaceInput.RequireImageBatch(image, $"{who}: reference image");
        FaceInput.RequireRange(image, -1, 1, $"{who}: reference image");
    }

    /// <summary>Per-item L2 norm over every dimension but the first: [B, ...] -> [B].</summary>
    protected static Tensor PerItemNorm(Tensor residual) => residual.flatten(1).norm(1);

    /// <summary>Releases the cached targets.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _targets.Values) t.Dispose();
        _targets.Clear();
        _target.Dispose();
        GC.SuppressFinalize(this);
    }
}
