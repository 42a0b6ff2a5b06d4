using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>
/// A face box in pixels of the image it was found in, as the integer crop rectangle face-api's
/// <c>extractFaceTensors</c> slices: rows <c>Top..Bottom-1</c>, columns <c>Left..Right-1</c>.
/// </summary>
/// <param name="Top">First row.</param>
/// <param name="Bottom">One past the last row.</param>
/// <param name="Left">First column.</param>
/// <param name="Right">One past the last column.</param>
public sealed record FaceBox(int Top, int Bottom, int Left, int Right)
{
    /// <summary>Width in pixels.</summary>
    public int Width => Right - Left;

    /// <summary>Height in pixels.</summary>
    public int Height => Bottom - Top;

    /// <summary>Throws unless the box is non-empty and lies inside an image of <paramref name="width"/> x <paramref name="height"/>.</summary>
    public void Validate(long width, long height, string what = "face box")
    {
        if (Top < 0 || Left < 0 || Bottom > height || Right > width || Width < 1 || Height < 1)
            throw new ArgumentException($"{what} {this} does not lie inside the {width}x{height} (WxH) image or is empty.");
    }
}

/// <summary>One face found by <see cref="TinyFaceDetector"/>.</summary>
/// <param name="Score">The sigmoid score.</param>
/// <param name="X">Left edge, pixels (float, as the package's <c>FaceDetection.box</c>).</param>
/// <param name="Y">Top edge, pixels.</param>
/// <param name="Width">Width, pixels.</param>
/// <param name="Height">Height, pixels.</param>
/// <param name="ImageWidth">Width of the image searched.</param>
/// <param name="ImageHeight">Height of the image searched.</param>
public sealed record FaceDetection(double Score, double X, double Y, double Width, double Height, int ImageWidth, int ImageHeight)
{
    /// <summary>
    /// The integer crop the package slices (<c>box.clipAtImageBorders(W, H)</c>, each of x, y, w, h floored).
    /// </summary>
    public FaceBox ToFaceBox()
    {
        double x0 = Math.Max(X, 0), y0 = Math.Max(Y, 0);
        double w = Math.Min(X + Width - x0, ImageWidth - x0);
        double h = Math.Min(Y + Height - y0, ImageHeight - y0);
        int left = (int)Math.Floor(x0), top = (int)Math.Floor(y0);
        return new FaceBox(top, top + (int)Math.Floor(h), left, left + (int)Math.Floor(w));
    }
}

/// <summary>A decoded detector cell before non-maximum suppression (relative box: fractions of the image).</summary>
/// <param name="Score">Sigmoid score.</param>
/// <param name="X">Left, relative.</param>
/// <param name="Y">Top, relative.</param>
/// <param name="Width">Width, relative.</param>
/// <param name="Height">Height, relative.</param>
/// <param name="Row">Grid row.</param>
/// <param name="Col">Grid column.</param>
/// <param name="Anchor">Anchor index.</param>
public sealed record FaceCandidate(double Score, double X, double Y, double Width, double Height, int Row, int Col, int Anchor);

/// <summary>
/// face-api TinyFaceDetector (tiny YOLOv2 with separable convs, 1 class, 5 anchors). <see cref="LocateFaces"/> runs the
/// package's whole <c>detectAllFaces</c> path: preprocessing (pad after, bilinear resize, detector mean), the net,
/// sigmoid/anchor decoding with the non-square correction factors, the score threshold and NMS (IoU 0.4).
/// </summary>
public sealed class TinyFaceDetector : FaceApiNetwork<Tensor>
{
    /// <summary>BOX_ANCHORS (width, height) in grid cells.</summary>
    public static IReadOnlyList<(double W, double H)> Anchors { get; } = new[]
    {
        (1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061), (4.266906, 5.178857), (9.041765, 10.66308),
    };

    /// <summary>The package's NMS IoU threshold.</summary>
    public const double IouThreshold = 0.4;

    private readonly TfConv2d conv0;
    private readonly TfSeparableConv2d conv1, conv2, conv3, conv4, conv5;
    private readonly TfConv2d conv8;

    /// <summary>Creates the net (zero weights until loaded).</summary>
    public TinyFaceDetector() : base(nameof(TinyFaceDetector))
    {
        conv0 = new TfConv2d(3, 16, 3, 1, TfPadding.Valid);
        conv1 = new TfSeparableConv2d(16, 32, 1);
        conv2 = new TfSeparableConv2d(32, 64, 1);
        conv3 = new TfSeparableConv2d(64, 128, 1);
        conv4 = new TfSeparableConv2d(128, 256, 1);
        conv5 = new TfSeparableConv2d(256, 512, 1);
        conv8 = new TfConv2d(512, 25, 1, 1, TfPadding.Valid);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override string ModelName => "tiny_face_detector_model";

    /// <summary>The package's default input side (416); <see cref="forward"/> accepts any multiple of 32.</summary>
    public override long InputSize => 416;

    /// <summary>
    /// The raw output [B, 25, S, S] (NCHW; per cell 5 anchors x (tx, ty, tw, th, score)) of a preprocessed input
    /// [B, 3, size, size] (<see cref="TfOps.ToNetInput"/> with centered=false and the detector mean).
    /// </summary>
    public override Tensor forward(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 4 || input.shape[1] != 3 || input.shape[2] != input.shape[3] || input.shape[2] < 32 || input.shape[2] % 32 != 0)
            throw new ArgumentException($"TinyFaceDetector expects a preprocessed square input [B, 3, S, S] with S a multiple of 32, got [{string.Join(", ", input.shape)}].", nameof(input));
        using var scope = NewDisposeScope();
        var x = TfOps.Leaky(conv0.forward(input));
        x = TfOps.MaxPoolSame(x, 2, 2);
        x = TfOps.Leaky(conv1.forward(x));
        x = TfOps.MaxPoolSame(x, 2, 2);
        x = TfOps.Leaky(conv2.forward(x));
        x = TfOps.MaxPoolSame(x, 2, 2);
        x = TfOps.Leaky(conv3.forward(x));
        x = TfOps.MaxPoolSame(x, 2, 2);
        x = TfOps.Leaky(conv4.forward(x));
        x = TfOps.MaxPoolSame(x, 2, 2);
        x = TfOps.Leaky(conv5.forward(x));
        x = TfOps.MaxPoolSame(x, 2, 1);
        return conv8.forward(x).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The reshaped (unpadded) image size inside the net input: <c>(round(W*s), round(H*s))</c>, <c>s = size/max(W, H)</c>.
    /// </summary>
    public static (int Width, int Height) ReshapedDimensions(int width, int height, int inputSize)
    {
        double s = (double)inputSize / Math.Max(width, height);
        return ((int)Math.Floor(width * s + 0.5), (int)Math.Floor(height * s + 0.5));
    }

    /// <summary>
    /// <c>extractBoxes</c>: every (row, col, anchor) of one raw output [25, S, S] (or [1, 25, S, S]) whose sigmoid score
    /// exceeds <paramref name="scoreThreshold"/>, decoded to a box relative to the unpadded image.
    /// </summary>
    public static List<FaceCandidate> DecodeCandidates(Tensor raw, int reshapedWidth, int reshapedHeight, double scoreThreshold)
    {
        ArgumentNullException.ThrowIfNull(raw);
        using var r = raw.dim() == 4 ? raw[0] : raw.alias();
        if (r.dim() != 3 || r.shape[0] != 25 || r.shape[1] != r.shape[2])
            throw new ArgumentException($"expected a raw detector output [25, S, S], got [{string.Join(", ", raw.shape)}].", nameof(raw));
        int cells = (int)r.shape[1];
        double inputSize = Math.Max(reshapedWidth, reshapedHeight);
        double cfX = inputSize / reshapedWidth, cfY = inputSize / reshapedHeight;
        // [25, S, S] -> [S, S, 5, 5] (row, col, anchor, field), as the package reshapes the NHWC output.
        using var hwc = r.permute(1, 2, 0).contiguous().to(ScalarType.Float32).cpu();
        var v = hwc.data<float>().ToArray();
        var result = new List<FaceCandidate>();
        for (int row = 0; row < cells; row++)
            for (int col = 0; col < cells; col++)
                for (int a = 0; a < 5; a++)
                {
                    int o = ((row * cells + col) * 5 + a) * 5;
                    double score = Sigmoid(v[o + 4]);
                    if (scoreThreshold != 0 && !(score > scoreThreshold)) continue;
                    double ctX = (col + Sigmoid(v[o])) / cells * cfX;
                    double ctY = (row + Sigmoid(v[o + 1])) / cells * cfY;
                    double w = Math.Exp(v[o + 2]) * Anchors[a].W / cells * cfX;
                    double h = Math.Exp(v[o + 3]) * Anchors[a].H / cells * cfY;
                    double x = ctX - w / 2, y = ctY - h / 2;
                    // BoundingBox(x, y, x + w, y + h): the package's width/height are right - left, bottom - top.
                    result.Add(new FaceCandidate(score, x, y, (x + w) - x, (y + h) - y, row, col, a));
                }
        return result;
    }

    /// <summary>
    /// The package's <c>nonMaxSuppression</c> (IoU on boxes scaled by <paramref name="inputSize"/>): picks the best
    /// remaining candidate, drops those overlapping it by more than <paramref name="iouThreshold"/>; returns the picked
    /// indices in pick order.
    /// </summary>
    public static List<int> NonMaxSuppression(IReadOnlyList<FaceCandidate> candidates, double inputSize, double iouThreshold = IouThreshold)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        // JS: sort ascending by score (stable), then pop from the end.
        var order = Enumerable.Range(0, candidates.Count).OrderBy(i => candidates[i].Score).ToList();
        var boxes = candidates.Select(c => (L: c.X * inputSize, T: c.Y * inputSize, R: (c.X + c.Width) * inputSize, B: (c.Y + c.Height) * inputSize)).ToArray();
        var pick = new List<int>();
        while (order.Count > 0)
        {
            int cur = order[^1];
            order.RemoveAt(order.Count - 1);
            pick.Add(cur);
            order = order.Where(i => Iou(boxes[cur], boxes[i]) <= iouThreshold).ToList();
        }
        return pick;
    }

    private static double Iou((double L, double T, double R, double B) a, (double L, double T, double R, double B) b)
    {
        double w = Math.Max(0.0, Math.Min(a.R, b.R) - Math.Max(a.L, b.L));
        double h = Math.Max(0.0, Math.Min(a.B, b.B) - Math.Max(a.T, b.T));
        double inter = w * h;
        double areaA = (a.R - a.L) * (a.B - a.T), areaB = (b.R - b.L) * (b.B - b.T);
        return inter / (areaA + areaB - inter);
    }

    private static double Sigmoid(double x) => 1.0 / (1.0 + Math.Exp(-x));

    /// <summary>
    /// <c>detectAllFaces(image, TinyFaceDetectorOptions{inputSize, scoreThreshold})</c> on one RGB image [3, H, W] or
    /// [1, 3, H, W] with values in 0..255; detections in pick order (best first), boxes in pixels of the image.
    /// </summary>
    public List<FaceDetection> LocateFaces(Tensor rgb255, int inputSize = 416, double scoreThreshold = 0.5)
    {
        ArgumentNullException.ThrowIfNull(rgb255);
        using var scope = NewDisposeScope();
        var img = rgb255.dim() == 3 ? rgb255.unsqueeze(0) : rgb255;
        if (img.dim() != 4 || img.shape[0] != 1 || img.shape[1] != 3)
            throw new ArgumentException($"LocateFaces expects one RGB image [3, H, W] or [1, 3, H, W] in 0..255, got [{string.Join(", ", rgb255.shape)}].", nameof(rgb255));
        if (inputSize < 32 || inputSize % 32 != 0)
            throw new ArgumentException($"inputSize must be a positive multiple of 32, got {inputSize}.", nameof(inputSize));
        int h = (int)img.shape[2], w = (int)img.shape[3];
        Tensor raw;
        using (no_grad())
        {
            var input = TfOps.ToNetInput(img.detach(), inputSize, false, FaceApiMeans.TinyFaceDetector);
            raw = forward(input);
        }
        var (rw, rh) = ReshapedDimensions(w, h, inputSize);
        var cands = DecodeCandidates(raw, rw, rh, scoreThreshold);
        var keep = NonMaxSuppression(cands, inputSize);
        return keep.Select(i => cands[i])
            .Select(c => new FaceDetection(c.Score, c.X * w, c.Y * h, c.Width * w, c.Height * h, w, h))
            .ToList();
    }
}
