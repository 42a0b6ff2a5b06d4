using TorchSharp;
using ZMagic.Encoders.Face;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Face;

/// <summary>
/// Facial landmarks, as FreeDoM's <c>FaceLandMarkTool</c>: the energy of x0 is the distance between the 68 landmarks
/// MobileFaceNet finds in a fixed face box of x0 and the reference's.
/// </summary>
/// <remarks>
/// <para>Input: x0 [B, 3, H, W], RGB in [-1, 1], any size that contains the box. Preprocessing: <c>(x + 1) / 2</c>,
/// the crop <c>[top:bottom, left:right]</c> (pixels of x0), bicubic resize to 112x112; no normalisation.</para>
/// <para>The box is given by the caller (FreeDoM derives it once from a RetinaFace detection on the reference:
/// <see cref="FaceCropBox.FromDetection"/>; a face-api detection box converts field by field). The same box is used for
/// the reference image, which must be framed like x0.</para>
/// <para>Distance: per item b, <c>||ref - lm(x0_b)||_2</c> over the 136 normalised coordinates (FreeDoM's norm over
/// the whole batch equals this for batch 1).</para>
/// </remarks>
public sealed class LandmarksCondition : FaceConditionBase
{
    private readonly MobileFaceNet _net;

    /// <summary>Finds the reference landmarks in <paramref name="referenceImage"/> ([1 or B, 3, H, W] in [-1, 1]).</summary>
    public LandmarksCondition(MobileFaceNet net, Tensor referenceImage, FaceCropBox box, LandmarksOptions? options = null)
        : this(net, box, options ?? new LandmarksOptions(), ReferenceLandmarks(net, referenceImage, box, options ?? new LandmarksOptions()))
    {
    }

    private LandmarksCondition(MobileFaceNet net, FaceCropBox box, LandmarksOptions options, Tensor target) : base(options, target)
    {
        _net = net;
        Box = box;
        target.Dispose();
    }

    /// <summary>A condition towards given landmarks [1 or B, 136] (interleaved x, y in [0, 1] of the box).</summary>
    public static LandmarksCondition FromLandmarks(MobileFaceNet net, Tensor landmarks, FaceCropBox box, LandmarksOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(net);
        ArgumentNullException.ThrowIfNull(landmarks);
        ArgumentNullException.ThrowIfNull(box);
        if (landmarks.dim() != 2 || landmarks.shape[1] != net.EmbeddingSize || landmarks.shape[0] < 1 || !landmarks.is_floating_point())
            throw new ArgumentException($"target landmarks: expected a floating [1 or B, {net.EmbeddingSize}] tensor, got {landmarks.dtype} [{string.Join(", ", landmarks.shape)}].", nameof(landmarks));
        FaceCheckpoints.Freeze(net);
        return new LandmarksCondition(net, box, options ?? new LandmarksOptions(), landmarks.detach().clone());
    }

    /// <summary>The face box (pixels of x0).</summary>
    public FaceCropBox Box { get; }

    private static Tensor ReferenceLandmarks(MobileFaceNet net, Tensor image, FaceCropBox box, LandmarksOptions options)
    {
        ArgumentNullException.ThrowIfNull(net);
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(box);
        FaceCheckpoints.Freeze(net);
        CheckReference(image, "landmarks condition");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var face = FacePreprocessing.LandmarkInput(image, box, 112);
        if (options.ReferenceAsBgr) face = face.flip(1);
        return net.call(face).Landmarks.detach().MoveToOuterDisposeScope();
    }

    /// <summary>The normalised landmarks [B, 136] of x0 (differentiable).</summary>
    public Tensor Landmarks(Tensor x0)
    {
        CheckInput(x0);
        using var scope = NewDisposeScope();
        return _net.call(FacePreprocessing.LandmarkInput(x0, Box, 112)).Landmarks.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Landmarks [B, 68, 2] as (x, y) pixel coordinates of x0 (<c>x * width + left</c>, <c>y * height + top</c>), for
    /// display and checks.
    /// </summary>
    public Tensor LandmarkPixels(Tensor normalised)
    {
        ArgumentNullException.ThrowIfNull(normalised);
        using var scope = NewDisposeScope();
        var p = normalised.view(normalised.shape[0], -1, 2);
        var scale = tensor(new float[] { Box.Width, Box.Height }, dtype: p.dtype, device: p.device);
        var offset = tensor(new float[] { Box.Left, Box.Top }, dtype: p.dtype, device: p.device);
        return (p * scale + offset).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var lm = Landmarks(x0);
        return PerItemNorm(TargetFor(lm) - lm).MoveToOuterDisposeScope();
    }
}
