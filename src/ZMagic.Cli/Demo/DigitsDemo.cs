using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.Digits;
using static TorchSharp.torch;

namespace ZMagic.Cli.Demo;

/// <summary>Per-method outcome of the demo.</summary>
public sealed record MethodResult(string Key, string Strategy, string Combiner, IReadOnlyList<DigitScore> Scores, double SecondsPerImage, SamplingTrace Trace)
{
    /// <summary>Fraction of samples meeting all three conditions.</summary>
    public double Joint => Scores.Count(s => s.Joint) / (double)Scores.Count;

    /// <summary>Judge accuracy for the class.</summary>
    public double ClassRate => Scores.Count(s => s.ClassOk) / (double)Scores.Count;

    /// <summary>Thickness within tolerance.</summary>
    public double InkRate => Scores.Count(s => s.InkOk) / (double)Scores.Count;

    /// <summary>Style distance under the threshold.</summary>
    public double StyleRate => Scores.Count(s => s.StyleOk) / (double)Scores.Count;
}

/// <summary>
/// The digits demo: one request (class + thickness + style), the same seeds and step budget for unguided, Vanilla
/// (FreeDoM-style independent guidance), Z-Magic and Z-Magic + CAGrad; pictures, plots and a report.
/// </summary>
public sealed class DigitsDemo
{
    private readonly DemoOptions _o;

    /// <summary>Creates the demo.</summary>
    public DigitsDemo(DemoOptions options) => _o = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>Runs every method and writes DIR/{method}.png, plots, report.md, report.json and traces.</summary>
    /// <param name="status">Progress lines (stderr); null for silence.</param>
    /// <param name="ct">Cancellation: stops between steps; nothing partial is left in the output folder.</param>
    public IReadOnlyList<MethodResult> Run(TextWriter? status, CancellationToken ct)
    {
        // The output folder is checked before anything is loaded; the run is written to a staging folder and published
        // with a rename, so the folder holds the previous run or this one, never a mix.
        using var run = RunFolder.Prepare(_o.OutDir);
        // x0 clipping keeps the small prior's trajectories in range (DDPM's clip_denoised).
        using var prior = new X0ClippingDenoiser(DigitsModels.LoadPrior());
        using var guide = DigitsModels.LoadGuide();
        using var judge = DigitsModels.LoadJudge();
        var (heldImages, heldLabels) = DigitsModels.LoadHeldOut();
        if (_o.ReferenceIndex < 0 || _o.ReferenceIndex >= heldImages.shape[0])
            throw new UsageException($"--reference must be in [0, {heldImages.shape[0] - 1}]; got {_o.ReferenceIndex}.");
        var reference = heldImages[_o.ReferenceIndex].unsqueeze(0);
        int referenceLabel = (int)heldLabels[_o.ReferenceIndex].item<long>();

        var conditions = BuildConditions(guide, reference);
        var style = (DigitStyleCondition)conditions[2];
        var evaluator = new DigitsEvaluator(judge, style, new DigitsCriteria(_o.TargetClass, _o.TargetInk, _o.InkTolerance, _o.StyleThreshold));

        string staging = run.Staging;
        var results = new List<MethodResult>();
        try
        {
            var sampler = new ConditionalSampler(prior);
            int totalSteps = _o.Methods.Count * _o.Steps * ((_o.Samples + _o.Batch - 1) / _o.Batch);
            var bar = new TextProgressBar(status, totalSteps);
            foreach (var key in _o.Methods)
            {
                ct.ThrowIfCancellationRequested();
                var (strategy, combiner) = MethodOf(key);
                var images = new List<Tensor>();
                var traces = new List<SamplingTrace>();
                var sw = Stopwatch.StartNew();
                for (int first = 0; first < _o.Samples; first += _o.Batch)
                {
                    int n = Math.Min(_o.Batch, _o.Samples - first);
                    var options = new SamplerOptions
                    {
                        Steps = _o.Steps,
                        Seed = _o.Seed,
                        BatchSize = n,
                        FirstItem = first,
                        Strategy = strategy,
                        Combiner = combiner,
                    };
                    var progress = new SyncProgress<SamplingProgress>(p => bar.Advance(key));
                    using var result = sampler.Sample(key == "unguided" ? Array.Empty<IGuidanceCondition>() : conditions, options, progress, ct);
                    images.Add(result.Images.detach().clone());
                    traces.Add(result.Trace);
                }
                double secondsPerImage = sw.Elapsed.TotalSeconds / _o.Samples;
                using var all = torch.cat(images, 0);
                foreach (var t in images) t.Dispose();
                var scores = evaluator.Score(all);
                var mr = new MethodResult(key, traces[0].Strategy, traces[0].Combiner, scores, secondsPerImage, traces[0]);
                results.Add(mr);
                CliImages.WriteGrid(all, Path.Combine(staging, key + ".png"), columns: Math.Min(8, _o.Samples), scale: 3, ct: ct);
                CliImages.WriteText(Path.Combine(staging, "trace_" + key + ".csv"), traces[0].ToCsv(), ct);
                status?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"\r{key,-14} joint {mr.Joint:P0}  class {mr.ClassRate:P0}  thickness {mr.InkRate:P0}  style {mr.StyleRate:P0}  {secondsPerImage:F2} s/image        "));
            }
            bar.Done();
            CliImages.WriteGrid(reference, Path.Combine(staging, "reference.png"), 1, scale: 4, ct: ct);
            DemoPlots.Write(results, conditions.Select(c => c.Name).ToList(), staging);
            var json = ReportJson(results, referenceLabel);
            CliImages.WriteText(Path.Combine(staging, "report.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }), ct);
            CliImages.WriteText(Path.Combine(staging, "report.md"), ReportMarkdown(results, referenceLabel), ct);
            run.Publish(ct);
        }
        finally
        {
            heldImages.Dispose();
            heldLabels.Dispose();
            reference.Dispose();
            if (prior is IDisposable d) d.Dispose();
        }
        return results;
    }

    /// <summary>The three conditions in Z-Magic's order: class first, then thickness, then style.</summary>
    public IReadOnlyList<IGuidanceCondition> BuildConditions(GuideClassifier guide, Tensor reference) => new IGuidanceCondition[]
    {
        new DigitClassCondition(guide, _o.TargetClass, new GuidanceSchedule(new SqrtAlphaBarStepSize(_o.ClassScale))),
        new StrokeThicknessCondition(_o.TargetInk, _o.InkTolerance, new GuidanceSchedule(new SqrtAlphaBarStepSize(_o.ThicknessScale))),
        new DigitStyleCondition(guide, reference, new GuidanceSchedule(new SqrtAlphaBarStepSize(_o.StyleScale))),
    };

    private (IGuidanceStrategy Strategy, IGradientCombiner Combiner) MethodOf(string key) => key switch
    {
        "unguided" => (UnguidedStrategy.Instance, SumCombiner.Instance),
        // Per-condition gradients so that the trace carries the cosines between conditions (paper Fig. 1); the
        // update is the same sum as FreeDoM's fused backward.
        "vanilla" => (new VanillaStrategy(new VanillaOptions { PerConditionGradients = true }), SumCombiner.Instance),
        "zmagic" => (new ZMagicStrategy(new ZMagicOptions { PerConditionGradients = true }), SumCombiner.Instance),
        "zmagic_cagrad" => (new ZMagicStrategy(new ZMagicOptions()), new CAGradCombiner(_o.CAGradC)),
        _ => throw new UsageException($"Unknown demo method '{key}'; methods: {string.Join(", ", DemoDefaults.AllMethods)}."),
    };

    private JsonObject ReportJson(IReadOnlyList<MethodResult> results, int referenceLabel)
    {
        var root = new JsonObject();
        foreach (var r in results)
        {
            var steps = r.Trace.Steps;
            root[r.Key] = new JsonObject
            {
                ["joint_success"] = r.Joint,
                ["class_success"] = r.ClassRate,
                ["thickness_success"] = r.InkRate,
                ["style_success"] = r.StyleRate,
                ["seconds_per_image"] = r.SecondsPerImage,
                ["mean_ink"] = r.Scores.Average(s => s.Ink),
                ["mean_style_distance"] = r.Scores.Average(s => s.StyleDistance),
                ["median_style_distance"] = Median(r.Scores.Select(s => s.StyleDistance)),
                ["samples"] = r.Scores.Count,
                ["strategy"] = r.Strategy,
                ["combiner"] = r.Combiner,
                ["forwards_per_step"] = steps.Count == 0 ? 0 : steps.Average(s => s.Passes.DenoiserForwards),
                ["backwards_per_step"] = steps.Count == 0 ? 0 : steps.Average(s => s.Passes.DenoiserBackwards + s.Passes.Vjps),
                ["judged_classes"] = new JsonArray(r.Scores.Select(s => (JsonNode)s.JudgedClass).ToArray()),
            };
        }
        root["request"] = new JsonObject
        {
            ["target_class"] = _o.TargetClass,
            ["target_ink"] = _o.TargetInk,
            ["ink_tolerance"] = _o.InkTolerance,
            ["style_reference_index"] = _o.ReferenceIndex,
            ["style_reference_class"] = referenceLabel,
            ["style_threshold"] = _o.StyleThreshold,
            ["scales"] = new JsonObject { ["class"] = _o.ClassScale, ["thickness"] = _o.ThicknessScale, ["style"] = _o.StyleScale },
            ["cagrad_c"] = _o.CAGradC,
            ["steps"] = _o.Steps,
            ["samples"] = _o.Samples,
            ["seed"] = _o.Seed,
        };
        return root;
    }

    private static double Median(IEnumerable<double> xs)
    {
        var a = xs.Order().ToArray();
        return a.Length == 0 ? double.NaN : a.Length % 2 == 1 ? a[a.Length / 2] : 0.5 * (a[a.Length / 2 - 1] + a[a.Length / 2]);
    }

    private string ReportMarkdown(IReadOnlyList<MethodResult> results, int referenceLabel)
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine("# ZMagic digits demo");
        sb.AppendLine();
        sb.AppendLine(string.Create(ci, $"Request: digit **{_o.TargetClass}**, ink mass **{_o.TargetInk:F3} ± {_o.InkTolerance:F3}** (thick strokes; MNIST averages about 0.10), style of held-out digit #{_o.ReferenceIndex} (a {referenceLabel}; `reference.png`) with Gram distance ≤ {_o.StyleThreshold:G3}."));
        sb.AppendLine(string.Create(ci, $"{_o.Samples} samples per method, seed {_o.Seed}, {_o.Steps} sampler steps (FreeDoM eta step, eta 0.5) for every method; the same initial noise for every method."));
        sb.AppendLine("Class success is judged by the *judge* classifier (another architecture and seed, never used for guidance).");
        sb.AppendLine();
        sb.AppendLine("| method | joint success | class (judge) | thickness | style | mean ink | median style distance | forwards/step | backwards/step | s/image |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in results)
        {
            var steps = r.Trace.Steps;
            double f = steps.Count == 0 ? 0 : steps.Average(s => s.Passes.DenoiserForwards);
            double b = steps.Count == 0 ? 0 : steps.Average(s => s.Passes.DenoiserBackwards + s.Passes.Vjps);
            sb.AppendLine(string.Create(ci, $"| {r.Key} | {r.Joint:P0} | {r.ClassRate:P0} | {r.InkRate:P0} | {r.StyleRate:P0} | {r.Scores.Average(s => s.Ink):F3} | {Median(r.Scores.Select(s => s.StyleDistance)):G3} | {f:F1} | {b:F1} | {r.SecondsPerImage:F2} |"));
        }
        sb.AppendLine();
        sb.AppendLine("Pictures: `unguided.png`, `vanilla.png`, `zmagic.png`, `zmagic_cagrad.png` (same seeds, same positions).");
        sb.AppendLine("Plots: `energies.png` (per-step energy of each condition, Vanilla vs Z-Magic; the paper's Fig. 3) and");
        sb.AppendLine("`cosines.png` (cosine between the conditions' gradients per step; the paper's Fig. 1). Traces: `trace_*.csv`.");
        var v = results.FirstOrDefault(r => r.Key == "vanilla");
        var z = results.FirstOrDefault(r => r.Key == "zmagic_cagrad") ?? results.FirstOrDefault(r => r.Key == "zmagic");
        if (v is not null && z is not null)
        {
            sb.AppendLine();
            string verdict = z.Joint > v.Joint ? "higher than" : z.Joint < v.Joint ? "lower than" : "equal to";
            sb.AppendLine(string.Create(ci, $"At equal step budget, {z.Key}'s joint success ({z.Joint:P0}) is {verdict} Vanilla's ({v.Joint:P0}) on this run; Z-Magic spends more network passes per step (see the table), so its seconds per image are higher."));
        }
        return sb.ToString();
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
        _line.Update(string.Create(CultureInfo.InvariantCulture, $"[{new string('#', filled)}{new string('.', width - filled)}] {_done}/{all} {label,-14} eta {eta:F0}s"),
            (double)_done / all);
    }

    /// <summary>Ends the line.</summary>
    public void Done() => _line.End();
}
