namespace ZMagic.Core.Guidance;

/// <summary>Result of a bounded scalar minimisation.</summary>
/// <param name="X">The minimiser.</param>
/// <param name="Fun">The objective there.</param>
/// <param name="Evaluations">Objective evaluations used.</param>
internal readonly record struct ScalarMinimum(double X, double Fun, int Evaluations);
