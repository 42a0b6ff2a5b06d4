using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>First- and second-order finite-difference checks of a network with respect to its input (float64).</summary>
internal static class GradientCheck
{
    /// <summary>
    /// Checks d/dx &lt;f(x), v&gt; along a direction u against a central difference, and the Hessian-vector product
    /// d/dx &lt;grad, u&gt; (double backward) against a central difference of the gradient.
    /// </summary>
    public static void Run(Func<Tensor, Tensor> f, Tensor x0, double tolFirst = 1e-6, double tolSecond = 1e-4, long seed = 3)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new Generator((ulong)seed);
        var outShape = f(x0).shape;
        var v = torch.randn(outShape, dtype: ScalarType.Float64, generator: gen);
        var u = torch.randn(x0.shape, dtype: ScalarType.Float64, generator: gen);

        Tensor Grad(Tensor x, bool createGraph, out Tensor leaf)
        {
            leaf = x.detach().requires_grad_(true);
            var y = f(leaf);
            Assert.True(y.requires_grad, "output does not depend on x");
            var obj = (y * v).sum();
            return torch.autograd.grad([obj], [leaf], retain_graph: createGraph, create_graph: createGraph)[0];
        }

        // first order
        var g = Grad(x0, createGraph: true, out var leaf0);
        double h = 1e-5;
        double fp, fm;
        using (torch.no_grad())
        {
            fp = (f(x0 + u * h) * v).sum().item<double>();
            fm = (f(x0 - u * h) * v).sum().item<double>();
        }
        double fd = (fp - fm) / (2 * h);
        double ad = (g * u).sum().item<double>();
        Assert.True(Math.Abs(fd - ad) <= tolFirst * Math.Max(1, Math.Abs(fd)), $"directional derivative: autograd {ad:R}, finite difference {fd:R}");

        // second order (double backward through the whole network)
        Assert.True(g.requires_grad, "the gradient has no graph: double backward is not supported");
        var hvp = torch.autograd.grad([(g * u).sum()], [leaf0], retain_graph: false, create_graph: false)[0];
        var gp = Grad(x0 + u * h, createGraph: false, out _);
        var gm = Grad(x0 - u * h, createGraph: false, out _);
        var fdH = (gp - gm) / (2 * h);
        double rel = (hvp - fdH).norm().item<double>() / Math.Max(1e-12, fdH.norm().item<double>());
        Assert.True(fdH.norm().item<double>() > 0, "Hessian-vector product is zero: the check would be blind");
        Assert.True(rel <= tolSecond, $"Hessian-vector product: rel L2 error {rel:E3} vs finite difference");
    }
}
