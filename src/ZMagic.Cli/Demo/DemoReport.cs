using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ZMagic.Benchmarking;

namespace ZMagic.Cli.Demo;

/// <summary>report.md and report.json of the digits demo: the sweep at equal steps, the curve at equal time, a verdict.</summary>
public sealed class DemoReport(DemoOptions options, DemoResult result, double pictureScale)
{
    private static readonly CultureInfo Ci = CultureInfo.InvariantCulture;

    /// <summary>report.json: per method (at the picture scale, the keys the CLI always wrote), the sweep and the time curve.</summary>
    public string Json()
    {
        var root = new JsonObject();
        foreach (var p in result.Sweep.Where(p => p.Scale == pictureScale).Prepend(result.Unguided).OfType<SweepPoint>())
            root[p.Method] = PointJson(p);
        root["sweep"] = new JsonArray(result.Sweep.Select(p => (JsonNode)PointJson(p)).ToArray());
        root["time_curve"] = new JsonArray(result.TimeCurve.Select(p => (JsonNode)PointJson(p)).ToArray());
        root["order_check"] = new JsonArray((result.OrderCheck ?? Array.Empty<SweepPoint>()).Select(p =>
        {
            var j = PointJson(p);
            j["order"] = "auto";
            j["order_trial_steps"] = options.OrderSteps;
            j["chosen_first"] = new JsonObject(p.ChosenFirst!.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));
            return (JsonNode)j;
        }).ToArray());
        root["request"] = new JsonObject
        {
            ["target_class"] = options.TargetClass,
            ["target_ink"] = options.TargetInk,
            ["ink_tolerance"] = options.InkTolerance,
            ["style_reference_index"] = options.ReferenceIndex,
            ["style_reference_class"] = result.ReferenceLabel,
            ["style_reference_ink"] = result.ReferenceInk,
            ["style_threshold"] = options.StyleThreshold,
            ["scales"] = new JsonObject { ["class"] = options.ClassScale, ["thickness"] = options.ThicknessScale, ["style"] = options.StyleScale },
            ["sweep"] = new JsonArray(options.Sweep.Select(s => (JsonNode)s).ToArray()),
            ["picture_scale"] = pictureScale,
            ["cagrad_c"] = options.CAGradC,
            ["clip_x0"] = options.ClipX0,
            ["sampler"] = DemoSamplers.Name(options.Sampler),
            ["steps"] = options.Steps,
            ["time_steps"] = new JsonArray(options.TimeSteps.Select(s => (JsonNode)s).ToArray()),
            ["samples"] = options.Samples,
            ["seed"] = options.Seed,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private JsonObject PointJson(SweepPoint p)
    {
        var steps = p.Trace.Steps;
        var energies = new JsonObject();
        for (int k = 0; k < result.ConditionNames.Count; k++)
        {
            var (m, h) = p.Energy(k);
            energies[result.ConditionNames[k]] = new JsonObject { ["mean"] = m, ["ci95"] = double.IsFinite(h) ? h : null };
        }
        return new JsonObject
        {
            ["method"] = p.Method,
            ["scale"] = p.Scale,
            ["steps"] = p.Steps,
            ["samples"] = p.Scores.Count,
            ["joint_success"] = p.Joint.Rate,
            ["joint_success_ci95"] = new JsonArray(p.Joint.Low, p.Joint.High),
            ["class_success"] = p.Class.Rate,
            ["class_success_ci95"] = new JsonArray(p.Class.Low, p.Class.High),
            ["thickness_success"] = p.Thickness.Rate,
            ["thickness_success_ci95"] = new JsonArray(p.Thickness.Low, p.Thickness.High),
            ["style_success"] = p.Style.Rate,
            ["style_success_ci95"] = new JsonArray(p.Style.Low, p.Style.High),
            ["final_energy"] = energies,
            ["seconds_per_image"] = p.SecondsPerImage,
            ["mean_ink"] = p.Scores.Average(s => s.Ink),
            ["median_style_distance"] = StepBenchmark.Median(p.Scores.Select(s => s.StyleDistance)),
            ["mean_gradient_cosine"] = p.Cosines.Count == 0 ? null : p.Cosines.Average(),
            ["forwards_per_step"] = steps.Count == 0 ? 0 : steps.Average(s => s.Passes.DenoiserForwards),
            ["backwards_per_step"] = steps.Count == 0 ? 0 : steps.Average(s => s.Passes.DenoiserBackwards + s.Passes.Vjps),
            ["strategy"] = p.Trace.Strategy,
            ["combiner"] = p.Trace.Combiner,
            ["judged_classes"] = new JsonArray(p.Scores.Select(s => (JsonNode)s.JudgedClass).ToArray()),
        };
    }

    /// <summary>report.md.</summary>
    public string Markdown()
    {
        var o = options;
        var names = result.ConditionNames;
        var sb = new StringBuilder();
        void Line(FormattableString s) => sb.AppendLine(s.ToString(Ci));
        sb.AppendLine("# ZMagic digits demo");
        sb.AppendLine();
        Line($"Request: digit **{o.TargetClass}**, ink mass **{o.TargetInk:F3} ± {o.InkTolerance:F3}** (thick; MNIST averages about 0.10), and the style of held-out digit #{o.ReferenceIndex}, a **{result.ReferenceLabel}** with ink {result.ReferenceInk:F3} (`reference.png`), Gram distance ≤ {o.StyleThreshold:G3}. The style pulls towards another class and thinner strokes, so the three conditions conflict.");
        Line($"{o.Samples} samples per point, seed {o.Seed}, the same initial noise for every method; {DemoSamplers.Describe(o.Sampler)}{(o.ClipX0 ? ", x0 clipped" : "")}. Class success is judged by the *judge* classifier (another architecture and seed, never used for guidance). Brackets: 95 % Wilson intervals; ± : 95 % intervals of the mean.");
        Line($"Scales at multiplier 1: class {o.ClassScale:G3}, thickness {o.ThicknessScale:G3}, style {o.StyleScale:G3} (step size sqrt(abar) x scale); CAGrad c = {o.CAGradC:G3}.");
        sb.AppendLine();
        if (result.Unguided is { } u)
        {
            Line($"Unguided ({u.Steps} steps): joint {u.Joint}, class {u.Class}, thickness {u.Thickness}, style {u.Style}.");
            sb.AppendLine();
        }
        Line($"## Equal steps ({o.Steps} sampler steps)");
        sb.AppendLine();
        sb.Append("| method | scale x | joint success | class (judge) | thickness | style |");
        foreach (var n in names) sb.Append(CultureInfo.InvariantCulture, $" final {n} energy |");
        sb.AppendLine(" s/image |");
        sb.Append("|---|---|---|---|---|---|");
        foreach (var _ in names) sb.Append("---|");
        sb.AppendLine("---|");
        foreach (var p in result.Sweep)
        {
            sb.Append(CultureInfo.InvariantCulture, $"| {p.Method} | {p.Scale:G3} | {p.Joint} | {p.Class} | {p.Thickness} | {p.Style} |");
            for (int k = 0; k < names.Count; k++)
            {
                var (m, h) = p.Energy(k);
                sb.Append(CultureInfo.InvariantCulture, $" {m:G3} ± {h:G2} |");
            }
            sb.AppendLine(string.Create(Ci, $" {p.SecondsPerImage:F3} |"));
        }
        sb.AppendLine();
        Line($"## Equal wall time");
        sb.AppendLine();
        Line($"Each method at its best {o.Steps}-step scale; at other step counts S, the better of that scale and that scale x {o.Steps}/S (the same total guidance).");
        sb.AppendLine();
        sb.AppendLine("| method | scale x | steps | s/image | joint success |");
        sb.AppendLine("|---|---|---|---|---|");
        foreach (var p in result.TimeCurve.OrderBy(p => p.Method).ThenBy(p => p.SecondsPerImage))
            Line($"| {p.Method} | {p.Scale:G3} | {p.Steps} | {p.SecondsPerImage:F3} | {p.Joint} |");
        sb.AppendLine();
        if (result.OrderCheck is { Count: > 0 } orderCheck)
        {
            Line($"## Condition order (`--order auto`, {o.OrderSteps} trial steps per candidate)");
            sb.AppendLine();
            sb.AppendLine("Each sample tries every condition as the first one for the first steps and keeps the order whose trial ends with the lowest summed energy; given order: " + string.Join(" > ", names) + ".");
            sb.AppendLine();
            sb.AppendLine("| method | order | scale x | joint success | class (judge) | thickness | style | s/image | chosen first |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var a in orderCheck)
            {
                var g = result.Sweep.First(p => p.Method == a.Method && p.Scale == a.Scale);
                Line($"| {g.Method} | given | {g.Scale:G3} | {g.Joint} | {g.Class} | {g.Thickness} | {g.Style} | {g.SecondsPerImage:F3} | {names[0]} (all) |");
                Line($"| {a.Method} | auto | {a.Scale:G3} | {a.Joint} | {a.Class} | {a.Thickness} | {a.Style} | {a.SecondsPerImage:F3} | {string.Join(", ", a.ChosenFirst!.Select(kv => $"{kv.Key} {kv.Value}"))} |");
            }
            sb.AppendLine();
        }
        sb.AppendLine("## Verdict");
        sb.AppendLine();
        foreach (var line in Verdict()) sb.AppendLine("- " + line);
        sb.AppendLine();
        var guidedKeys = result.Sweep.Select(p => p.Method).Distinct().ToList();
        sb.AppendLine("Pictures (same seeds and positions): at multiplier " + pictureScale.ToString("G3", Ci) + " " + string.Join(", ", guidedKeys.Prepend(result.Unguided?.Method).OfType<string>().Select(k => $"`{k}.png`"))
                      + "; each method at its best scale " + string.Join(", ", guidedKeys.Select(k => string.Create(Ci, $"`{k}_best.png` (x{result.Best(k)!.Scale:G3})"))) + ".");
        sb.AppendLine("Plots: `sweep.png` (success against scale), `tradeoff.png` (final energy of one condition against another, one point per scale),");
        sb.AppendLine("`time.png` (joint success against seconds per image), `cosine_histogram.png` (cosines between the conditions' gradients over all steps, the paper's Fig. 1),");
        sb.AppendLine("`energies.png` and `cosines.png` (per step, first batch). Traces: `trace_*.csv`.");
        return sb.ToString();
    }

    /// <summary>The comparison in sentences, derived from the numbers (never written by hand).</summary>
    public IEnumerable<string> Verdict()
    {
        var v = result.Best("vanilla");
        foreach (var key in new[] { "zmagic", "zmagic_cagrad", "vanilla_cagrad" })
        {
            var z = result.Best(key);
            if (v is null || z is null) continue;
            yield return string.Create(Ci, $"Equal steps, best scale of each: {key} reaches joint success {z.Joint} (x{z.Scale:G3}), {Relation(z, v)} Vanilla's {v.Joint} (x{v.Scale:G3}).");
            // Equal time: Vanilla's best point that costs no more than this method's best point.
            var budget = z.SecondsPerImage;
            var vt = result.TimeCurve.Concat(result.Sweep).Where(p => p.Method == "vanilla" && p.SecondsPerImage <= budget * 1.05)
                .OrderByDescending(p => p.Joint.Rate).FirstOrDefault();
            if (vt is not null)
            {
                string rel = z.Joint.Low > vt.Joint.High ? "higher than" : z.Joint.High < vt.Joint.Low ? "lower than" : "not distinguishable from";
                yield return string.Create(Ci, $"Equal wall time ({budget:F3} s/image): {key} {z.Joint} is {rel} Vanilla's best within that time, {vt.Joint} ({vt.Steps} steps, x{vt.Scale:G3}, {vt.SecondsPerImage:F3} s/image).");
            }
        }
        // Sequential conditioning's own share under CAGrad: Z-Magic + CAGrad against CAGrad on independent gradients.
        if (result.Best("zmagic_cagrad") is { } zc && result.Best("vanilla_cagrad") is { } vc)
            yield return string.Create(Ci, $"Sequential conditioning under CAGrad: zmagic_cagrad {zc.Joint} (x{zc.Scale:G3}) is {Relation(zc, vc)} vanilla_cagrad's {vc.Joint} (x{vc.Scale:G3}).");
        foreach (var a in result.OrderCheck ?? Array.Empty<SweepPoint>())
        {
            var g = result.Sweep.First(p => p.Method == a.Method && p.Scale == a.Scale);
            yield return string.Create(Ci, $"--order auto on {a.Method} (x{a.Scale:G3}): joint success {a.Joint}, {Relation(a, g)} the given order's {g.Joint}, at {a.SecondsPerImage / g.SecondsPerImage:F2}x the time per image.");
        }
        var vcos = result.Sweep.Where(p => p.Method == "vanilla").SelectMany(p => p.Cosines).ToList();
        var zcos = result.Sweep.Where(p => p.Method == "zmagic").SelectMany(p => p.Cosines).ToList();
        if (vcos.Count > 0 && zcos.Count > 0)
            yield return string.Create(Ci, $"Gradient cosines between conditions (all scales and steps): Vanilla mean {vcos.Average():F3} ({vcos.Count(c => c < 0) * 100.0 / vcos.Count:F0} % negative), Z-Magic mean {zcos.Average():F3} ({zcos.Count(c => c < 0) * 100.0 / zcos.Count:F0} % negative).");
    }

    private static string Relation(SweepPoint a, SweepPoint b) =>
        a.Joint.Low > b.Joint.High ? "higher than" : a.Joint.High < b.Joint.Low ? "lower than" : "not distinguishable from (the 95 % intervals overlap)";
}
