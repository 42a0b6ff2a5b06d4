using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests;

/// <summary>The first test: libtorch loads, autograd works, and double backward (a Hessian-vector product) works.</summary>
public class NativeSmokeTests
{
    [Fact]
    public void NativeLoadAutogradAndHessianVectorProduct()
    {
        // f(x) = sum(x^3) => grad = 3x^2, Hessian = diag(6x), H v = 6 x * v.
        using var x = tensor(new float[] { 1f, -2f, 0.5f }).requires_grad_(true);
        using var v = tensor(new float[] { 0.3f, 1f, -2f });
        using var y = x.pow(3).sum();
        var g = torch.autograd.grad(new[] { y }, new[] { x }, retain_graph: true, create_graph: true)[0];
        Assert.Equal(new[] { 3f, 12f, 0.75f }, g.detach().data<float>().ToArray());
        using var gv = (g * v).sum();
        var hv = torch.autograd.grad(new[] { gv }, new[] { x })[0];
        var expected = new[] { 6f * 1f * 0.3f, 6f * -2f * 1f, 6f * 0.5f * -2f };
        var actual = hv.data<float>().ToArray();
        for (int i = 0; i < 3; i++) Assert.Equal(expected[i], actual[i], 5);
    }
}
