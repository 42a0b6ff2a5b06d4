using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>
/// TensorFlow operations that PyTorch has no exact twin for, on NCHW tensors: "same" padding (asymmetric: the extra
/// row/column goes at the bottom/right), tfjs' legacy bilinear resize, and face-api's input preprocessing.
/// All are differentiable.
/// </summary>
public static class TfOps
{
    /// <summary>
    /// The (before, after) padding TensorFlow's "same" mode adds along one axis of size <paramref name="n"/> for a
    /// window <paramref name="k"/> and stride <paramref name="s"/>: total <c>max((ceil(n/s)-1)*s + k - n, 0)</c>,
    /// <c>floor(total/2)</c> before and the rest after.
    /// </summary>
    public static (long Before, long After) SamePadding(long n, long k, long s)
    {
        long outSize = (n + s - 1) / s;
        long total = Math.Max((outSize - 1) * s + k - n, 0);
        return (total / 2, total - total / 2);
    }

    /// <summary>Pads an NCHW tensor as TensorFlow's "same" mode would for a k x k window with stride s.</summary>
    public static Tensor PadSame(Tensor x, long k, long s, double value = 0.0)
    {
        var (top, bottom) = SamePadding(x.shape[2], k, s);
        var (left, right) = SamePadding(x.shape[3], k, s);
        if (top == 0 && bottom == 0 && left == 0 && right == 0) return x.alias();
        return F.pad(x, new[] { left, right, top, bottom }, PaddingModes.Constant, value);
    }

    /// <summary>TensorFlow max-pool with "same" padding (padded cells never win: they are -inf).</summary>
    public static Tensor MaxPoolSame(Tensor x, long k, long s)
    {
        using var padded = PadSame(x, k, s, double.NegativeInfinity);
        return F.max_pool2d(padded, new[] { k, k }, new[] { s, s });
    }

    /// <summary>
    /// <c>tf.image.resizeBilinear(x, [outH, outW], alignCorners=false, halfPixelCenters=false)</c> as the tfjs CPU
    /// kernel computes it: <c>src = (in/out)*dst</c>, floor/ceil neighbours clamped to the image, interpolation along
    /// x first, then along y, in float64, rounded to float32 at the end. Input NCHW; output has the input's dtype.
    /// </summary>
    public static Tensor ResizeBilinearTf(Tensor x, long outH, long outW)
    {
        if (x.dim() != 4) throw new ArgumentException($"ResizeBilinearTf expects NCHW, got [{string.Join(", ", x.shape)}].", nameof(x));
        long inH = x.shape[2], inW = x.shape[3];
        if (inH == outH && inW == outW) return x.alias();
        using var scope = NewDisposeScope();
        var dtype = x.dtype;
        var xd = x.to(ScalarType.Float64);
        var (y0, y1, fy) = Taps(inH, outH, x.device);
        var (x0, x1, fx) = Taps(inW, outW, x.device);
        var left = xd.index_select(3, x0);
        var right = xd.index_select(3, x1);
        var horiz = left + (right - left) * fx.view(1, 1, 1, outW);
        var top = horiz.index_select(2, y0);
        var bottom = horiz.index_select(2, y1);
        var result = (top + (bottom - top) * fy.view(1, 1, outH, 1)).to(dtype);
        return result.MoveToOuterDisposeScope();
    }

    private static (Tensor Floor, Tensor Ceil, Tensor Frac) Taps(long inSize, long outSize, Device device)
    {
        double ratio = (double)inSize / outSize;
        var f = new long[outSize];
        var c = new long[outSize];
        var frac = new double[outSize];
        for (long i = 0; i < outSize; i++)
        {
            double src = ratio * i;
            long lo = Math.Max(0, (long)Math.Floor(src));
            f[i] = lo;
            c[i] = Math.Min(inSize - 1, (long)Math.Ceiling(src));
            frac[i] = src - lo;
        }
        return (tensor(f, device: device), tensor(c, device: device), tensor(frac, ScalarType.Float64, device));
    }

    /// <summary>
    /// face-api's <c>padToSquare</c>: zero rows/columns (in the image's own units) make an NCHW image square. With
    /// <paramref name="centered"/> (the face nets), <c>Math.round(|H-W|/2)</c> go after the image (bottom/right) and the
    /// remainder before it; otherwise (the detector) all go after it.
    /// </summary>
    public static Tensor PadToSquare(Tensor x, bool centered)
    {
        long h = x.shape[2], w = x.shape[3];
        long diff = Math.Abs(h - w);
        if (diff == 0) return x.alias();
        long after = centered ? (diff + 1) / 2 : diff; // Math.round(diff / 2) rounds .5 up
        long before = diff - after;
        var pads = h > w ? new[] { before, after, 0L, 0L } : new[] { 0L, 0L, before, after };
        return F.pad(x, pads, PaddingModes.Constant, 0.0);
    }

    /// <summary>
    /// <c>NetInput.toBatchTensor(size, centered)</c> followed by the mean subtraction and /255 of the nets: an NCHW RGB
    /// image in 0..255 (any H, W) becomes the float32 network input [B, 3, size, size].
    /// </summary>
    /// <param name="rgb255">[B, 3, H, W] RGB with values in 0..255 (float).</param>
    /// <param name="size">The net's input side (112, 150, or the detector's input size).</param>
    /// <param name="centered">true for the face nets (padding split around the image), false for the detector.</param>
    /// <param name="meanRgb">The net's mean (<see cref="FaceApiMeans"/>).</param>
    public static Tensor ToNetInput(Tensor rgb255, long size, bool centered, IReadOnlyList<float> meanRgb)
    {
        ArgumentNullException.ThrowIfNull(rgb255);
        if (rgb255.dim() != 4 || rgb255.shape[1] != 3)
            throw new ArgumentException($"expected an RGB image batch [B, 3, H, W], got [{string.Join(", ", rgb255.shape)}].", nameof(rgb255));
        if (rgb255.shape[2] < 1 || rgb255.shape[3] < 1)
            throw new ArgumentException($"the image is empty: [{string.Join(", ", rgb255.shape)}].", nameof(rgb255));
        if (meanRgb.Count != 3) throw new ArgumentException("meanRgb needs 3 values.", nameof(meanRgb));
        using var scope = NewDisposeScope();
        var x = rgb255.to(ScalarType.Float32);
        x = PadToSquare(x, centered);
        x = ResizeBilinearTf(x, size, size);
        var mean = tensor(meanRgb.ToArray(), new long[] { 1, 3, 1, 1 }, ScalarType.Float32, x.device);
        var result = (x - mean) / 255f;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>tinyYolov2's leaky ReLU exactly as written there: <c>relu(x - 0.1x) + 0.1x</c>.</summary>
    public static Tensor Leaky(Tensor x)
    {
        using var min = x * 0.10000000149011612f;
        using var d = x - min;
        using var r = F.relu(d);
        return r + min;
    }
}

/// <summary>The per-channel RGB means face-api subtracts before dividing by 255.</summary>
public static class FaceApiMeans
{
    /// <summary>The face nets (landmarks, expression, age/gender, recognition): [122.782, 117.001, 104.298].</summary>
    public static IReadOnlyList<float> Face { get; } = new[] { 122.782f, 117.001f, 104.298f };

    /// <summary>The TinyFaceDetector: [117.001, 114.697, 97.404].</summary>
    public static IReadOnlyList<float> TinyFaceDetector { get; } = new[] { 117.001f, 114.697f, 97.404f };
}
