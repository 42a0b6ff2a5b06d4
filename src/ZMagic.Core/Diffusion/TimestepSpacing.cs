namespace ZMagic.Core.Diffusion;

/// <summary>One sampler transition from timestep <see cref="T"/> to the smaller <see cref="Next"/> (-1 = clean).</summary>
/// <param name="T">The current timestep.</param>
/// <param name="Next">The target timestep, smaller than <paramref name="T"/>; -1 is the end of the chain.</param>
public readonly record struct TimestepPair(int T, int Next);

/// <summary>Builds the descending list of (t, t') transitions a sampler walks.</summary>
public static class TimestepSpacing
{
    /// <summary>
    /// FreeDoM's uniform skip: <c>skip = T / steps</c>, <c>seq = range(0, T, skip)</c>, <c>seq_next = [-1] + seq[:-1]</c>,
    /// walked in reverse. For T = 1000 and 100 steps: (990, 980), ..., (10, 0), (0, -1).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">steps is not in [1, trainSteps].</exception>
    public static IReadOnlyList<TimestepPair> Uniform(int trainSteps, int steps)
    {
        if (trainSteps < 1) throw new ArgumentOutOfRangeException(nameof(trainSteps), trainSteps, "trainSteps must be positive.");
        if (steps < 1 || steps > trainSteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps, $"steps must be in [1, {trainSteps}].");
        int skip = trainSteps / steps;
        var seq = new List<int>();
        for (int t = 0; t < trainSteps; t += skip) seq.Add(t);
        return FromDescending(Enumerable.Reverse(seq).ToArray(), trainSteps);
    }

    /// <summary>
    /// An explicit list of timesteps, strictly descending, each in [0, trainSteps); the last one steps to -1.
    /// </summary>
    /// <exception cref="ArgumentException">The list is empty, not strictly descending, or out of range.</exception>
    public static IReadOnlyList<TimestepPair> Explicit(IReadOnlyList<int> timesteps, int trainSteps)
        => FromDescending(timesteps, trainSteps);

    private static TimestepPair[] FromDescending(IReadOnlyList<int> ts, int trainSteps)
    {
        ArgumentNullException.ThrowIfNull(ts);
        if (ts.Count == 0) throw new ArgumentException("The timestep list is empty.", nameof(ts));
        var pairs = new TimestepPair[ts.Count];
        for (int i = 0; i < ts.Count; i++)
        {
            int t = ts[i];
            if (t < 0 || t >= trainSteps)
                throw new ArgumentException($"Timestep {t} at position {i} is outside [0, {trainSteps - 1}].", nameof(ts));
            int next = i + 1 < ts.Count ? ts[i + 1] : -1;
            if (next >= t)
                throw new ArgumentException($"Timesteps must be strictly descending; got {t} followed by {next} at position {i}.", nameof(ts));
            pairs[i] = new TimestepPair(t, next);
        }
        return pairs;
    }
}
