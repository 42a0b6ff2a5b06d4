namespace ZMagic.Cli.Demo;

/// <summary>Settings of the digits demo. The defaults are the README's request; every method gets the same budget.</summary>
public sealed record DemoOptions
{
    /// <summary>Output folder.</summary>
    public string OutDir { get; init; } = "zmagic-demo";

    /// <summary>Samples per method (same seeds for every method).</summary>
    public int Samples { get; init; } = 32;

    /// <summary>Run seed.</summary>
    public long Seed { get; init; }

    /// <summary>Sampler steps (same for every method).</summary>
    public int Steps { get; init; } = 25;

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

    /// <summary>Step-size scale of the class condition.</summary>
    public double ClassScale { get; init; } = DemoDefaults.ClassScale;

    /// <summary>Step-size scale of the thickness condition.</summary>
    public double ThicknessScale { get; init; } = DemoDefaults.ThicknessScale;

    /// <summary>Step-size scale of the style condition.</summary>
    public double StyleScale { get; init; } = DemoDefaults.StyleScale;

    /// <summary>CAGrad's c.</summary>
    public double CAGradC { get; init; } = 0.5;

    /// <summary>Methods to run, in order (keys of report.json).</summary>
    public IReadOnlyList<string> Methods { get; init; } = DemoDefaults.AllMethods;

    /// <summary>Batch size of one sampler call (samples are split into batches with identical results).</summary>
    public int Batch { get; init; } = 32;
}

/// <summary>Tuned defaults of the demo.</summary>
public static class DemoDefaults
{
    /// <summary>All methods.</summary>
    public static IReadOnlyList<string> AllMethods { get; } = new[] { "unguided", "vanilla", "zmagic", "zmagic_cagrad" };

    /// <summary>Style reference (held-out index).</summary>
    public const int ReferenceIndex = 0;

    /// <summary>Style threshold.</summary>
    public const double StyleThreshold = 1.0;

    /// <summary>Class scale.</summary>
    public const double ClassScale = 1.0;

    /// <summary>Thickness scale.</summary>
    public const double ThicknessScale = 4.0;

    /// <summary>Style scale.</summary>
    public const double StyleScale = 1.0;
}
