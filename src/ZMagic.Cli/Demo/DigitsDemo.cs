using System.Diagnostics;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Demo.Digits;
using static TorchSharp.torch;

namespace ZMagic.Cli.Demo;

/// <summary>One method at one guidance scale and step count: what the judge and the conditions say about its samples.</summary>
/// <param name="Method">Key (unguided, vanilla, zmagic, zmagic_cagrad).</param>
/// <param name="Scale">Multiplier of every condition's scale (0 for unguided).</param>
/// <param name="Steps">Sampler steps.</param>
/// <param name="Scores">Per-sample class, ink and style verdicts.</param>
/// <param name="FinalEnergies">Per condition, the energy of every final sample ([K][N]).</param>
/// <param name="SecondsPerImage">Wall time per sample.</param>
/// <param name="Cosines">Cosines between the conditions' gradients over all steps and batches (pairs pooled).</param>
/// <param name="Trace">The trace of the first batch.</param>
/// <param name="ChosenFirst">With <c>--order auto</c>: how many samples chose each condition as the first; else null.</param>
public sealed record SweepPoint(string Method, double Scale, int Steps, IReadOnlyList<DigitScore> Scores, double[][] FinalEnergies,
    double SecondsPerImage, IReadOnlyList<double> Cosines, SamplingTrace Trace, IReadOnlyDictionary<string, int>? ChosenFirst = null)
{
    /// <summary>Samples meeting all three conditions.</summary>
    public Proportion Joint => Proportion.Of(Scores, s => s.Joint);

    /// <summary>Judged class is the target.</summary>
    public Proportion Class => Proportion.Of(Scores, s => s.ClassOk);

    /// <summary>Ink within tolerance.</summary>
    public Proportion Thickness => Proportion.Of(Scores, s => s.InkOk);

    /// <summary>Style distance under the threshold.</summary>
    public Proportion Style => Proportion.Of(Scores, s => s.StyleOk);

    /// <summary>Mean final energy of condition <paramref name="k"/> with its 95 % confidence half-width.</summary>
    public (double Mean, double HalfWidth) Energy(int k) => MeanCi(FinalEnergies[k]);

    /// <summary>Mean and 95 % half-width (1.96 standard errors) of a sample.</summary>
    public static (double Mean, double HalfWidth) MeanCi(IReadOnlyList<double> xs)
    {
        if (xs.Count == 0) return (double.NaN, double.NaN);
        double m = xs.Average();
        if (xs.Count < 2) return (m, double.NaN);
        double var = xs.Sum(x => (x - m) * (x - m)) / (xs.Count - 1);
        return (m, 1.96 * Math.Sqrt(var / xs.Count));
    }
}

/// <summary>A success rate with its 95 % Wilson score interval.</summary>
/// <param name="Successes">Successes.</param>
/// <param name="Trials">Trials.</param>
public readonly record struct Proportion(int Successes, int Trials)
{
    /// <summary>Successes / trials.</summary>
    public double Rate => Trials == 0 ? double.NaN : Successes / (double)Trials;

    /// <summary>Lower end of the 95 % Wilson interval.</summary>
    public double Low => Wilson(-1);

    /// <summary>Upper end of the 95 % Wilson interval.</summary>
    public double High => Wilson(+1);

    /// <summary>Counts the items meeting <paramref name="ok"/>.</summary>
    public static Proportion Of<T>(IReadOnlyCollection<T> items, Func<T, bool> ok) => new(items.Count(ok), items.Count);

    private double Wilson(int sign)
    {
        if (Trials == 0) return double.NaN;
        const double z = 1.959963984540054;
        double n = Trials, p = Rate, z2 = z * z;
        double centre = (p + z2 / (2 * n)) / (1 + z2 / n);
        double half = z * Math.Sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n);
        return Math.Clamp(centre + sign * half, 0, 1);
    }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"{Rate * 100:F1} % [{Low * 100:F1}, {High * 100:F1}]");
}

/// <summary>Everything the demo measured.</summary>
/// <param name="Unguided">Unguided samples (the prior alone).</param>
/// <param name="Sweep">Every guided method at every scale of the shared grid, equal steps.</param>
/// <param name="TimeCurve">Each guided method at other step counts (equal wall time), at the better of its best sweep
/// scale and that scale times sweep steps / steps (equal total guidance).</param>
/// <param name="ConditionNames">Names of the conditions in Z-Magic's order.</param>
/// <param name="ReferenceLabel">Class of the style reference.</param>
/// <param name="ReferenceInk">Ink mass of the style reference.</param>
/// <param name="OrderCheck">Each Z-Magic method at its best scale with the order chosen per sample (<c>--order auto</c>).</param>
public sealed record DemoResult(SweepPoint? Unguided, IReadOnlyList<SweepPoint> Sweep, IReadOnlyList<SweepPoint> TimeCurve,
    IReadOnlyList<string> ConditionNames, int ReferenceLabel, double ReferenceInk, IReadOnlyList<SweepPoint>? OrderCheck = null)
{
    /// <summary>The point of <paramref name="method"/> with the highest joint success (ties: the smaller scale).</summary>
    public SweepPoint? Best(string method) => Sweep.Where(p => p.Method == method)
        .OrderByDescending(p => p.Joint.Rate).ThenBy(p => p.Scale).FirstOrDefault();
}

/// <summary>
/// The digits demo: one request whose three conditions pull against each other (class 3, thick strokes, the style of a
/// thin 7), unguided sampling, Vanilla (FreeDoM-style independent guidance), Z-Magic and Z-Magic + CAGrad at the same
/// seeds, swept over one grid of guidance scales at equal steps, then at each method's best scale over several step
/// counts (equal wall time); pictures, plots, confidence intervals and a report.
/// </summary>
public sealed class DigitsDemo
{
    private readonly DemoOptions _o;

    /// <summary>Creates the demo.</summary>
    public DigitsDemo(DemoOptions options) => _o = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>Runs everything and writes the pictures, plots, report.md, report.json and traces to the output folder.</summary>
    /// <param name="status">Progress lines (stderr); null for silence.</param>
    /// <param name="ct">Cancellation: stops between steps; nothing partial is left in the output folder.</param>
    public DemoResult Run(TextWriter? status, CancellationToken ct)
    {
        // The output folder is checked before anything is loaded; the run is written to a staging folder and published
        // with a rename, so the folder holds the previous run or this one, never a mix.
        using var run = RunFolder.Prepare(_o.OutDir);
        var raw = DigitsModels.LoadPrior();
        IDenoiser prior = _o.ClipX0 ? new X0ClippingDenoiser(raw) : raw;
        using var guide = DigitsModels.LoadGuide();
        using var judge = DigitsModels.LoadJudge();
        var (heldImages, heldLabels) = DigitsModels.LoadHeldOut();
        try
        {
            if (_o.ReferenceIndex < 0 || _o.ReferenceIndex >= heldImages.shape[0])
                throw new UsageException($"--reference must be in [0, {heldImages.shape[0] - 1}]; got {_o.ReferenceIndex}.");
            using var reference = heldImages[_o.ReferenceIndex].unsqueeze(0);
            int referenceLabel = (int)heldLabels[_o.ReferenceIndex].item<long>();
            double referenceInk = StrokeThicknessCondition.Ink(reference).item<float>();
            var names = BuildConditions(guide, reference, 1).Select(c => c.Name).ToList();
            var evaluator = new DigitsEvaluator(judge, (DigitStyleCondition)BuildConditions(guide, reference, 1)[2],
                new DigitsCriteria(_o.TargetClass, _o.TargetInk, _o.InkTolerance, _o.StyleThreshold));

            var guided = _o.Methods.Where(m => m != "unguided").ToList();
            int batches = (_o.Samples + _o.Batch - 1) / _o.Batch;
            int extraSteps = _o.TimeSteps.Where(s => s != _o.Steps).Sum(s => s * TimeScales(1, s).Length);
            var ordered = _o.OrderSteps > 0 ? guided.Where(m => m.StartsWith("zmagic", StringComparison.Ordinal)).ToList() : new List<string>();
            int orderSteps = ordered.Count * (_o.Steps + names.Count * Math.Min(_o.OrderSteps, _o.Steps));
            int total = batches * ((_o.Methods.Contains("unguided") ? _o.Steps : 0) + guided.Count * (_o.Sweep.Count * _o.Steps + extraSteps) + orderSteps);
            var bar = new TextProgressBar(status, total);
            var sampler = new ConditionalSampler(prior);
            var pictures = new Dictionary<string, Tensor>();
            try
            {
                SweepPoint Point(string method, double scale, int steps, bool keepPicture, bool autoOrder = false)
                {
                    var conditions = method == "unguided" ? Array.Empty<IGuidanceCondition>() : BuildConditions(guide, reference, scale);
                    var p = RunPoint(sampler, method, scale, steps, conditions, guide, reference, evaluator, bar, keepPicture ? pictures : null, autoOrder, ct);
                    bar.Note(FormattableString.Invariant(
                        $"{(autoOrder ? method + "_auto" : method),-14} x{scale,-5:G3} {steps,3} steps  joint {p.Joint.Rate:P0}  class {p.Class.Rate:P0}  thickness {p.Thickness.Rate:P0}  style {p.Style.Rate:P0}  {p.SecondsPerImage:F3} s/image"));
                    return p;
                }

                // Warm-up, untimed: the first sampler call pays one-time native set-up that would otherwise be charged to
                // whichever point runs first.
                using (sampler.Sample(BuildConditions(guide, reference, 1), new SamplerOptions
                       {
                           Steps = 2, Seed = _o.Seed, BatchSize = Math.Min(_o.Batch, _o.Samples),
                           SamplerStep = DemoSamplers.Create(_o.Sampler), Strategy = GuidanceMethods.Strategy("zmagic-percondition"),
                       }, null, ct))
                {
                }

                double pictureScale = _o.Sweep.OrderBy(s => Math.Abs(Math.Log(s))).First();
                SweepPoint? unguided = _o.Methods.Contains("unguided") ? Point("unguided", 0, _o.Steps, true) : null;
                var sweep = new List<SweepPoint>();
                foreach (var method in guided)
                    foreach (var scale in _o.Sweep)
                        sweep.Add(Point(method, scale, _o.Steps, true));
                var partial = new DemoResult(unguided, sweep, Array.Empty<SweepPoint>(), names, referenceLabel, referenceInk);
                var timeCurve = new List<SweepPoint>();
                foreach (var method in guided)
                {
                    var best = partial.Best(method)!;
                    timeCurve.Add(best);
                    // Two scales per step count: the best scale at the sweep's steps, and that scale times steps/S, which
                    // keeps the total guidance of S steps equal; the better of the two is the curve's point.
                    foreach (int steps in _o.TimeSteps.Where(s => s != _o.Steps))
                        timeCurve.Add(TimeScales(best.Scale, steps).Select(scale => Point(method, scale, steps, false))
                            .OrderByDescending(p => p.Joint.Rate).ThenBy(p => p.Scale).First());
                }
                // The condition order chosen per sample (--order auto), at each Z-Magic method's best scale.
                var orderCheck = ordered.Select(m => Point(m, partial.Best(m)!.Scale, _o.Steps, false, autoOrder: true)).ToList();
                bar.Done();
                var result = partial with { TimeCurve = timeCurve, OrderCheck = orderCheck };

                string staging = run.Staging;
                // Grids: every method at multiplier 1 (<method>.png) and at its own best scale (<method>_best.png).
                void Grid(string key, string file)
                {
                    var images = pictures[key];
                    CliImages.WriteGrid(images, Path.Combine(staging, file), columns: Math.Min(8, (int)images.shape[0]), scale: 3, ct: ct);
                }
                if (unguided is not null) Grid(PictureKey("unguided", 0), "unguided.png");
                foreach (var method in guided)
                {
                    Grid(PictureKey(method, pictureScale), method + ".png");
                    Grid(PictureKey(method, result.Best(method)!.Scale), method + "_best.png");
                }
                CliImages.WriteGrid(reference, Path.Combine(staging, "reference.png"), 1, scale: 4, ct: ct);
                foreach (var p in sweep.Where(p => p.Scale == pictureScale).Prepend(unguided).OfType<SweepPoint>())
                    CliImages.WriteText(Path.Combine(staging, "trace_" + p.Method + ".csv"), p.Trace.ToCsv(), ct);
                DemoPlots.Write(result, pictureScale, staging);
                var report = new DemoReport(_o, result, pictureScale);
                CliImages.WriteText(Path.Combine(staging, "report.json"), report.Json(), ct);
                CliImages.WriteText(Path.Combine(staging, "report.md"), report.Markdown(), ct);
                run.Publish(ct);
                return result;
            }
            finally
            {
                foreach (var t in pictures.Values) t.Dispose();
            }
        }
        finally
        {
            heldImages.Dispose();
            heldLabels.Dispose();
            if (prior is IDisposable d) d.Dispose();
        }
    }

    /// <summary>The scales tried at <paramref name="steps"/> steps on the equal-time curve, from the best sweep scale.</summary>
    private double[] TimeScales(double best, int steps) => new[] { best, best * _o.Steps / steps };

    private SweepPoint RunPoint(ConditionalSampler sampler, string method, double scale, int steps, IReadOnlyList<IGuidanceCondition> conditions,
        GuideClassifier guide, Tensor reference, DigitsEvaluator evaluator, TextProgressBar bar, Dictionary<string, Tensor>? pictures, bool autoOrder, CancellationToken ct)
    {
        var (strategy, combiner) = MethodOf(method);
        string label = autoOrder ? method + "_auto" : method;
        var chosenFirst = autoOrder ? conditions.ToDictionary(c => c.Name, _ => 0) : null;
        var images = new List<Tensor>();
        var cosines = new List<double>();
        SamplingTrace? first = null;
        var sw = Stopwatch.StartNew();
        try
        {
            for (int item = 0; item < _o.Samples; item += _o.Batch)
            {
                ct.ThrowIfCancellationRequested();
                var options = new SamplerOptions
                {
                    Steps = steps, Seed = _o.Seed, BatchSize = Math.Min(_o.Batch, _o.Samples - item), FirstItem = item,
                    SamplerStep = DemoSamplers.Create(_o.Sampler), Strategy = strategy, Combiner = combiner,
                };
                var progress = new SyncProgress<SamplingProgress>(_ => bar.Advance(label));
                var traces = new List<SamplingTrace>();
                if (autoOrder)
                {
                    using var result = sampler.SampleWithBestOrder(conditions, options, new ConditionOrderOptions { TrialSteps = _o.OrderSteps }, progress, ct);
                    images.Add(result.Images.detach().clamp(-1, 1));
                    traces.AddRange(result.Runs.Select(r => r.Trace));
                    foreach (int c in result.Choice) chosenFirst![conditions[result.Candidates[c][0]].Name]++;
                }
                else
                {
                    using var result = sampler.Sample(conditions, options, progress, ct);
                    images.Add(result.Images.detach().clamp(-1, 1));
                    traces.Add(result.Trace);
                }
                first ??= traces[0];
                foreach (var s in traces.SelectMany(t => t.Steps))
                    if (s.GradientCosines is { } c)
                        for (int i = 0; i < c.Length; i++)
                            for (int j = i + 1; j < c[i].Length; j++)
                                if (double.IsFinite(c[i][j])) cosines.Add(c[i][j]);
            }
            double secondsPerImage = sw.Elapsed.TotalSeconds / _o.Samples;
            using var all = torch.cat(images, 0);
            var scores = evaluator.Score(all);
            // Every condition's energy on the final samples, also for methods that did not use it (unguided).
            var energies = BuildConditions(guide, reference, 1).Select(c => FinalEnergy(c, all)).ToArray();
            if (pictures is not null) pictures[PictureKey(method, scale)] = all[..Math.Min(64, _o.Samples)].detach().clone();
            return new SweepPoint(method, scale, steps, scores, energies, secondsPerImage, cosines, first!, chosenFirst);
        }
        finally
        {
            foreach (var t in images) t.Dispose();
        }
    }

    private static string PictureKey(string method, double scale) => FormattableString.Invariant($"{method}@{scale:R}");

    private static double[] FinalEnergy(IGuidanceCondition condition, Tensor images)
    {
        using var _ = no_grad();
        using var e = condition.Energy(images);
        return e.to(ScalarType.Float64).data<double>().ToArray();
    }

    /// <summary>The three conditions in Z-Magic's order (class, thickness, style), each scale multiplied by <paramref name="scale"/>.</summary>
    public IReadOnlyList<IGuidanceCondition> BuildConditions(GuideClassifier guide, Tensor reference, double scale) => new IGuidanceCondition[]
    {
        new DigitClassCondition(guide, _o.TargetClass, new GuidanceSchedule(new SqrtAlphaBarStepSize(_o.ClassScale * scale))),
        new StrokeThicknessCondition(_o.TargetInk, _o.InkTolerance, new GuidanceSchedule(new SqrtAlphaBarStepSize(_o.ThicknessScale * scale))),
        new DigitStyleCondition(guide, reference, new GuidanceSchedule(new SqrtAlphaBarStepSize(_o.StyleScale * scale))),
    };

    /// <summary>A demo method as a catalog method and combiner (<see cref="GuidanceMethods"/>).</summary>
    private (IGuidanceStrategy Strategy, IGradientCombiner Combiner) MethodOf(string key)
    {
        var (method, combiner) = key switch
        {
            "unguided" => ("unguided", "sum"),
            // Per-condition gradients so that the trace carries the cosines between conditions (paper Fig. 1); the
            // update is the same sum as FreeDoM's fused backward.
            "vanilla" => ("vanilla-percondition", "sum"),
            // The ablation: CAGrad without sequential conditioning, to tell CAGrad's share of Z-Magic + CAGrad's result.
            "vanilla_cagrad" => ("vanilla", "cagrad"),
            "zmagic" => ("zmagic-percondition", "sum"),
            "zmagic_cagrad" => ("zmagic", "cagrad"),
            _ => throw new UsageException($"Unknown demo method '{key}'; methods: {string.Join(", ", DemoDefaults.AllMethods)}."),
        };
        return (GuidanceMethods.Strategy(method), GuidanceMethods.Combiner(combiner, _o.CAGradC));
    }
}

/// <summary>An IProgress that runs its action synchronously on the reporting thread.</summary>
public sealed class SyncProgress<T>(Action<T> action) : IProgress<T>
{
    /// <inheritdoc />
    public void Report(T value) => action(value);
}

/// <summary>
/// A progress bar (<c>[####......] 12/100 zmagic eta 30s</c>) on a <see cref="StatusLine"/>: redrawn in place on a
/// terminal, whole lines now and then (no <c>\r</c>) when stderr is a file or pipe.
/// </summary>
public sealed class TextProgressBar(TextWriter? writer, int total, bool? interactive = null)
{
    private int _done;
    private readonly Stopwatch _sw = Stopwatch.StartNew();
    private readonly StatusLine _line = new(writer, interactive);

    /// <summary>One step done.</summary>
    public void Advance(string label)
    {
        _done++;
        if (writer is null) return;
        const int width = 30;
        // The sampler may run a final step to t = -1 beyond the nominal count: never let the bar overflow.
        int all = Math.Max(total, _done);
        int filled = Math.Clamp((int)Math.Round(width * (double)_done / all), 0, width);
        double eta = _sw.Elapsed.TotalSeconds / _done * (all - _done);
        _line.Update(FormattableString.Invariant($"[{new string('#', filled)}{new string('.', width - filled)}] {_done}/{all} {label,-14} eta {eta:F0}s"),
            (double)_done / all);
    }

    /// <summary>Writes a result line of its own (never a <c>\r</c> frame when stderr is not a terminal).</summary>
    public void Note(string text) => _line.Note(text);

    /// <summary>Ends the line.</summary>
    public void Done() => _line.End();
}
