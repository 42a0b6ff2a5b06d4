using static TorchSharp.torch;

namespace ZMagic.Core.Sampling;

/// <summary>What <see cref="ConditionOrder.SampleWithBestOrder"/> tried, chose and made.</summary>
public sealed class OrderedSamplingResult : IDisposable
{
    internal OrderedSamplingResult(Tensor images, IReadOnlyList<IReadOnlyList<int>> candidates, double[][] trialEnergies, int[] choice,
        IReadOnlyList<OrderedRun> runs, TimeSpan searchTime, TimeSpan sampleTime)
    {
        Images = images;
        Candidates = candidates;
        TrialEnergies = trialEnergies;
        Choice = choice;
        Runs = runs;
        SearchTime = searchTime;
        SampleTime = sampleTime;
    }

    /// <summary>Final samples [B, C, H, W] in item order (not clamped).</summary>
    public Tensor Images { get; }

    /// <summary>The orders tried, as indices into the caller's condition list; the first is the given order.</summary>
    public IReadOnlyList<IReadOnlyList<int>> Candidates { get; }

    /// <summary>Per candidate, per item: the summed energy of every condition on the trial's clean estimate ([K][B]).</summary>
    public double[][] TrialEnergies { get; }

    /// <summary>Per item, the index of its chosen candidate (lowest trial energy; ties keep the earlier candidate).</summary>
    public IReadOnlyList<int> Choice { get; }

    /// <summary>The sampling runs, one per chosen order (in candidate order).</summary>
    public IReadOnlyList<OrderedRun> Runs { get; }

    /// <summary>Wall time of the trials.</summary>
    public TimeSpan SearchTime { get; }

    /// <summary>Wall time of the final sampling.</summary>
    public TimeSpan SampleTime { get; }

    /// <inheritdoc />
    public void Dispose() => Images.Dispose();
}
