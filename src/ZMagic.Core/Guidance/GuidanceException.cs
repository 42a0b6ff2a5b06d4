namespace ZMagic.Core.Guidance;

/// <summary>Guidance failed at a named step and condition.</summary>
public class GuidanceException : Exception
{
    /// <summary>Creates the exception.</summary>
    public GuidanceException(string message, string? condition = null, int? timestep = null, Exception? inner = null)
        : base(message, inner)
    {
        Condition = condition;
        Timestep = timestep;
    }

    /// <summary>The condition that failed, when one did.</summary>
    public string? Condition { get; }

    /// <summary>The timestep where it failed.</summary>
    public int? Timestep { get; }
}
