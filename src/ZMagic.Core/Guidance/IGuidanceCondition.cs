using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// One attribute that steers sampling: an energy of the clean estimate x0 that is low when x0 has the attribute.
/// </summary>
/// <remarks>
/// Implementations encode their reference inputs once, at construction, never per step. <see cref="Energy"/> must be
/// differentiable with respect to <c>x0</c> and work on batches. A new condition is one class implementing this
/// interface; nothing in the core needs to change.
/// </remarks>
public interface IGuidanceCondition
{
    /// <summary>A short, unique name used in traces and reports (e.g. "identity", "landmarks").</summary>
    string Name { get; }

    /// <summary>How large a step this condition takes and when it is active.</summary>
    GuidanceSchedule Schedule { get; }

    /// <summary>
    /// Per-item energies [B] (non-negative) of the clean estimate <paramref name="x0"/> [B, C, H, W], given in the
    /// denoiser's data range (usually [-1, 1]).
    /// </summary>
    Tensor Energy(Tensor x0);
}
