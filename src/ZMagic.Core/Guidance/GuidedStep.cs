using ZMagic.Core.Diffusion;
using ZMagic.Core.Sampling;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>Everything a strategy needs for one step. Created by the sampler inside the step's dispose scope.</summary>
public sealed class GuidedStep
{
    /// <summary>The backbone.</summary>
    public required IDenoiser Denoiser { get; init; }

    /// <summary>x_t [B, C, H, W], detached.</summary>
    public required Tensor X { get; init; }

    /// <summary>The timestep as the float tensor [B] the denoiser takes.</summary>
    public required Tensor TimestepTensor { get; init; }

    /// <summary>Current and target timesteps.</summary>
    public required TimestepPair Timesteps { get; init; }

    /// <summary>abar_t.</summary>
    public required double AlphaBar { get; init; }

    /// <summary>abar_t'.</summary>
    public required double AlphaBarNext { get; init; }

    /// <summary>The base sampler transition.</summary>
    public required ISamplerStep Sampler { get; init; }

    /// <summary>The step's noise draw (null when the sampler uses none).</summary>
    public Tensor? Noise { get; init; }

    /// <summary>All conditions, in the user's order (inactive ones included; check their windows).</summary>
    public required IReadOnlyList<IGuidanceCondition> Conditions { get; init; }

    /// <summary>The combiner of per-condition task gradients.</summary>
    public required IGradientCombiner Combiner { get; init; }

    /// <summary>What to do with non-finite energies or gradients.</summary>
    public NonFinitePolicy NonFinitePolicy { get; init; } = NonFinitePolicy.Fail;

    /// <summary>The trace entry of this step.</summary>
    public required StepTrace Trace { get; init; }

    /// <summary>Cancellation, checked between phases of the step.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>
    /// Draws one more standard-normal tensor shaped like <see cref="X"/> from the run's noise streams (null when the
    /// caller offers none). Only the research code's per-branch proposals (<see cref="ZMagicOptions.BranchNoise"/>)
    /// use it.
    /// </summary>
    public Func<Tensor>? DrawNoise { get; init; }

    /// <summary>
    /// Optional probe that receives named intermediate tensors of the step (detached; valid only during the call:
    /// clone what you keep). For tests and debugging; see the strategies for the names.
    /// </summary>
    public Action<string, Tensor>? Inspect { get; init; }
}
