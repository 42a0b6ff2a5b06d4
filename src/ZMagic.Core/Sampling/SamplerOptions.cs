using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Core.Sampling;

/// <summary>Options of one sampling run.</summary>
public sealed record SamplerOptions
{
    /// <summary>
    /// Number of sampler steps, as FreeDoM's uniform skip over the training timesteps (<see cref="TimestepSpacing.Uniform"/>:
    /// when it does not divide the training timesteps, a few more transitions run). Ignored when <see cref="Timesteps"/> is set.
    /// </summary>
    public int Steps { get; init; } = 100;

    /// <summary>Explicit descending timesteps; overrides <see cref="Steps"/>.</summary>
    public IReadOnlyList<int>? Timesteps { get; init; }

    /// <summary>The base transition (FreeDoM's eta step with eta = 0.5 by default, as the face code).</summary>
    public ISamplerStep SamplerStep { get; init; } = new FreeDoMEtaStep(0.5);

    /// <summary>How conditions are combined. Null: unguided when there are no conditions, else the sampler's default strategy.</summary>
    public IGuidanceStrategy? Strategy { get; init; }

    /// <summary>The combiner of per-condition task gradients. Null: plain sum.</summary>
    public IGradientCombiner? Combiner { get; init; }

    /// <summary>Time-travel (FreeDoM's recurrent strategy); null for none.</summary>
    public TimeTravel? TimeTravel { get; init; }

    /// <summary>
    /// Run seed; item i's noise depends only on (seed, first item index + i). See <see cref="ConditionalSampler"/> for
    /// the order in which each item's stream is consumed.
    /// </summary>
    public long Seed { get; init; }

    /// <summary>Number of images.</summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>Index of the first item, so that a large request can be split into batches with identical results.</summary>
    public int FirstItem { get; init; }

    /// <summary>
    /// Explicit item indices, one per batch item (each non-negative, no repeats): batch item b is item
    /// <c>Items[b]</c> of the request and draws from that item's noise stream, so any subset of a request can be
    /// sampled as one batch with the images it has in the whole request. Overrides <see cref="FirstItem"/>; its count
    /// must equal <see cref="BatchSize"/>. Null (default): items FirstItem .. FirstItem + BatchSize - 1.
    /// </summary>
    public IReadOnlyList<int>? Items { get; init; }

    /// <summary>Device to sample on (default CPU). The denoiser and conditions must live there too.</summary>
    public Device? Device { get; init; }

    /// <summary>Sample dtype (default float32; float64 for reference checks). Must be a floating-point type.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>What to do when a condition yields non-finite energies or gradients.</summary>
    public NonFinitePolicy NonFinitePolicy { get; init; } = NonFinitePolicy.Fail;

    /// <summary>
    /// On the CPU, before the first guided step, make sure libtorch's kernels compute correct gradients on this
    /// machine: <see cref="ZMagic.Core.Native.NumericsSelfCheck.EnsureHealthy"/> runs once per process (about a second;
    /// later runs reuse its answer) and, if oneDNN's kernels are wrong here, routes around them process-wide
    /// (convolutions channels-last, else oneDNN off). Default true;
    /// set false when the application has already decided (e.g. called <c>EnsureHealthy</c> itself at start).
    /// </summary>
    public bool CheckNumerics { get; init; } = true;

    /// <summary>
    /// Optional starting sample x_T [B, C, H, W] (finite values); drawn from the item streams when null. It is
    /// copied, never modified or disposed by the sampler.
    /// </summary>
    public Tensor? InitialNoise { get; init; }
}

/// <summary>
/// FreeDoM's time-travel: inside the window, after a step t -> t' go back with
/// <c>x_t = sqrt(abar_t / abar_t') x_t' + sqrt(1 - abar_t / abar_t') z</c> and redo the step, <see cref="Repeats"/> times in all.
/// </summary>
/// <param name="Repeats">Total passes per step inside the window (1 = no time travel).</param>
/// <param name="From">Lowest timestep of the window (inclusive).</param>
/// <param name="To">Highest timestep of the window (inclusive).</param>
public sealed record TimeTravel(int Repeats, int From, int To)
{
    /// <summary>Total passes per step inside the window, at least 1.</summary>
    public int Repeats { get; init; } = Repeats >= 1
        ? Repeats
        : throw new ArgumentOutOfRangeException(nameof(Repeats), Repeats, "Time travel needs at least 1 pass per step.");

    /// <summary>Lowest timestep of the window (inclusive); not above <see cref="To"/>.</summary>
    public int From { get; init; } = From <= To
        ? From
        : throw new ArgumentException($"The time-travel window [{From}, {To}] is empty: From must not exceed To.", nameof(From));

    /// <summary>Passes to run at timestep <paramref name="t"/>.</summary>
    public int RepeatsAt(int t) => t >= From && t <= To ? Repeats : 1;
}

/// <summary>Progress of a run, reported after each step.</summary>
/// <param name="Step">Steps completed (counting repeats).</param>
/// <param name="TotalSteps">Steps in the run (counting repeats).</param>
/// <param name="Timestep">The timestep just completed.</param>
/// <param name="Trace">The trace entry of the step just completed.</param>
public readonly record struct SamplingProgress(int Step, int TotalSteps, int Timestep, StepTrace Trace);

/// <summary>The result of a run: images and the trace. Dispose it to free the images.</summary>
public sealed class SamplingResult : IDisposable
{
    /// <summary>Creates the result.</summary>
    public SamplingResult(Tensor images, SamplingTrace trace)
    {
        Images = images;
        Trace = trace;
    }

    /// <summary>Final samples [B, C, H, W] in the denoiser's data range (not clamped).</summary>
    public Tensor Images { get; }

    /// <summary>Per-step trace.</summary>
    public SamplingTrace Trace { get; }

    /// <inheritdoc />
    public void Dispose() => Images.Dispose();
}
