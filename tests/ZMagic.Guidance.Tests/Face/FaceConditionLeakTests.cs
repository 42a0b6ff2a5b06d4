using TorchSharp;
using ZMagic.Encoders.Face;
using ZMagic.Guidance.Face;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Face;

/// <summary>An energy-and-gradient evaluation inside a DisposeScope leaves no live tensors behind.</summary>
public class FaceConditionLeakTests(FaceNetsFixture nets) : IClassFixture<FaceNetsFixture>
{
    [Fact]
    public void RepeatedEnergyAndGradientLeakNothing()
    {
        using var reference = torch.rand(1, 3, 64, 64) * 2 - 1;
        using var x0 = torch.rand(2, 3, 64, 64) * 2 - 1;
        using var lm = new LandmarksCondition(nets.Landmarker, reference, new FaceCropBox(8, 56, 8, 56));
        using var ps = new ParsingCondition(nets.Parser, reference, new ParsingOptions { InputSize = 64 });
        void Once()
        {
            using var scope = NewDisposeScope();
            var x = x0.detach().requires_grad_(true);
            var e = lm.Energy(x).sum() + ps.Energy(x).sum();
            var g = torch.autograd.grad([e], [x], retain_graph: false)[0];
            Assert.True(g.isfinite().all().item<bool>());
        }
        Once(); // first call caches the targets for this device/dtype
        var stats = DisposeScopeManager.Statistics;
        long before = stats.ThreadTotalLiveCount;
        Once();
        Once();
        Assert.Equal(before, stats.ThreadTotalLiveCount);
    }
}
