using ScottPlot;
using SkiaSharp;

namespace ZMagic.Cli.Demo;

/// <summary>
/// The demo's plots: success against scale (with 95 % intervals), the energy trade-off between conditions, success
/// against seconds per image, the histogram of gradient cosines (the paper's Fig. 1), and per-step energies and cosines
/// of the first batch (the paper's Fig. 3). One panel per quantity, composed into one PNG each.
/// </summary>
public static class DemoPlots
{
    private const int PanelWidth = 520;
    private const int PanelHeight = 360;
    private static readonly string[] Compared = { "vanilla", "vanilla_cagrad", "zmagic", "zmagic_cagrad" };

    /// <summary>Writes sweep.png, tradeoff.png, time.png, cosine_histogram.png, energies.png and cosines.png into <paramref name="dir"/>.</summary>
    public static void Write(DemoResult result, double pictureScale, string dir)
    {
        ArgumentNullException.ThrowIfNull(result);
        var methods = Compared.Where(m => result.Sweep.Any(p => p.Method == m)).ToList();
        if (methods.Count == 0) return;
        var names = result.ConditionNames;

        var sweepPanels = new List<Plot>();
        foreach (var (title, rate) in new (string, Func<SweepPoint, Proportion>)[]
                 { ("joint success", p => p.Joint), ("class success (judge)", p => p.Class), ("thickness success", p => p.Thickness), ("style success", p => p.Style) })
        {
            var plt = new Plot();
            foreach (var m in methods)
                Series(plt, m, result.Sweep.Where(p => p.Method == m).OrderBy(p => p.Scale).ToList(), p => Math.Log2(p.Scale), rate);
            plt.Title(title);
            plt.XLabel("log2 scale multiplier");
            plt.YLabel("rate");
            plt.Axes.SetLimitsY(-0.02, 1.02);
            plt.ShowLegend();
            sweepPanels.Add(plt);
        }
        Compose(sweepPanels, Path.Combine(dir, "sweep.png"));

        var tradeoff = new List<Plot>();
        for (int i = 0; i < names.Count; i++)
            for (int j = i + 1; j < names.Count; j++)
            {
                var plt = new Plot();
                foreach (var m in methods)
                {
                    var pts = result.Sweep.Where(p => p.Method == m).OrderBy(p => p.Scale).ToList();
                    var sc = plt.Add.ScatterLine(pts.Select(p => p.Energy(i).Mean).ToArray(), pts.Select(p => p.Energy(j).Mean).ToArray());
                    sc.LegendText = m;
                    sc.LineWidth = 2;
                    sc.MarkerSize = 7;
                    Style(sc, m);
                }
                if (result.Unguided is { } u)
                {
                    var up = plt.Add.ScatterPoints(new[] { u.Energy(i).Mean }, new[] { u.Energy(j).Mean });
                    up.LegendText = "unguided";
                    up.Color = Colors.Gray;
                    up.MarkerSize = 9;
                }
                plt.Title($"final energy: {names[i]} vs {names[j]} (one point per scale)");
                plt.XLabel($"{names[i]} energy (mean)");
                plt.YLabel($"{names[j]} energy (mean)");
                plt.ShowLegend();
                tradeoff.Add(plt);
            }
        Compose(tradeoff, Path.Combine(dir, "tradeoff.png"));

        var time = new Plot();
        foreach (var m in methods)
            Series(time, m, result.TimeCurve.Where(p => p.Method == m).OrderBy(p => p.SecondsPerImage).ToList(), p => p.SecondsPerImage, p => p.Joint);
        time.Title("joint success vs time (steps vary)");
        time.XLabel("seconds per image");
        time.YLabel("joint success");
        time.Axes.SetLimitsY(-0.02, 1.02);
        time.ShowLegend();
        Compose(new[] { time }, Path.Combine(dir, "time.png"));

        var hist = new Plot();
        foreach (var m in methods)
        {
            var c = result.Sweep.Where(p => p.Method == m).SelectMany(p => p.Cosines).ToList();
            if (c.Count == 0) continue;
            const int bins = 40;
            var counts = new double[bins];
            foreach (var v in c) counts[Math.Clamp((int)((v + 1) / 2 * bins), 0, bins - 1)]++;
            var sc = hist.Add.ScatterLine(Enumerable.Range(0, bins).Select(b => -1 + (b + 0.5) * 2.0 / bins).ToArray(), counts.Select(n => n / c.Count).ToArray());
            sc.LegendText = $"{m} (n = {c.Count})";
            sc.LineWidth = 2;
            Style(sc, m);
        }
        hist.Title("cosine between conditions' gradients (all scales, steps, pairs)");
        hist.XLabel("cosine");
        hist.YLabel("share");
        hist.ShowLegend();
        Compose(new[] { hist }, Path.Combine(dir, "cosine_histogram.png"));

        var atPicture = methods.Select(m => result.Sweep.First(p => p.Method == m && p.Scale == pictureScale)).ToList();
        PerStep(atPicture, names, dir);
    }

    private static void Series(Plot plt, string method, IReadOnlyList<SweepPoint> pts, Func<SweepPoint, double> x, Func<SweepPoint, Proportion> rate)
    {
        if (pts.Count == 0) return;
        var sc = plt.Add.ScatterLine(pts.Select(x).ToArray(), pts.Select(p => rate(p).Rate).ToArray());
        sc.LegendText = method;
        sc.LineWidth = 2;
        sc.MarkerSize = 7;
        Style(sc, method);
        foreach (var p in pts)
        {
            var ci = plt.Add.Line(x(p), rate(p).Low, x(p), rate(p).High);
            ci.Color = sc.Color;
            ci.LineWidth = 1.5f;
        }
    }

    private static void PerStep(IReadOnlyList<SweepPoint> points, IReadOnlyList<string> names, string dir)
    {
        var energyPanels = new List<Plot>();
        for (int k = 0; k < names.Count; k++)
        {
            var plt = new Plot();
            foreach (var r in points)
            {
                var pts = r.Trace.Steps.Where(s => s.Conditions.Count > k && s.Conditions[k].Active && double.IsFinite(s.Conditions[k].Energy)).ToList();
                if (pts.Count == 0) continue;
                var sc = plt.Add.ScatterLine(pts.Select(s => (double)s.Index).ToArray(), pts.Select(s => s.Conditions[k].Energy).ToArray());
                sc.LegendText = r.Method;
                sc.LineWidth = 2;
                Style(sc, r.Method);
            }
            plt.Title($"energy: {names[k]} (first batch, sum)");
            plt.XLabel("sampler step");
            plt.YLabel("energy");
            plt.ShowLegend();
            energyPanels.Add(plt);
        }
        Compose(energyPanels, Path.Combine(dir, "energies.png"));

        var cosPanels = new List<Plot>();
        for (int i = 0; i < names.Count; i++)
            for (int j = i + 1; j < names.Count; j++)
            {
                var plt = new Plot();
                foreach (var r in points)
                {
                    var pts = r.Trace.Steps.Where(s => s.GradientCosines is { } c && c.Length > j && double.IsFinite(c[i][j])).ToList();
                    if (pts.Count == 0) continue;
                    var sc = plt.Add.ScatterLine(pts.Select(s => (double)s.Index).ToArray(), pts.Select(s => s.GradientCosines![i][j]).ToArray());
                    sc.LegendText = r.Method;
                    sc.LineWidth = 2;
                    Style(sc, r.Method);
                }
                var zero = plt.Add.HorizontalLine(0);
                zero.LineWidth = 1;
                zero.Color = Colors.Gray;
                plt.Title($"cos(grad {names[i]}, grad {names[j]})");
                plt.XLabel("sampler step");
                plt.YLabel("cosine");
                plt.Axes.SetLimitsY(-1.05, 1.05);
                plt.ShowLegend();
                cosPanels.Add(plt);
            }
        if (cosPanels.Count > 0) Compose(cosPanels, Path.Combine(dir, "cosines.png"));
    }

    private static void Style(ScottPlot.Plottables.Scatter sc, string key)
    {
        sc.Color = key switch
        {
            "vanilla" => Colors.OrangeRed,
            "vanilla_cagrad" => Colors.DarkOrange,
            "zmagic" => Colors.SteelBlue,
            _ => Colors.SeaGreen,
        };
        if (key.EndsWith("_cagrad", StringComparison.Ordinal)) sc.LinePattern = LinePattern.Dashed;
    }

    private static void Compose(IReadOnlyList<Plot> panels, string path)
    {
        int cols = Math.Min(3, panels.Count), rows = (panels.Count + cols - 1) / cols;
        using var bmp = new SKBitmap(new SKImageInfo(cols * PanelWidth, rows * PanelHeight, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(bmp))
        {
            canvas.Clear(SKColors.White);
            for (int i = 0; i < panels.Count; i++)
            {
                canvas.Save();
                canvas.Translate((i % cols) * PanelWidth, (i / cols) * PanelHeight);
                canvas.ClipRect(new SKRect(0, 0, PanelWidth, PanelHeight));
                panels[i].Render(canvas, PanelWidth, PanelHeight);
                canvas.Restore();
            }
        }
        CliImages.WritePng(bmp, path);
    }
}
