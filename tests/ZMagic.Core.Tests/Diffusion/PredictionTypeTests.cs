using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Tests.Analytic;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Diffusion;

/// <summary>PredictEpsilon converts v and x0 predictions and drops learned-variance channels.</summary>
public class PredictionTypeTests
{
    [Theory]
    [InlineData(PredictionType.VPrediction, false)]
    [InlineData(PredictionType.Sample, false)]
    [InlineData(PredictionType.Epsilon, true)]
    [InlineData(PredictionType.VPrediction, true)]
    public void ConvertsToTheSameEpsilon(PredictionType prediction, bool learnedSigma)
    {
        var schedule = NoiseSchedule.Linear();
        var reference = GaussianDataDenoiser.Spread(schedule, 2, 4);
        var other = GaussianDataDenoiser.Spread(schedule, 2, 4, prediction, learnedSigma);
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(new long[] { 3, 2, 4, 4 }, ScalarType.Float64, generator: new Generator(4)) * 1.5;
        foreach (int t in new[] { 0, 10, 500, 999 })
        {
            var tt = torch.full(3, (float)t);
            double a = schedule.AlphaBar(t);
            var want = reference.PredictEpsilon(x, tt, a);
            var got = other.PredictEpsilon(x, tt, a);
            // Float64 round trips through x0 = (x - sqrt(1-a) eps)/sqrt(a): the error grows like 1/sqrt(a) at t = 999.
            TensorAssert.Close(got, want, 1e-11, 1e-9, $"{prediction}{(learnedSigma ? "+sigma" : "")} at t={t}");
        }
    }

    [Fact]
    public void WrongOutputShapeIsReportedWithBothShapes()
    {
        var d = GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 2, 4, learnedSigma: true);
        d.OutputHook = o => o.narrow(1, 0, 2); // forgets the variance channels
        using var scope = torch.NewDisposeScope();
        var x = torch.zeros(1, 2, 4, 4, ScalarType.Float64);
        var e = Assert.Throws<InvalidOperationException>(() => d.PredictEpsilon(x, torch.full(1, 10f), 0.9));
        Assert.Contains("[1, 2, 4, 4]", e.Message);
        Assert.Contains("expected [1, 4, 4, 4]", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => d.PredictEpsilon(x, torch.full(1, 10f), 1.0));
    }
}
