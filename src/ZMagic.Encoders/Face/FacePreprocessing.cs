using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Face;

/// <summary>
/// FreeDoM's differentiable face preprocessing, operation for operation, from the denoiser's [-1, 1] RGB space to
/// each network's input.
/// </summary>
public static class FacePreprocessing
{
    /// <summary>FreeDoM's ArcFace crop of a 256x256 image: rows 35..222, columns 32..219 (188x188).</summary>
    public static FaceCropBox ArcFaceCrop256 { get; } = new(Top: 35, Bottom: 223, Left: 32, Right: 220);

    /// <summary>ImageNet mean, per RGB channel.</summary>
    public static IReadOnlyList<double> ImageNetMean { get; } = [0.485, 0.456, 0.406];

    /// <summary>ImageNet standard deviation, per RGB channel.</summary>
    public static IReadOnlyList<double> ImageNetStd { get; } = [0.229, 0.224, 0.225];

    /// <summary>
    /// <c>F.interpolate(x, size, mode='bicubic')</c>: align_corners=false, Keys cubic with A = -0.75, no antialias
    /// (libtorch's kernel, the same formula as PyTorch's).
    /// </summary>
    /// <remarks>
    /// A float32 input is resized in float64 and rounded back. libtorch's float32 bicubic kernel computes source
    /// coordinates and weights in float32, which leaves errors of ~4e-6 on [0, 1] images; for a non-integer ratio
    /// (e.g. a 97-pixel landmark crop to 112) libtorch 2.10 and PyTorch 1.13 round differently (for integer ratios such
    /// as 128 to 512 they agree). The face networks are piecewise linear (ReLU/PReLU) with many units near their
    /// kinks, so such differences flip kinks and move input gradients by up to ~1e-2 (measured on the MobileFaceNet
    /// golden case: relative L2 1.8e-3 with the float32 kernel, 3.6e-5 with this one). Resizing in float64 gives the
    /// correctly rounded value of the exact formula, independent of the kernel version, at the cost of one small resize.
    /// </remarks>
    public static Tensor Bicubic(Tensor x, long height, long width)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dtype != ScalarType.Float32 && x.dtype != ScalarType.Float16 && x.dtype != ScalarType.BFloat16)
            return functional.interpolate(x, [height, width], mode: InterpolationMode.Bicubic, align_corners: false);
        using var wide = x.to(ScalarType.Float64);
        using var resized = functional.interpolate(wide, [height, width], mode: InterpolationMode.Bicubic, align_corners: false);
        return resized.to(x.dtype);
    }

    /// <summary><c>AdaptiveAvgPool2d((height, width))</c>, including non-integer ratios (overlapping windows).</summary>
    public static Tensor AdaptiveAvgPool(Tensor x, long height, long width) =>
        functional.adaptive_avg_pool2d(x, [height, width]);

    /// <summary><c>x[:, :, top:bottom, left:right]</c>, refusing a box that leaves the image.</summary>
    public static Tensor Crop(Tensor x, FaceCropBox box)
    {
        ArgumentNullException.ThrowIfNull(box);
        box.Validate(x.shape[^2], x.shape[^1], "face crop");
        return x[.., .., TensorIndex.Slice(box.Top, box.Bottom), TensorIndex.Slice(box.Left, box.Right)];
    }

    /// <summary>
    /// FreeDoM's <c>IDLoss.extract_feats</c> preprocessing: <c>AdaptiveAvgPool2d(256)</c> when H != 256, the crop
    /// [35:223, 32:220], then <c>AdaptiveAvgPool2d(faceSize)</c>. Input and output in [-1, 1], no normalisation.
    /// </summary>
    public static Tensor ArcFaceInput(Tensor x, long faceSize = 112)
    {
        FaceInput.RequireImageBatch(x, "ArcFace preprocessing input");
        using var scope = NewDisposeScope();
        var h = x;
        // FreeDoM tests only the height; a 256-high non-square image is cropped as is.
        if (x.shape[2] != 256) h = AdaptiveAvgPool(h, 256, 256);
        h = Crop(h, ArcFaceCrop256);
        return AdaptiveAvgPool(h, faceSize, faceSize).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// FreeDoM's <c>FaceParseTool.get_residual</c> preprocessing: bicubic resize to <paramref name="size"/> (512), then
    /// <c>Normalize(2 mean - 1, 2 std)</c>, which equals ImageNet normalisation of <c>(x + 1) / 2</c>.
    /// </summary>
    public static Tensor ParsingInput(Tensor x, long size = 512)
    {
        FaceInput.RequireImageBatch(x, "parsing preprocessing input");
        using var scope = NewDisposeScope();
        var h = Bicubic(x, size, size);
        return NormalizeSigned(h, ImageNetMean, ImageNetStd).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// torchvision <c>Normalize(2 mean - 1, 2 std)</c> on a [-1, 1] image: <c>(x - (2m - 1)) / (2s)</c>, computed in that
    /// order so that it rounds like the reference.
    /// </summary>
    public static Tensor NormalizeSigned(Tensor x, IReadOnlyList<double> mean, IReadOnlyList<double> std)
    {
        using var scope = NewDisposeScope();
        var m = tensor(mean.Select(v => (float)(v * 2 - 1)).ToArray(), dtype: x.dtype, device: x.device).view(1, 3, 1, 1);
        var s = tensor(std.Select(v => (float)(v * 2)).ToArray(), dtype: x.dtype, device: x.device).view(1, 3, 1, 1);
        return ((x - m) / s).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// FreeDoM's <c>FaceLandMarkTool.get_residual</c> preprocessing: <c>(x + 1) / 2</c>, the crop
    /// <c>[top:bottom, left:right]</c>, then bicubic resize to <paramref name="size"/> (112). RGB order, [0, 1].
    /// </summary>
    public static Tensor LandmarkInput(Tensor x, FaceCropBox box, long size = 112)
    {
        FaceInput.RequireImageBatch(x, "landmark preprocessing input");
        using var scope = NewDisposeScope();
        var h = (x + 1.0) / 2.0;
        h = Crop(h, box);
        return Bicubic(h, size, size).MoveToOuterDisposeScope();
    }
}
