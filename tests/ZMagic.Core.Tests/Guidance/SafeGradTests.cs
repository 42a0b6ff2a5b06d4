using TorchSharp;
using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>Each misuse that would abort the process inside TorchSharp's native grad is refused with an exception.</summary>
public class SafeGradTests
{
    [Fact]
    public void OutputWithoutGradFnIsRefused()
    {
        var x = torch.randn(3).requires_grad_(true);
        var y = x.detach().sum();
        var ex = Assert.Throws<InvalidOperationException>(() => SafeGrad.Grad(y, x, retainGraph: false));
        Assert.Contains("grad_fn", ex.Message);
    }

    [Fact]
    public void InputWithoutRequiresGradIsRefused()
    {
        var x = torch.randn(3);
        var w = torch.randn(3).requires_grad_(true);
        var y = (x * w).sum();
        Assert.Throws<InvalidOperationException>(() => SafeGrad.Grad(y, x, retainGraph: false));
    }

    [Fact]
    public void NonScalarWithoutGradOutputsAndMismatchedGradOutputsAreRefused()
    {
        var x = torch.randn(3).requires_grad_(true);
        var y = x * 2;
        Assert.Throws<InvalidOperationException>(() => SafeGrad.Grad(y, x, retainGraph: true));
        Assert.Throws<ArgumentException>(() => SafeGrad.Vjp(y, x, torch.ones(4), retainGraph: true));
        Assert.Throws<ArgumentException>(() => SafeGrad.Vjp(y, x, torch.ones(3, ScalarType.Float64), retainGraph: true));
        var v = SafeGrad.Vjp(y, x, torch.ones(3), retainGraph: false);
        Assert.Equal(new[] { 2f, 2f, 2f }, v.data<float>().ToArray());
    }

    [Fact]
    public void UnusedInputGivesZerosAndDoubleBackwardWorks()
    {
        var x = torch.tensor(new[] { 1.0, -2.0 }).requires_grad_(true);
        var other = torch.tensor(new[] { 3.0, 4.0 }).requires_grad_(true);
        var y = other.square().sum();
        Assert.Equal(new[] { 0.0, 0.0 }, SafeGrad.Grad(y, x, retainGraph: true).data<double>().ToArray());
        var f = x.pow(3).sum();
        var g = SafeGrad.Grad(f, x, retainGraph: true, createGraph: true);
        var hv = SafeGrad.Grad((g * torch.tensor(new[] { 1.0, 1.0 })).sum(), x, retainGraph: false);
        Assert.Equal(new[] { 6.0, -12.0 }, hv.data<double>().ToArray());
    }
}
