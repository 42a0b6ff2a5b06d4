using ZMagic.Core.Guidance;

namespace ZMagic.Core.Sampling;

/// <summary>Options of <see cref="ConditionOrder.SampleWithBestOrder"/>.</summary>
public sealed record ConditionOrderOptions
{
    /// <summary>Sampler steps each candidate order is tried for (the first steps of the run). Default 3.</summary>
    public int TrialSteps { get; init; } = 3;

    /// <summary>
    /// Try every permutation of the conditions (at most 6 conditions: 720 orders) instead of each condition once as
    /// the first. Null (default): every permutation under <see cref="ZMagicChaining.Chain"/>, where the whole sequence
    /// matters; each condition first once under star chaining, where later conditions share one proposal and only the
    /// first one (the anchor) changes the step.
    /// </summary>
    public bool? AllPermutations { get; init; }

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">TrialSteps is below 1.</exception>
    public void Validate()
    {
        if (TrialSteps < 1) throw new ArgumentException($"{nameof(ConditionOrderOptions)}.{nameof(TrialSteps)} must be at least 1; got {TrialSteps}.");
    }
}
