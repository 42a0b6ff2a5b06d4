namespace ZMagic.Cli.Demo;

/// <summary>
/// Settings of the digits demo. The defaults are the README's request: three conditions that pull against each other
/// (a thick 3 in the style of a thin 7), swept over one shared grid of guidance scales with the same budget for every
/// method.
/// </summary>
public sealed record DemoOptions
{
    /// <summary>Output folder.</summary>
    public string OutDir { get; init; } = "zmagic-demo";

    /// <summary>Samples per method and scale (same seeds everywhere).</summary>
    public int Samples { get; init; } = 256;

    /// <summary>Run seed.</summary>
    public long Seed { get; init; }

    /// <summary>Sampler steps of the sweep (same for every method).</summary>
    public int Steps { get; init; } = 25;

    /// <summary>
    /// Multipliers of the three conditions' scales, one shared grid for every method (the sweep's x axis).
    /// </summary>
    public IReadOnlyList<double> Sweep { get; init; } = DemoDefaults.Sweep;

    /// <summary>
    /// Further step counts, for success against seconds per image (equal wall time); each runs at each method's best
    /// scale and at that scale times <see cref="Steps"/> / S, and keeps the better.
    /// </summary>
    public IReadOnlyList<int> TimeSteps { get; init; } = DemoDefaults.TimeSteps;

    /// <summary>Wanted digit.</summary>
    public int TargetClass { get; init; } = 3;

    /// <summary>Wanted ink mass ("thick strokes": MNIST averages about 0.10 at 32x32).</summary>
    public double TargetInk { get; init; } = 0.17;

    /// <summary>Accepted |ink - target|.</summary>
    public double InkTolerance { get; init; } = 0.025;

    /// <summary>Index of the style reference among the embedded held-out digits.</summary>
    public int ReferenceIndex { get; init; } = DemoDefaults.ReferenceIndex;

    /// <summary>Accepted style distance.</summary>
    public double StyleThreshold { get; init; } = DemoDefaults.StyleThreshold;

    /// <summary>Step-size scale of the class condition at sweep multiplier 1.</summary>
    public double ClassScale { get; init; } = DemoDefaults.ClassScale;

    /// <summary>Step-size scale of the thickness condition at sweep multiplier 1.</summary>
    public double ThicknessScale { get; init; } = DemoDefaults.ThicknessScale;

    /// <summary>Step-size scale of the style condition at sweep multiplier 1.</summary>
    public double StyleScale { get; init; } = DemoDefaults.StyleScale;

    /// <summary>CAGrad's c.</summary>
    public double CAGradC { get; init; } = 0.5;

    /// <summary>Sample through <c>X0ClippingDenoiser</c> (DDPM's clip_denoised).</summary>
    public bool ClipX0 { get; init; } = DemoDefaults.ClipX0;

    /// <summary>The base sampler step of every method (guidance adds its updates on top).</summary>
    public DemoSampler Sampler { get; init; } = DemoDefaults.Sampler;

    /// <summary>Methods to run, in order (keys of report.json).</summary>
    public IReadOnlyList<string> Methods { get; init; } = DemoDefaults.AllMethods;

    /// <summary>
    /// Trial steps of the condition-order check: each Z-Magic method also runs at its best scale with
    /// <c>--order auto</c> (<see cref="ZMagic.Core.Sampling.ConditionOrder"/>); 0 skips the check.
    /// </summary>
    public int OrderSteps { get; init; } = 3;

    /// <summary>Batch size of one sampler call (samples are split into batches with identical results).</summary>
    public int Batch { get; init; } = 64;
}

/// <summary>Tuned defaults of the demo.</summary>
public static class DemoDefaults
{
    /// <summary>All methods.</summary>
    public static IReadOnlyList<string> AllMethods { get; } = new[] { "unguided", "vanilla", "vanilla_cagrad", "zmagic", "zmagic_cagrad" };

    /// <summary>
    /// The shared scale grid: powers of two that hold every method's best scale inside (on the 12-05 run Vanilla peaks
    /// at x2, Z-Magic at x4, Z-Magic + CAGrad at x8, and each falls off at x16).
    /// </summary>
    public static IReadOnlyList<double> Sweep { get; } = new[] { 0.5, 1.0, 2.0, 4.0, 8.0, 16.0 };

    /// <summary>Step counts of the equal-time curve besides the sweep's.</summary>
    public static IReadOnlyList<int> TimeSteps { get; } = new[] { 10, 50 };

    /// <summary>Style reference (held-out index): a thin 7 (ink 0.045), against a thick 3.</summary>
    public const int ReferenceIndex = 777;

    /// <summary>
    /// Style threshold: Gram distance to the reference of at most 0.1. A quarter of the held-out 3s are that close to
    /// the thin 7, none of the held-out 3s with thick strokes (ink above 0.145) is (closest 0.123), so thickness and
    /// style conflict.
    /// </summary>
    public const double StyleThreshold = 0.1;

    /// <summary>Class scale.</summary>
    public const double ClassScale = 1.0;

    /// <summary>Thickness scale.</summary>
    public const double ThicknessScale = 4.0;

    /// <summary>
    /// Style scale: 25. Gram distances are small numbers with small gradients next to the class cross-entropy's, so at
    /// scale 1 guidance barely moves them (Vanilla's final style energy stayed between 0.19 and 0.25 over a x0.25..x4
    /// sweep and no method met the request); at 25 the style pulls as hard as the other two and the conflict decides.
    /// </summary>
    public const double StyleScale = 25.0;

    /// <summary>x0 clipping.</summary>
    public const bool ClipX0 = true;

    /// <summary>The sampler step.</summary>
    public const DemoSampler Sampler = DemoSampler.FreeDoMEta;
}

/// <summary>The base sampler steps the demo offers.</summary>
public enum DemoSampler
{
    /// <summary>FreeDoM's face-code step with eta 0.5 (<see cref="ZMagic.Core.Diffusion.FreeDoMEtaStep"/>): re-noises x0 with a quarter of fresh variance.</summary>
    FreeDoMEta,

    /// <summary>The DDPM posterior (ancestral) step (<see cref="ZMagic.Core.Diffusion.DdpmPosteriorStep"/>; FreeDoM's Stable Diffusion and CLIP code).</summary>
    DdpmPosterior,
}

/// <summary>What a <see cref="DemoSampler"/> stands for.</summary>
public static class DemoSamplers
{
    /// <summary>The command-line names, in <see cref="DemoSampler"/> order.</summary>
    public static IReadOnlyList<string> Names => NameArray;

    private static readonly string[] NameArray = { "freedom-eta", "ddpm-posterior" };

    /// <summary>The command-line name.</summary>
    public static string Name(DemoSampler s) => NameArray[(int)s];

    /// <summary>The sampler from its command-line name.</summary>
    /// <exception cref="ArgumentException">An unknown name.</exception>
    public static DemoSampler Parse(string name) => Array.IndexOf(NameArray, name) is var i and >= 0
        ? (DemoSampler)i
        : throw new ArgumentException($"Unknown sampler '{name}'; choose from {string.Join(", ", Names)}.", nameof(name));

    /// <summary>A fresh step object.</summary>
    public static ZMagic.Core.Diffusion.ISamplerStep Create(DemoSampler s) => s switch
    {
        DemoSampler.DdpmPosterior => new ZMagic.Core.Diffusion.DdpmPosteriorStep(),
        _ => new ZMagic.Core.Diffusion.FreeDoMEtaStep(0.5),
    };

    /// <summary>How the report names it.</summary>
    public static string Describe(DemoSampler s) => s switch
    {
        DemoSampler.DdpmPosterior => "DDPM posterior (ancestral) step",
        _ => "FreeDoM eta step (eta 0.5)",
    };
}
