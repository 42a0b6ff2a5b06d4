using System.CommandLine;
using ZMagic.Cli.CommandLine;
using ZMagic.Cli.Demo;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic demo</c>: the built-in digits demo.</summary>
public static class DemoCommand
{
    private const string Summary = "Run the built-in digits demo: unguided, vanilla, zmagic, zmagic+cagrad; pictures and a report";

    private const string Details = """
        Generates digits with the embedded prior for one request — digit class (guide classifier), thick strokes (ink
        mass) and the style of a reference digit (Gram matrices of guide features) — with unguided sampling, Vanilla
        (independent, FreeDoM-style) guidance, Z-Magic and Z-Magic + CAGrad, at the same seeds and step budget.
        Needs no download and no GPU; about two minutes on 2 CPU cores with the defaults.

        Writes to DIR: unguided.png, vanilla.png, zmagic.png, zmagic_cagrad.png (image grids), reference.png,
        energies.png (per-step energies), cosines.png (gradient cosines between conditions), report.md,
        report.json (per method: joint_success, class_success, thickness_success, style_success, seconds_per_image, ...)
        and trace_<method>.csv. Files appear only when the run completes (Ctrl+C leaves nothing partial).
        """;

    private const string Examples = """
        Example:
          dotnet run --project src/ZMagic.Cli -- demo --out demo-out
        """;

    private static readonly DemoOptions D = new();

    /// <summary>Every option of <c>zmagic demo</c>: declared here once (help, default, checks), read in <see cref="Run"/>.</summary>
    private sealed class Options(Command c)
    {
        public readonly Option<string?> Out = c.Declare(CommonOptions.Out(D.OutDir));
        public readonly Option<int> Samples = c.Declare(CommonOptions.Samples(D.Samples, 10_000, "samples per method"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(D.Seed));
        public readonly Option<int> Steps = c.Declare(CliOptions.Int("--steps", "sampler steps per method", D.Steps, 2, 1000, "K"));
        public readonly Option<string?> Methods = c.Declare(CliOptions.Text("--methods",
            $"comma-separated subset of {string.Join(",", DemoDefaults.AllMethods)}", string.Join(",", D.Methods), "LIST"));
        public readonly Option<int> Class = c.Declare(CliOptions.Int("--class", "wanted digit", D.TargetClass, 0, 9, "C"));
        public readonly Option<double> Ink = c.Declare(CliOptions.Double("--ink",
            $"wanted ink mass, in ({D.InkTolerance}, {1 - D.InkTolerance}); MNIST averages about 0.10", D.TargetInk, "X"));
        public readonly Option<int> Reference = c.Declare(CliOptions.Int("--reference",
            "style reference: index among the embedded held-out digits", D.ReferenceIndex, 0, int.MaxValue, "I"));
        public readonly Option<int> Batch = c.Declare(CliOptions.Int("--batch", "images per sampler call (results do not depend on it)", D.Batch, 1, 4096, "B"));
        public readonly Option<string?> Scales = c.Declare(CliOptions.Text("--scales",
            "step-size scales of class, thickness, style (rho = sqrt(abar) * scale)",
            string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{D.ClassScale},{D.ThicknessScale},{D.StyleScale}"), "A,B,C"));
        public readonly Option<double> CAGradC = c.Declare(CliOptions.Double("--cagrad-c", "CAGrad's c", D.CAGradC, "C"));
        public readonly Option<double> StyleThreshold = c.Declare(CliOptions.Double("--style-threshold", "style distance counted as success", D.StyleThreshold, "D"));
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads());
        public readonly Option<bool> Quiet = c.Declare(CommonOptions.Quiet());
    }

    internal static Command Create(CliContext context)
    {
        var command = new Command("demo", Summary).WithHelp(Details, Examples);
        var options = new Options(command);
        command.SetAction(r => Run(r, options, context));
        return command;
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        var (stdout, stderr, ct) = (context.Out, context.Err, context.Cancellation);
        context.CheckNumerics();
        var d = D;
        var methods = p.GetValue(o.Methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var k in methods)
            if (!DemoDefaults.AllMethods.Contains(k)) throw new UsageException($"Unknown method '{k}' in --methods; choose from {string.Join(", ", DemoDefaults.AllMethods)}.");
        if (methods.Distinct().Count() != methods.Length) throw new UsageException("--methods lists a method twice.");
        double ink = p.GetValue(o.Ink);
        if (!(ink > d.InkTolerance && ink < 1 - d.InkTolerance)) throw new UsageException($"--ink must be in ({d.InkTolerance}, {1 - d.InkTolerance}); got {ink}.");
        int samples = p.GetValue(o.Samples);
        var scales = new[] { d.ClassScale, d.ThicknessScale, d.StyleScale };
        if (p.IsGiven(o.Scales) && p.GetValue(o.Scales) is { } sc)
        {
            var parts = sc.Split(',');
            if (parts.Length != 3 || parts.Any(x => !double.TryParse(x, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) || !(v >= 0) || !double.IsFinite(v)))
                throw new UsageException($"--scales needs three non-negative numbers CLASS,THICKNESS,STYLE; got '{sc}'.");
            scales = parts.Select(x => double.Parse(x, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        }
        var options = d with
        {
            OutDir = p.GetValue(o.Out)!,
            Samples = samples,
            Seed = p.GetValue(o.Seed),
            Steps = p.GetValue(o.Steps),
            Methods = methods,
            TargetClass = p.GetValue(o.Class),
            TargetInk = ink,
            ReferenceIndex = p.GetValue(o.Reference),
            Batch = p.GetValue(o.Batch),
            ClassScale = scales[0],
            ThicknessScale = scales[1],
            StyleScale = scales[2],
            CAGradC = p.GetValue(o.CAGradC),
            StyleThreshold = p.GetValue(o.StyleThreshold),
        };
        App.SetThreads(p.GetValue(o.Threads));
        var results = new DigitsDemo(options).Run(p.GetValue(o.Quiet) ? null : stderr, ct);
        stdout.WriteLine($"Wrote {Terminal.Escape(Path.GetFullPath(options.OutDir))} (report.md, report.json, {string.Join(", ", results.Select(r => r.Key + ".png"))}, energies.png, cosines.png).");
        return ExitCodes.Ok;
    }
}
