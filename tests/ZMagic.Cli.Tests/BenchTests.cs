using System.Text.Json;

namespace ZMagic.Cli.Tests;

/// <summary><c>zmagic bench</c>: the JSON interface scripts rely on (issue: one object with the step time and the passes).</summary>
public class BenchTests
{
    [Theory]
    [InlineData("vanilla", "sum", 3, 1, 1, 0)]        // fused: one forward, one backward whatever n
    [InlineData("vanilla", "cagrad", 3, 1, 3, 0)]     // the combiner needs each gradient
    [InlineData("zmagic", "cagrad", 3, 2, 5, 2)]      // exact: 2 forwards, 2n - 1 backward passes (n - 1 VJPs)
    [InlineData("zmagic", "sum", 3, 2, 3, 1)]         // fused later conditions: one backward at the proposal, one VJP
    [InlineData("zmagic-reuse", "cagrad", 2, 1, 2, 1)]
    [InlineData("unguided", "sum", 0, 1, 0, 0)]
    public void Bench_PrintsOneJsonObjectWithTimesAndPasses(string method, string combiner, int n, int forwards, int backwards, int vjps)
    {
        var (code, stdout, stderr) = CliRunner.Run("bench", "--preset", "digits", "--method", method, "--combiner", combiner,
            "--conditions", n.ToString(System.Globalization.CultureInfo.InvariantCulture), "--steps", "2", "--warmup", "1", "--threads", "1");
        Assert.True(code == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        using var doc = JsonDocument.Parse(lines[0]);
        var r = doc.RootElement;
        Assert.Equal(method, r.GetProperty("method").GetString());
        Assert.Equal(2, r.GetProperty("steps").GetInt32());
        Assert.True(r.GetProperty("ms_per_step_median").GetDouble() > 0);
        Assert.True(r.GetProperty("peak_memory_mb").GetDouble() > 0);
        Assert.True(r.GetProperty("forward_ms_median").GetDouble() > 0);
        Assert.Equal(forwards, r.GetProperty("forward_passes_per_step").GetDouble());
        Assert.Equal(backwards, r.GetProperty("backward_passes_per_step").GetDouble());
        Assert.Equal(vjps, r.GetProperty("vjps_per_step").GetDouble());
        Assert.Equal(vjps > 0, r.GetProperty("vjp_ms_median").GetDouble() > 0);
    }

    [Theory]
    [InlineData("--method", "Option --method must be one of", "zmagic-reuse")]
    [InlineData("--combiner", "Option --combiner must be one of", "pcgrad")]
    public void Bench_UnknownNames_AreUsageErrorsListingTheChoices(string option, string message, string listed)
    {
        var (code, _, stderr) = CliRunner.Run("bench", "--preset", "digits", option, "bogus");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains(message, stderr);
        Assert.Contains(listed, stderr);
    }

    [Fact]
    public void Bench_WeightsAndRandomWeights_Contradict()
    {
        var (code, _, stderr) = CliRunner.Run("bench", "--preset", "digits", "--weights", "x.safetensors", "--random-weights");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("contradict", stderr);
    }
}
