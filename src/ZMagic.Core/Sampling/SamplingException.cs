namespace ZMagic.Core.Sampling;

/// <summary>A sampling run failed at a named step (for example, the sample became NaN or infinite).</summary>
public class SamplingException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What went wrong, naming the step.</param>
    /// <param name="stepIndex">Position of the failing step in the run (0-based, counting time-travel passes).</param>
    /// <param name="timestep">The step's timestep t.</param>
    /// <param name="next">The step's target timestep t'.</param>
    /// <param name="inner">The underlying exception, if any.</param>
    public SamplingException(string message, int stepIndex, int timestep, int next, Exception? inner = null)
        : base(message, inner)
    {
        StepIndex = stepIndex;
        Timestep = timestep;
        Next = next;
    }

    /// <summary>Position of the failing step in the run (0-based, counting time-travel passes).</summary>
    public int StepIndex { get; }

    /// <summary>The failing step's timestep t.</summary>
    public int Timestep { get; }

    /// <summary>The failing step's target timestep t'.</summary>
    public int Next { get; }
}
