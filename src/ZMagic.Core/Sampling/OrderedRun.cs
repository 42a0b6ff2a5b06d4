namespace ZMagic.Core.Sampling;

/// <summary>One sampling run of <see cref="ConditionOrder.SampleWithBestOrder"/>: the items that chose one condition order.</summary>
/// <param name="Items">Positions of the run's items within the request (0 = the request's first item), ascending.</param>
/// <param name="Order">The order, as indices into the caller's condition list.</param>
/// <param name="Trace">The run's sampling trace.</param>
public sealed record OrderedRun(IReadOnlyList<int> Items, IReadOnlyList<int> Order, SamplingTrace Trace);
