using ZMagic.Cli.Demo;
using ZMagic.Core.Sampling;
using ZMagic.Demo.Digits;

namespace ZMagic.Cli.Tests;

public class DemoReportTests
{
    [Theory]
    // Wilson 95 % score intervals (z = 1.96); at 0 or n successes the open end is z^2 / (n + z^2).
    [InlineData(0, 64, 0.0, 0.0566)]
    [InlineData(50, 100, 0.4038, 0.5962)]
    [InlineData(64, 64, 0.9434, 1.0)]
    [InlineData(9, 10, 0.5958, 0.9821)]
    public void Proportion_gives_the_Wilson_interval(int successes, int trials, double low, double high)
    {
        var p = new Proportion(successes, trials);
        Assert.Equal(low, p.Low, 3);
        Assert.Equal(high, p.High, 3);
        Assert.InRange(p.Rate, p.Low, p.High);
    }

    private static SweepPoint Point(string method, double scale, int steps, int jointOk, int n, double seconds) =>
        new(method, scale, steps,
            Enumerable.Range(0, n).Select(i => new DigitScore(3, 0.17, 0.05, true, true, i < jointOk)).ToList(),
            new[] { new double[n], new double[n], new double[n] }, seconds, new[] { 0.1, -0.2 }, new SamplingTrace());

    [Fact]
    public void Verdict_follows_the_intervals()
    {
        var sweep = new List<SweepPoint>
        {
            Point("vanilla", 1, 25, 100, 256, 0.2), Point("vanilla", 2, 25, 120, 256, 0.2),
            Point("zmagic", 1, 25, 200, 256, 0.3), Point("zmagic_cagrad", 1, 25, 125, 256, 0.3),
        };
        var time = new List<SweepPoint> { Point("vanilla", 2, 50, 130, 256, 0.4) };
        var result = new DemoResult(null, sweep, time, new[] { "digit", "thickness", "style" }, 7, 0.045);
        Assert.Equal(2, result.Best("vanilla")!.Scale);
        var verdict = new DemoReport(new DemoOptions(), result, 1).Verdict().ToList();
        Assert.Contains(verdict, l => l.StartsWith("Equal steps", StringComparison.Ordinal) && l.Contains("zmagic reaches") && l.Contains("higher than"));
        Assert.Contains(verdict, l => l.Contains("zmagic_cagrad reaches") && l.Contains("not distinguishable"));
        // Vanilla's 50-step point costs more than Z-Magic's budget, so the equal-time comparison uses its 25-step point.
        Assert.Contains(verdict, l => l.StartsWith("Equal wall time (0.300", StringComparison.Ordinal) && l.Contains("(25 steps, x2"));
        var md = new DemoReport(new DemoOptions(), result, 1).Markdown();
        Assert.Contains("| zmagic | 1 | 78.1 %", md);
        Assert.DoesNotContain("Condition order", md);
    }

    [Fact]
    public void Order_check_is_compared_with_the_given_order_at_the_same_scale()
    {
        var sweep = new List<SweepPoint> { Point("vanilla", 1, 25, 100, 256, 0.2), Point("zmagic", 1, 25, 100, 256, 0.3), Point("zmagic", 2, 25, 150, 256, 0.3) };
        var auto = Point("zmagic", 2, 25, 200, 256, 0.45) with { ChosenFirst = new Dictionary<string, int> { ["digit"] = 56, ["thickness"] = 0, ["style"] = 200 } };
        var result = new DemoResult(null, sweep, Array.Empty<SweepPoint>(), new[] { "digit", "thickness", "style" }, 7, 0.045, new[] { auto });
        var report = new DemoReport(new DemoOptions(), result, 1);
        Assert.Contains(report.Verdict(), l => l.StartsWith("--order auto on zmagic (x2): joint success 78.1 %", StringComparison.Ordinal)
                                              && l.Contains("higher than the given order's 58.6 %") && l.Contains("1.50x the time"));
        var md = report.Markdown();
        Assert.Contains("| zmagic | auto | 2 | 78.1 %", md);
        Assert.Contains("digit 56, thickness 0, style 200", md);
        Assert.Contains("\"chosen_first\"", report.Json());
    }
}
