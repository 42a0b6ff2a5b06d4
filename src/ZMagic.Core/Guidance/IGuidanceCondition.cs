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

/// <summary>A condition's step-size rule and guidance window.</summary>
/// <param name="StepSize">How the step size rho is computed at each step.</param>
/// <param name="Window">The timesteps where the condition acts; <see cref="GuidanceWindow.Always"/> by default.</param>
public sealed record GuidanceSchedule(IStepSizeRule StepSize, GuidanceWindow? Window = null)
{
    /// <summary>The effective window.</summary>
    public GuidanceWindow EffectiveWindow => Window ?? GuidanceWindow.Always;
}

/// <summary>
/// The timesteps where guidance acts: active when <c>Stop &lt; t &lt;= Start</c>. FreeDoM's faces use Stop = 200
/// ("if not i &lt;= stop"), so t = Stop itself is unguided.
/// </summary>
/// <param name="Stop">Guidance is off at and below this timestep (-1: never off).</param>
/// <param name="Start">Guidance is off above this timestep (int.MaxValue: never off).</param>
public sealed record GuidanceWindow(int Stop = -1, int Start = int.MaxValue)
{
    /// <summary>Active at every timestep.</summary>
    public static GuidanceWindow Always { get; } = new();

    /// <summary>Whether guidance is active at timestep <paramref name="t"/>.</summary>
    public bool IsActive(int t) => t > Stop && t <= Start;
}
