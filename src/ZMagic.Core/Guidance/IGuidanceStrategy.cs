using ZMagic.Core.Diffusion;
using ZMagic.Core.Sampling;
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

/// <summary>What the sampler does when a condition's energy or gradient is NaN or infinite.</summary>
public enum NonFinitePolicy
{
    /// <summary>Throw a <see cref="GuidanceException"/> naming the condition and the step.</summary>
    Fail,
    /// <summary>Drop that condition's contribution for that step, mark it skipped in the trace, and go on.</summary>
    SkipCondition,
}

/// <summary>Combines per-condition task gradients of one step into one update.</summary>
/// <remarks>
/// <see cref="Combine"/> treats its tensors as one problem. The strategies call it once per batch item (tasks of shape
/// [1, ...]), so that the weights a conflict combiner finds for one sample never depend on its batch mates; only a
/// combiner that declares <see cref="IsElementwise"/> receives the whole batch at once.
/// </remarks>
public interface IGradientCombiner
{
    /// <summary>Name for traces and reports.</summary>
    string Name { get; }

    /// <summary>
    /// The update for task gradients of equal shape. When all tasks agree, the result equals their plain sum.
    /// </summary>
    Tensor Combine(IReadOnlyList<Tensor> taskGradients);

    /// <summary>
    /// True when every element of the output depends only on the same element of the tasks (the plain sum), so the
    /// whole batch can be combined in one call. False by default: the strategies then call <see cref="Combine"/> once
    /// per batch item.
    /// </summary>
    bool IsElementwise => false;

    /// <summary>
    /// True when the combined update is the plain sum of the tasks, <c>Combine(D) = sum_k D_k</c>, whatever the tasks
    /// are. The strategies may then skip the per-condition gradients: with gradient-free step sizes,
    /// <c>sum_k rho_k d_k</c> is computed as ONE backward pass of <c>sum_k rho_k E_k</c> (the fused path; see
    /// <see cref="VanillaOptions.PerConditionGradients"/> and <see cref="ZMagicOptions.PerConditionGradients"/>), and
    /// <see cref="Combine"/> is not called with the individual tasks. False by default: declare it only for a combiner
    /// that is linear in exactly this sense (a weighted or conflict-aware combiner is not).
    /// </summary>
    bool IsLinear => false;
}

/// <summary>Guidance failed at a named step and condition.</summary>
public class GuidanceException : Exception
{
    /// <summary>Creates the exception.</summary>
    public GuidanceException(string message, string? condition = null, int? timestep = null, Exception? inner = null)
        : base(message, inner)
    {
        Condition = condition;
        Timestep = timestep;
    }

    /// <summary>The condition that failed, when one did.</summary>
    public string? Condition { get; }

    /// <summary>The timestep where it failed.</summary>
    public int? Timestep { get; }
}
