namespace ZMagic.Core.Guidance;

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
