using ScottPlot;
using SkiaSharp;
using ZMagic.Core.Sampling;

namespace ZMagic.Cli.Demo;

/// <summary>
/// The demo's plots: per-step energies of each condition (Vanilla vs Z-Magic; the paper's Fig. 3) and the cosine between
/// the conditions' gradients per step (the paper's Fig. 1). One panel per condition or pair, composed into one PNG.
/// </summary>
public static class DemoPlots
{
    private const int PanelWidth = 520;
    private const int PanelHeight = 360;

    /// <summary>Writes energies.png and cosines.png into <paramref name="dir"/>.</summary>
    public static void Write(IReadOnlyList<MethodResult> results, IReadOnlyList<string> conditionNames, string dir)
    {
        var compared = results.Where(r => r.Key is "vanilla" or "zmagic" or "zmagic_cagrad").ToList();
        if (compared.Count == 0) return;
        var energyPanels = new List<Plot>();
        for (int k = 0; k < conditionNames.Count; k++)
        {
            var plt = new Plot();
            foreach (var r in compared)
            {
                var pts = r.Trace.Steps.Where(s => s.Conditions.Count > k && s.Conditions[k].Active && double.IsFinite(s.Conditions[k].Energy)).ToList();
                if (pts.Count == 0) continue;
                int batch = Math.Max(1, r.Scores.Count);
                var sc = plt.Add.ScatterLine(pts.Select(s => (double)s.Index).ToArray(), pts.Select(s => s.Conditions[k].Energy).ToArray());
                sc.LegendText = r.Key;
                sc.LineWidth = 2;
                Style(sc, r.Key);
            }
            plt.Title($"energy: {conditionNames[k]} (batch sum)");
            plt.XLabel("sampler step");
            plt.YLabel("energy");
            plt.ShowLegend();
            energyPanels.Add(plt);
        }
        Compose(energyPanels, Path.Combine(dir, "energies.png"));

        var cosPanels = new List<Plot>();
        for (int i = 0; i < conditionNames.Count; i++)
            for (int j = i + 1; j < conditionNames.Count; j++)
            {
                var plt = new Plot();
                foreach (var r in compared)
                {
                    var pts = r.Trace.Steps.Where(s => s.GradientCosines is { } c && c.Length > j && double.IsFinite(c[i][j])).ToList();
                    if (pts.Count == 0) continue;
                    var sc = plt.Add.ScatterLine(pts.Select(s => (double)s.Index).ToArray(), pts.Select(s => s.GradientCosines![i][j]).ToArray());
                    sc.LegendText = r.Key;
                    sc.LineWidth = 2;
                    Style(sc, r.Key);
                }
                var zero = plt.Add.HorizontalLine(0);
                zero.LineWidth = 1;
                zero.Color = Colors.Gray;
                plt.Title($"cos(grad {conditionNames[i]}, grad {conditionNames[j]})");
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
            "zmagic" => Colors.SteelBlue,
            _ => Colors.SeaGreen,
        };
        if (key == "zmagic_cagrad") sc.LinePattern = LinePattern.Dashed;
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
