using TorchSharp;
using ZMagic.Encoders.Face;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>
/// insightface iresnet50/100: there is no golden data, so the key list is derived here from the structure of
/// arcface_torch's iresnet.py (the checkpoint's keys), and the forward/backward are checked for shapes and behaviour.
/// </summary>
public class IResNetTests
{
    private static readonly string[] Bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"];

    /// <summary>backbone.pth keys for stage depths <paramref name="layers"/>, written out from iresnet.py's modules.</summary>
    private static List<(string, long[])> ExpectedKeys(int[] layers)
    {
        var keys = new List<(string, long[])>();
        void BnKeys(string p, long c)
        {
            foreach (var n in Bn) keys.Add(($"{p}.{n}", n == "num_batches_tracked" ? [] : [c]));
        }
        keys.Add(("conv1.weight", [64, 3, 3, 3]));
        BnKeys("bn1", 64);
        keys.Add(("prelu.weight", [64]));
        long inplanes = 64;
        long[] planes = [64, 128, 256, 512];
        for (int s = 0; s < 4; s++)
        {
            for (int b = 0; b < layers[s]; b++)
            {
                string p = $"layer{s + 1}.{b}";
                long cin = b == 0 ? inplanes : planes[s];
                BnKeys($"{p}.bn1", cin);
                keys.Add(($"{p}.conv1.weight", [planes[s], cin, 3, 3]));
                BnKeys($"{p}.bn2", planes[s]);
                keys.Add(($"{p}.prelu.weight", [planes[s]]));
                keys.Add(($"{p}.conv2.weight", [planes[s], planes[s], 3, 3]));
                BnKeys($"{p}.bn3", planes[s]);
                if (b == 0)
                {
                    keys.Add(($"{p}.downsample.0.weight", [planes[s], cin, 1, 1]));
                    BnKeys($"{p}.downsample.1", planes[s]);
                }
            }
            inplanes = planes[s];
        }
        BnKeys("bn2", 512);
        keys.Add(("fc.weight", [512, 512 * 49]));
        keys.Add(("fc.bias", [512]));
        BnKeys("features", 512);
        return keys;
    }

    [Fact]
    public void IResNet50KeysMatchBackbonePth()
    {
        using var net = IResNet.IResNet50();
        var expected = ExpectedKeys([3, 4, 14, 3]);
        Assert.Equal(475, expected.Count);
        FaceTestUtil.AssertKeysEqual(net, expected, "iresnet50");
    }

    [Fact]
    public void IResNet100KeysMatchBackbonePth()
    {
        using var net = IResNet.IResNet100();
        var expected = ExpectedKeys([3, 13, 30, 3]);
        Assert.Equal(925, expected.Count);
        FaceTestUtil.AssertKeysEqual(net, expected, "iresnet100");
    }

    [Fact]
    public void ForwardIsUnnormalisedAndBackwardReachesTheInput()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(7);
        using var net = IResNet.IResNet50();
        net.eval();
        // features.weight is frozen at 1 as in the reference.
        var fw = net.state_dict()["features.weight"];
        Assert.True(fw.eq(1).all().item<bool>());
        var x = (torch.rand(2, 3, 112, 112) * 2 - 1).requires_grad_(true);
        var y = net.call(x);
        Assert.Equal([2L, 512L], y.shape);
        Assert.True(y.isfinite().all().item<bool>());
        // Not l2-normalised (unlike IR-SE50): row norms are far from 1 with default init.
        var norms = y.norm(1);
        Assert.True((norms - 1).abs().max().item<float>() > 1e-2f, $"row norms {norms.str()} look normalised");
        var g = torch.autograd.grad([y.square().sum()], [x], retain_graph: false)[0];
        Assert.Equal(x.shape, g.shape);
        Assert.True(g.abs().sum().item<float>() > 0);
        // Items are independent in eval mode.
        using (no_grad())
        {
            var y0 = net.call(x[..1]);
            TestSupport.TensorAssert.Close(y0, y[..1], 1e-5, 1e-4, "batch independence");
        }
    }

    [Fact]
    public void WrongInputSizeIsRefused()
    {
        using var net = IResNet.IResNet50();
        net.eval();
        using var x = torch.zeros(1, 3, 128, 128);
        var ex = Assert.Throws<ArgumentException>(() => net.call(x));
        Assert.Contains("112", ex.Message);
        using var gray = torch.zeros(1, 1, 112, 112);
        Assert.Contains("3 (RGB) channels", Assert.Throws<ArgumentException>(() => net.call(gray)).Message);
    }
}
