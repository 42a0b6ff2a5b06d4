using ZMagic.Cli.Demo;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic demo</c>: the built-in digits demo.</summary>
public static class DemoCommand
{
    /// <summary>Help text.</summary>
    public const string Help = """
        Usage: zmagic demo [--out DIR] [--samples N] [--seed S] [--steps K] [--methods LIST] [--threads T] [--quiet]
                           [--class C] [--ink X] [--reference I] [--sweep LIST] [--time-steps LIST] [--no-clip]

        Generates digits with the embedded prior for one request whose conditions pull against each other: digit
        class (guide classifier), thick strokes (ink mass) and the style of a thin digit of another class (Gram
        matrices of guide features). Unguided sampling, Vanilla (independent, FreeDoM-style) guidance, Z-Magic and
        Z-Magic + CAGrad run at the same seeds, over one shared grid of guidance scales at equal steps, then at each
        method's best scale over other step counts (equal wall time). Needs no download and no GPU; about 15 minutes
        on 2 CPU cores with the defaults (--samples 64 --sweep 0.5,1,2 takes about two).

        Writes to DIR: unguided.png, vanilla.png, zmagic.png, zmagic_cagrad.png (image grids at multiplier 1),
        reference.png, sweep.png (success vs scale with 95 % intervals), tradeoff.png (final energies of two
        conditions, one point per scale), time.png (success vs seconds per image), cosine_histogram.png (cosines
        between the conditions' gradients; the paper's Fig. 1), energies.png and cosines.png (per step), report.md,
        report.json (per method at multiplier 1: joint_success, class_success, thickness_success, style_success,
        seconds_per_image, ...; "sweep" and "time_curve" with every point and its intervals) and trace_<method>.csv.
        Files appear only when the run completes (Ctrl+C leaves nothing partial).

        Options:
          --out DIR          output folder (default: zmagic-demo)
          --samples N        samples per method and scale (default 256)
          --seed S           run seed (default 0)
          --steps K          sampler steps of the sweep (default 25)
          --methods LIST     comma-separated subset of unguided,vanilla,zmagic,zmagic_cagrad (default: all)
          --sweep LIST       scale multipliers shared by every method (default 0.25,0.5,1,2,4)
          --time-steps LIST  further step counts at each method's best scale (default 10,50; "none" for none)
          --class C          wanted digit 0..9 (default 3)
          --ink X            wanted ink mass (default 0.17; MNIST averages about 0.10)
          --reference I      style reference: index among the embedded held-out digits (default 777, a thin 7)
          --scales A,B,C     step-size scales of class, thickness, style at multiplier 1 (default 1,4,1)
          --cagrad-c C       CAGrad's c (default 0.5)
          --style-threshold D  style distance counted as success (default 0.1)
          --no-clip          sample without x0 clipping
          --batch B          samples per sampler call (default 64; results do not depend on it)
          --threads T        libtorch threads (default 2)
          --quiet            no progress bar

        Example:
          dotnet run --project src/ZMagic.Cli -- demo --out demo-out
        """;

    /// <summary>Runs the command.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var p = ParsedArgs.Parse(args, new[] { "out", "samples", "seed", "steps", "methods", "threads", "class", "ink", "reference", "batch", "scales", "cagrad-c", "style-threshold", "sweep", "time-steps" }, new[] { "quiet", "no-clip" });
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
        var sweep = p.String("sweep") is { } sw ? NumberList(sw, "--sweep", v => v > 0 && double.IsFinite(v), "positive numbers") : d.Sweep;
        if (sweep.Distinct().Count() != sweep.Count) throw new UsageException("--sweep lists a multiplier twice.");
        var timeSteps = p.String("time-steps") is { } ts
            ? (ts.Trim() == "none" ? Array.Empty<int>() : NumberList(ts, "--time-steps", v => v >= 2 && v <= 1000 && v == Math.Floor(v), "whole numbers from 2 to 1000").Select(v => (int)v).ToArray())
            : d.TimeSteps;
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
            Sweep = sweep,
            TimeSteps = timeSteps,
            ClipX0 = !p.Flag("no-clip"),
        };
        App.SetThreads(p.Int("threads", 2, 1, 256));
        var results = new DigitsDemo(options).Run(p.Flag("quiet") ? null : stderr, ct);
        var keys = results.Sweep.Select(r => r.Method).Prepend(results.Unguided?.Method).OfType<string>().Distinct();
        stdout.WriteLine($"Wrote {Terminal.Escape(Path.GetFullPath(options.OutDir))} (report.md, report.json, {string.Join(", ", keys.Select(k => k + ".png"))}, sweep.png, tradeoff.png, time.png, cosine_histogram.png).");
        return ExitCodes.Ok;
    }

    private static IReadOnlyList<double> NumberList(string text, string option, Func<double, bool> valid, string what)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var values = new List<double>();
        foreach (var part in parts)
        {
            if (!double.TryParse(part, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) || !valid(v))
                throw new UsageException($"{option} takes comma-separated {what}; got '{text}'.");
            values.Add(v);
        }
        return values;
    }
}
