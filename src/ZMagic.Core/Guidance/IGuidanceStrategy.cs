using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// How one guided step combines the conditions: independently (Vanilla / FreeDoM) or sequentially (Z-Magic).
/// </summary>
public interface IGuidanceStrategy
{
    /// <summary>Name for traces and reports.</summary>
    string Name { get; }

    /// <summary>
    /// Performs one step x_t -> x_t' and returns the new sample (detached from any graph). Implementations record
    /// energies, gradient norms, step sizes, cosines, timings and pass counts in <see cref="GuidedStep.Trace"/>.
    /// </summary>
    Tensor Step(GuidedStep step);
}
