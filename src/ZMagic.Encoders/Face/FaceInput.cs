using static TorchSharp.torch;

namespace ZMagic.Encoders.Face;

/// <summary>Shape and value checks shared by the face networks and conditions, with messages that say what was expected.</summary>
public static class FaceInput
{
    /// <summary>Throws unless <paramref name="x"/> is a floating-point [B, 3, H, W] tensor with B, H, W &gt; 0.</summary>
    /// <param name="x">The tensor to check.</param>
    /// <param name="what">Names the tensor in the message.</param>
    public static void RequireImageBatch(Tensor x, string what)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4)
            throw new ArgumentException($"{what}: expected an image batch [B, 3, H, W], got a {x.dim()}-d tensor [{string.Join(", ", x.shape)}].");
        if (x.shape[1] != 3)
            throw new ArgumentException($"{what}: expected 3 (RGB) channels, got {x.shape[1]} in [{string.Join(", ", x.shape)}].");
        if (x.shape[0] == 0 || x.shape[2] == 0 || x.shape[3] == 0)
            throw new ArgumentException($"{what}: empty image batch [{string.Join(", ", x.shape)}].");
        if (!x.is_floating_point())
            throw new ArgumentException($"{what}: expected a floating-point tensor, got {x.dtype}.");
    }

    /// <summary>
    /// Throws unless every value of <paramref name="x"/> lies in [lo - slack, hi + slack] and is finite: catches
    /// images given as [0, 255] where [-1, 1] is expected.
    /// </summary>
    public static void RequireRange(Tensor x, double lo, double hi, string what, double slack = 1e-3)
    {
        ArgumentNullException.ThrowIfNull(x);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var d = x.detach();
        if (!d.isfinite().all().item<bool>())
            throw new ArgumentException($"{what}: contains NaN or infinite values.");
        double min = d.min().to(ScalarType.Float64).item<double>(), max = d.max().to(ScalarType.Float64).item<double>();
        if (min < lo - slack || max > hi + slack)
            throw new ArgumentException($"{what}: values must lie in [{lo}, {hi}], got [{min:G5}, {max:G5}] (an image in [0, 255] or [0, 1] where [-1, 1] is expected?).");
    }
}
