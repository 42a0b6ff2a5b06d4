namespace ZMagic.Core.Diffusion;

/// <summary>One sampler transition from timestep <see cref="T"/> to the smaller <see cref="Next"/> (-1 = clean).</summary>
/// <param name="T">The current timestep.</param>
/// <param name="Next">The target timestep, smaller than <paramref name="T"/>; -1 is the end of the chain.</param>
public readonly record struct TimestepPair(int T, int Next);

/// <summary>Builds the descending list of (t, t') transitions a sampler walks.</summary>
public static class TimestepSpacing
{
    /// <summary>
    /// FreeDoM's uniform skip (runners/diffusion.py): <c>skip = T / steps</c> (integer division),
    /// <c>seq = range(0, T, skip)</c>, <c>seq_next = [-1] + seq[:-1]</c>, walked in reverse.
    /// For T = 1000 and 100 steps: (990, 980), ..., (10, 0), (0, -1).
    /// </summary>
    /// <remarks>
    /// Like the reference, the list has <c>ceil(T / skip)</c> transitions, which is more than <paramref name="steps"/>
    /// when <paramref name="steps"/> does not divide T (T = 1000, 300 steps: skip 3, 334 transitions starting at 999).
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">trainSteps is not positive, or steps is not in [1, trainSteps].</exception>
    public static IReadOnlyList<TimestepPair> Uniform(int trainSteps, int steps)
    {
        if (trainSteps < 1) throw new ArgumentOutOfRangeException(nameof(trainSteps), trainSteps, "trainSteps must be positive.");
        if (steps < 1 || steps > trainSteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps, $"The number of sampler steps must be in [1, {trainSteps}] (the schedule's training timesteps).");
        int skip = trainSteps / steps;
        var seq = new List<int>();
        for (int t = 0; t < trainSteps; t += skip) seq.Add(t);
        seq.Reverse();
        return FromDescending(seq, trainSteps, "steps");
    }

    /// <summary>
    /// An explicit list of timesteps, strictly descending, each in [0, trainSteps); the last one steps to -1.
    /// </summary>
    /// <exception cref="ArgumentException">The list is empty, not strictly descending, or out of range.</exception>
    public static IReadOnlyList<TimestepPair> Explicit(IReadOnlyList<int> timesteps, int trainSteps)
    {
        ArgumentNullException.ThrowIfNull(timesteps);
        if (trainSteps < 1) throw new ArgumentOutOfRangeException(nameof(trainSteps), trainSteps, "trainSteps must be positive.");
        return FromDescending(timesteps, trainSteps, nameof(timesteps));
    }

    private static TimestepPair[] FromDescending(IReadOnlyList<int> ts, int trainSteps, string paramName)
    {
        if (ts.Count == 0) throw new ArgumentException("The timestep list is empty; a sampler needs at least one timestep.", paramName);
        var pairs = new TimestepPair[ts.Count];
        for (int i = 0; i < ts.Count; i++)
        {
            int t = ts[i];
            if (t < 0 || t >= trainSteps)
                throw new ArgumentException($"Timestep {t} at position {i} is outside [0, {trainSteps - 1}] (the schedule has {trainSteps} training timesteps).", paramName);
            int next = i + 1 < ts.Count ? ts[i + 1] : -1;
            if (next >= t)
                throw new ArgumentException($"Timesteps must be strictly descending; got {t} followed by {next} at position {i}.", paramName);
            pairs[i] = new TimestepPair(t, next);
        }
        return pairs;
    }
}
