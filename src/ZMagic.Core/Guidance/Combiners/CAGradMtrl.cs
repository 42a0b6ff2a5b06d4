using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// A port of the CAGrad authors' multi-task RL solver (<c>mtrl/mtrl_files/cagrad.py::Agent.cagrad</c>): softmax-
/// parametrised weights, 20 SGD steps (lr 25, or 50 for 50 tasks; momentum 0.5) keeping the best of 21 evaluations,
/// on the Gram matrix normalised by <c>mean(sqrt(diag + 1e-4))^2</c>. Deterministic float32 torch arithmetic, so
/// results match the reference to float32 rounding wherever the SGD path is stable; with lr 25 a last-bit
/// difference in a BLAS or autograd kernel can send the 20 steps elsewhere (seen on 4 of 65 reference cases). Kept for parity and comparison; the library's
/// <see cref="CAGradCombiner"/> solves the dual exactly instead.
/// </summary>
internal static class CAGradMtrl
{
    /// <summary>The combined direction for task gradients <paramref name="grads"/> [K, d] (rows are tasks), radius <paramref name="c"/>.</summary>
    public static Tensor Combine(Tensor grads, double c) => Solve(grads, c).Direction;

    /// <summary>
    /// The combined direction plus the solver's weights (softmax of the best iterate) and its objective on the
    /// normalised Gram matrix.
    /// </summary>
    public static (Tensor Direction, double[] Weights, double Objective) Solve(Tensor grads, double c)
    {
        ArgumentNullException.ThrowIfNull(grads);
        if (grads.dim() != 2) throw new ArgumentException($"MTRL CAGrad takes task gradients as rows [K, d]; got shape [{string.Join(", ", grads.shape)}].", nameof(grads));
        long k = grads.shape[0];
        using var scope = torch.NewDisposeScope();
        using var grad = torch.enable_grad();
        var gg = grads.mm(grads.t()).cpu();
        var scale = (torch.diag(gg) + 1e-4).sqrt().mean();
        gg = gg / scale.pow(2);
        var gCol = gg.mean(new long[] { 1 }, keepdim: true);      // [K, 1]
        var gMean = gCol.mean(new long[] { 0 }, keepdim: true);    // [1, 1]
        var w = torch.zeros(new long[] { k, 1 }, grads.dtype).requires_grad_(true);
        double lr = k == 50 ? 50 : 25, momentum = 0.5;
        var cT = (gMean + 1e-4).sqrt() * c;
        Tensor? wBest = null, buffer = null;
        double best = double.PositiveInfinity;
        for (int i = 0; i < 21; i++)
        {
            var ww = torch.softmax(w, 0);
            var obj = ww.t().mm(gCol) + cT * (ww.t().mm(gg).mm(ww) + 1e-4).sqrt();
            double value = obj.item<float>();
            if (value < best)
            {
                best = value;
                wBest = w.detach().clone();
            }
            if (i < 20)
            {
                var g = SafeGrad.Grad(obj, w, retainGraph: false, what: "MTRL CAGrad objective");
                using (torch.no_grad())
                {
                    buffer = buffer is null ? g.clone() : buffer.mul_(momentum).add_(g);
                    w.add_(buffer, alpha: -lr);
                }
            }
        }
        var wwBest = torch.softmax(wBest!, 0);
        var gwNorm = (wwBest.t().mm(gg).mm(wwBest) + 1e-4).sqrt();
        var lambda = cT.view(-1) / (gwNorm + 1e-4);
        var coef = (wwBest * lambda + 1.0 / k).view(-1, 1).to(grads.device);
        var result = (coef * grads).sum(dim: 0) / (1 + c * c);
        var weights = wwBest.to(ScalarType.Float64).data<double>().ToArray();
        return (result.MoveToOuterDisposeScope(), weights, best);
    }
}
