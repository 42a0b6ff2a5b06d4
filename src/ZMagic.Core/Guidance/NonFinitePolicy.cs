namespace ZMagic.Core.Guidance;

/// <summary>What the sampler does when a condition's energy or gradient is NaN or infinite.</summary>
public enum NonFinitePolicy
{
    /// <summary>Throw a <see cref="GuidanceException"/> naming the condition and the step.</summary>
    Fail,
    /// <summary>Drop that condition's contribution for that step, mark it skipped in the trace, and go on.</summary>
    SkipCondition,
}
