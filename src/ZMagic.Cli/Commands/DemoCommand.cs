using ZMagic.Cli.Demo;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic demo</c>: the built-in digits demo.</summary>
public static class DemoCommand
{
    /// <summary>Help text.</summary>
    public const string Help = """
        Usage: zmagic demo [--out DIR] [--samples N] [--seed S] [--steps K] [--methods LIST] [--threads T] [--quiet]
                           [--class C] [--ink X] [--reference I]

        Generates digits with the embedded prior for one request — digit class (guide classifier), thick strokes (ink
        mass) and the style of a reference digit (Gram matrices of guide features) — with unguided sampling, Vanilla
        (independent, FreeDoM-style) guidance, Z-Magic and Z-Magic + CAGrad, at the same seeds and step budget.
        Needs no download and no GPU; about two minutes on 2 CPU cores with the defaults.

        Writes to DIR: unguided.png, vanilla.png, zmagic.png, zmagic_cagrad.png (image grids), reference.png,
        energies.png (per-step energies), cosines.png (gradient cosines between conditions), report.md,
        report.json (per method: joint_success, class_success, thickness_success, style_success, seconds_per_image, ...)
        and trace_<method>.csv. Files appear only when the run completes (Ctrl+C leaves nothing partial).

        Options:
          --out DIR        output folder (default: zmagic-demo)
          --samples N      samples per method (default 32)
          --seed S         run seed (default 0)
          --steps K        sampler steps per method (default 25)
          --methods LIST   comma-separated subset of unguided,vanilla,zmagic,zmagic_cagrad (default: all)
          --class C        wanted digit 0..9 (default 3)
          --ink X          wanted ink mass (default 0.17; MNIST averages about 0.10)
          --reference I    style reference: index among the embedded held-out digits
          --scales A,B,C   step-size scales of class, thickness, style (rho = sqrt(abar) * scale)
          --cagrad-c C     CAGrad's c (default 0.5)
          --style-threshold D  style distance counted as success
          --threads T      libtorch threads (default 2)
          --quiet          no progress bar

        Example:
          dotnet run --project src/ZMagic.Cli -- demo --out demo-out
        """;

    /// <summary>Runs the command.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var p = ParsedArgs.Parse(args, new[] { "out", "samples", "seed", "steps", "methods", "threads", "class", "ink", "reference", "batch", "scales", "cagrad-c", "style-threshold" }, new[] { "quiet" });
        if (p.Help) { stdout.WriteLine(Help); return ExitCodes.Ok; }
        if (p.Positionals.Count > 0) throw new UsageException($"Unexpected argument '{p.Positionals[0]}'.");
        var d = new DemoOptions();
        var methods = p.String("methods") is { } m
            ? m.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            : DemoDefaults.AllMethods.ToArray();
        foreach (var k in methods)
            if (!DemoDefaults.AllMethods.Contains(k)) throw new UsageException($"Unknown method '{k}' in --methods; choose from {string.Join(", ", DemoDefaults.AllMethods)}.");
        if (methods.Distinct().Count() != methods.Length) throw new UsageException("--methods lists a method twice.");
        double ink = p.Double("ink", d.TargetInk);
        if (!(ink > d.InkTolerance && ink < 1 - d.InkTolerance)) throw new UsageException($"--ink must be in ({d.InkTolerance}, {1 - d.InkTolerance}); got {ink}.");
        int samples = p.Int("samples", d.Samples, 1, 10_000);
        var scales = new[] { d.ClassScale, d.ThicknessScale, d.StyleScale };
        if (p.String("scales") is { } sc)
        {
            var parts = sc.Split(',');
            if (parts.Length != 3 || parts.Any(x => !double.TryParse(x, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) || !(v >= 0) || !double.IsFinite(v)))
                throw new UsageException($"--scales needs three non-negative numbers CLASS,THICKNESS,STYLE; got '{sc}'.");
            scales = parts.Select(x => double.Parse(x, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        }
        var options = d with
        {
            OutDir = p.String("out") ?? d.OutDir,
            Samples = samples,
            Seed = p.Long("seed", d.Seed),
            Steps = p.Int("steps", d.Steps, 2, 1000),
            Methods = methods,
            TargetClass = p.Int("class", d.TargetClass, 0, 9),
            TargetInk = ink,
            ReferenceIndex = p.Int("reference", d.ReferenceIndex, 0, int.MaxValue),
            Batch = p.Int("batch", d.Batch, 1, 4096),
            ClassScale = scales[0],
            ThicknessScale = scales[1],
            StyleScale = scales[2],
            CAGradC = p.Double("cagrad-c", d.CAGradC),
            StyleThreshold = p.Double("style-threshold", d.StyleThreshold),
        };
        App.SetThreads(p.Int("threads", 2, 1, 256));
        var results = new DigitsDemo(options).Run(p.Flag("quiet") ? null : stderr, ct);
        stdout.WriteLine($"Wrote {Terminal.Escape(Path.GetFullPath(options.OutDir))} (report.md, report.json, {string.Join(", ", results.Select(r => r.Key + ".png"))}, energies.png, cosines.png).");
        return ExitCodes.Ok;
    }
}
