using ZMagic.Encoders.FaceApi;
using static TorchSharp.torch;

namespace ZMagic.Guidance.FaceAttributes;

/// <summary>
/// The face-api view of a generated image: x0 in [-1, 1] -> 0..255 -> the fixed face box cropped -> padded to a square
/// and resized exactly as the package does (<see cref="TfOps.ToNetInput"/>, face mean). Differentiable with respect to
/// x0 (crop = slicing; resize = tfjs' bilinear taps as gathers and weighted sums).
/// </summary>
public sealed class FaceCrop
{
    /// <summary>Crops <paramref name="box"/> (pixels of the images that will be passed in).</summary>
    public FaceCrop(FaceBox box)
    {
        ArgumentNullException.ThrowIfNull(box);
        if (box.Width < 1 || box.Height < 1) throw new ArgumentException($"the face box {box} is empty.", nameof(box));
        Box = box;
    }

    /// <summary>The crop box.</summary>
    public FaceBox Box { get; }

    /// <summary>Checks that <paramref name="x0"/> is a float [B, 3, H, W] batch that contains the box.</summary>
    public void Check(Tensor x0, string who)
    {
        ArgumentNullException.ThrowIfNull(x0);
        if (x0.dim() != 4 || x0.shape[1] != 3)
            throw new ArgumentException($"{who}: expected an RGB image batch [B, 3, H, W] in [-1, 1], got [{string.Join(", ", x0.shape)}].", nameof(x0));
        if (!x0.is_floating_point()) throw new ArgumentException($"{who}: expected a floating-point image, got {x0.dtype}.", nameof(x0));
        Box.Validate(x0.shape[3], x0.shape[2], $"{who}: face box");
    }

    /// <summary>The net input [B, 3, size, size] of the face in <paramref name="x0"/> ([B, 3, H, W] in [-1, 1]).</summary>
    public Tensor NetInput(Tensor x0, long size, string who)
    {
        Check(x0, who);
        using var scope = NewDisposeScope();
        var face = x0[.., .., Box.Top..Box.Bottom, Box.Left..Box.Right];
        var rgb255 = (face.to(ScalarType.Float32) + 1f) * 127.5f;
        return TfOps.ToNetInput(rgb255, size, true, FaceApiMeans.Face).MoveToOuterDisposeScope();
    }

    /// <summary>Throws unless every value of a reference image lies in [-1, 1] (a small tolerance for rounding).</summary>
    public static void CheckReferenceRange(Tensor image, string who)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.numel() == 0) throw new ArgumentException($"{who}: the reference image is empty.", nameof(image));
        double min = image.min().item<float>(), max = image.max().item<float>();
        if (!(min >= -1.001 && max <= 1.001))
            throw new ArgumentException(
                $"{who}: the reference image must be in [-1, 1], got values in [{min:G4}, {max:G4}]" + (max > 2 ? " (0..255 or 0..1 data? scale it to [-1, 1])." : "."), nameof(image));
    }
}

/// <summary>Finds the reference face box once, with face-api's TinyFaceDetector.</summary>
public static class FaceBoxFinder
{
    /// <summary>
    /// Detects the best face in one image [1, 3, H, W] or [3, H, W] in [-1, 1] (the package's detectSingleFace: the
    /// highest-scoring detection after NMS).
    /// </summary>
    /// <exception cref="ArgumentException">Wrong shape or range.</exception>
    /// <exception cref="InvalidOperationException">No face scores above <paramref name="scoreThreshold"/>.</exception>
    public static FaceDetection Detect(TinyFaceDetector detector, Tensor image, int inputSize = 416, double scoreThreshold = 0.5)
    {
        ArgumentNullException.ThrowIfNull(detector);
        ArgumentNullException.ThrowIfNull(image);
        var shape = image.shape;
        bool ok = (image.dim() == 3 && shape[0] == 3) || (image.dim() == 4 && shape[0] == 1 && shape[1] == 3);
        if (!ok) throw new ArgumentException($"face detection expects one RGB image [1, 3, H, W] or [3, H, W] in [-1, 1], got [{string.Join(", ", shape)}].", nameof(image));
        FaceCrop.CheckReferenceRange(image, "face detection");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var rgb255 = (image.detach().to(ScalarType.Float32).clamp(-1, 1) + 1f) * 127.5f;
        var dets = detector.LocateFaces(rgb255, inputSize, scoreThreshold);
        if (dets.Count == 0)
            throw new InvalidOperationException(
                $"no face found in the {shape[^1]}x{shape[^2]} reference image (TinyFaceDetector, input size {inputSize}, score threshold {scoreThreshold}); pass a face box instead.");
        return dets[0];
    }

    /// <summary>The integer crop box of <see cref="Detect"/>.</summary>
    public static FaceBox Find(TinyFaceDetector detector, Tensor image, int inputSize = 416, double scoreThreshold = 0.5) =>
        Detect(detector, image, inputSize, scoreThreshold).ToFaceBox();
}
