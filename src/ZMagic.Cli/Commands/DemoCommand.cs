using System.CommandLine;
using ZMagic.Cli.CommandLine;
using ZMagic.Cli.Demo;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic demo</c>: the built-in digits demo.</summary>
public static class DemoCommand
{
    private const string Summary = "Run the built-in digits demo: unguided, vanilla, vanilla+cagrad, zmagic, zmagic+cagrad over a scale sweep; pictures, curves and a report";

    private const string Details = """
        Generates digits with the embedded prior for one request whose conditions pull against each other: digit
        class (guide classifier), thick strokes (ink mass) and the style of a thin digit of another class (Gram
        matrices of guide features). Unguided sampling, Vanilla (independent, FreeDoM-style) guidance, Vanilla +
        CAGrad (the ablation: CAGrad without sequential conditioning), Z-Magic and Z-Magic + CAGrad run at the same
        seeds over one shared grid of guidance scales at equal steps, then over other step counts (equal wall time)
        at the better of each method's best scale and that scale x steps/S, and with the condition order chosen per
        sample (--order auto, at each Z-Magic method's best scale). Needs no download and no GPU; 7 to 11 minutes on
        2 CPU cores with the defaults (--samples 64 --sweep 1,2,4,8 --time-steps none takes one or two).

        Writes to DIR: unguided.png and <method>.png (image grids at multiplier 1), <method>_best.png (each method
        at its best scale), reference.png, sweep.png (success vs scale with 95 % intervals), tradeoff.png (final
        energies of two conditions, one point per scale), time.png (success vs seconds per image),
        cosine_histogram.png (cosines between the conditions' gradients; the paper's Fig. 1), energies.png and
        cosines.png (per step), report.md, report.json (per method at multiplier 1: joint_success, class_success,
        thickness_success, style_success, seconds_per_image, ...; "sweep", "time_curve" and "order_check" with
        every point and its intervals) and trace_<method>.csv. Files appear only when the run completes (Ctrl+C
        leaves nothing partial).
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
        public readonly Option<int> Samples = c.Declare(CommonOptions.Samples(D.Samples, 10_000, "samples per method and scale"));
        public readonly Option<long> Seed = c.Declare(CommonOptions.Seed(D.Seed));
        public readonly Option<int> Steps = c.Declare(CliOptions.Int("--steps", "sampler steps of the sweep", D.Steps, 2, 1000, "K"));
        public readonly Option<string?> Sweep = c.Declare(CliOptions.Text("--sweep", "scale multipliers shared by every method",
            string.Join(",", D.Sweep.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture))), "LIST"));
        public readonly Option<string?> TimeSteps = c.Declare(CliOptions.Text("--time-steps",
            "further step counts, each at the better of the method's best scale and that scale x steps/S (\"none\": none)", string.Join(",", D.TimeSteps), "LIST"));
        public readonly Option<string?> Methods = c.Declare(CliOptions.Text("--methods",
            $"comma-separated subset of {string.Join(",", DemoDefaults.AllMethods)}", string.Join(",", D.Methods), "LIST"));
        public readonly Option<int> Class = c.Declare(CliOptions.Int("--class", "wanted digit", D.TargetClass, 0, 9, "C"));
        public readonly Option<double> Ink = c.Declare(CliOptions.Double("--ink",
            $"wanted ink mass, in ({D.InkTolerance}, {1 - D.InkTolerance}); MNIST averages about 0.10", D.TargetInk, "X"));
        public readonly Option<int> Reference = c.Declare(CliOptions.Int("--reference",
            "style reference: index among the embedded held-out digits (777: a thin 7)", D.ReferenceIndex, 0, int.MaxValue, "I"));
        public readonly Option<int> Batch = c.Declare(CliOptions.Int("--batch", "images per sampler call (results do not depend on it)", D.Batch, 1, 4096, "B"));
        public readonly Option<string?> Scales = c.Declare(CliOptions.Text("--scales",
            "step-size scales of class, thickness, style at multiplier 1 (rho = sqrt(abar) * scale)",
            string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{D.ClassScale},{D.ThicknessScale},{D.StyleScale}"), "A,B,C"));
        public readonly Option<double> CAGradC = c.Declare(CliOptions.Double("--cagrad-c", "CAGrad's c", D.CAGradC, "C"));
        public readonly Option<double> StyleThreshold = c.Declare(CliOptions.Double("--style-threshold", "style distance counted as success", D.StyleThreshold, "D"));
        public readonly Option<int> OrderSteps = c.Declare(CliOptions.Int("--order-steps",
            "trial steps of the --order auto check run at each Z-Magic method's best scale (0: no check)", D.OrderSteps, 0, 1000, "K"));
        public readonly Option<bool> NoClip = c.Declare(CliOptions.Flag("--no-clip", "sample without x0 clipping"));
        public readonly Option<string> Sampler = c.Declare(CliOptions.Choice("--sampler",
            "base sampler step of every method: freedom-eta (FreeDoM's face code, eta 0.5) or ddpm-posterior (ancestral; FreeDoM's SD code)",
            DemoSamplers.Name(D.Sampler), DemoSamplers.Names, "K"));
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
        var sweep = NumberList(p.GetValue(o.Sweep)!, "--sweep", v => v > 0 && double.IsFinite(v), "positive numbers");
        if (sweep.Distinct().Count() != sweep.Count) throw new UsageException("--sweep lists a multiplier twice.");
        string timeText = p.GetValue(o.TimeSteps)!;
        var timeSteps = timeText.Trim() == "none"
            ? Array.Empty<int>()
            : NumberList(timeText, "--time-steps", v => v >= 2 && v <= 1000 && v == Math.Floor(v), "whole numbers from 2 to 1000").Select(v => (int)v).ToArray();
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
            Sweep = sweep,
            TimeSteps = timeSteps,
            ClipX0 = !p.GetValue(o.NoClip),
            Sampler = DemoSamplers.Parse(p.GetValue(o.Sampler)!),
            OrderSteps = p.GetValue(o.OrderSteps),
        };
        App.SetThreads(p.GetValue(o.Threads));
        var results = new DigitsDemo(options).Run(p.GetValue(o.Quiet) ? null : stderr, ct);
        var keys = results.Sweep.Select(r => r.Method).Prepend(results.Unguided?.Method).OfType<string>().Distinct();
        stdout.WriteLine($"Wrote {Terminal.Escape(Path.GetFullPath(options.OutDir))} (report.md, report.json, {string.Join(", ", keys.Select(k => k + ".png"))}, sweep.png, tradeoff.png, time.png, cosine_histogram.png).");
        return ExitCodes.Ok;
    }

    private static IReadOnlyList<double> NumberList(string text, string option, Func<double, bool> valid, string what)
    {
        var values = new List<double>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!double.TryParse(part, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) || !valid(v))
                throw new UsageException($"{option} takes comma-separated {what}; got '{text}'.");
            values.Add(v);
        }
        return values;
    }
}
