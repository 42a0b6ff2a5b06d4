namespace ZMagic.Encoders.Face;

/// <summary>
/// An axis-aligned face crop in pixel coordinates, used as <c>image[top:bottom, left:right]</c> (bottom and right
/// exclusive). A face-api detection box (<c>ZMagic.Encoders.FaceApi.FaceBox</c>, same four fields) converts with
/// <c>new FaceCropBox(b.Top, b.Bottom, b.Left, b.Right)</c>.
/// </summary>
/// <param name="Top">First row.</param>
/// <param name="Bottom">One past the last row.</param>
/// <param name="Left">First column.</param>
/// <param name="Right">One past the last column.</param>
public sealed record FaceCropBox(int Top, int Bottom, int Left, int Right)
{
    /// <summary>Height in pixels.</summary>
    public int Height => Bottom - Top;

    /// <summary>Width in pixels.</summary>
    public int Width => Right - Left;

    /// <summary>
    /// FreeDoM's landmark crop from a detector box [x1, y1, x2, y2] (<c>FaceLandMarkTool.__init__</c>):
    /// <c>w = x2 - x1 + 1</c>, <c>h = y2 - y1 + 1</c>, <c>size = int(min(w, h) * 1.2)</c>,
    /// <c>cx = x1 + w // 2</c>, <c>cy = y1 + h // 2</c>, <c>left = int(cx - size // 2)</c>, <c>right = left + size</c>,
    /// and the same for rows (Python's <c>//</c> on floats is floor; <c>int</c> truncates toward zero).
    /// </summary>
    public static FaceCropBox FromDetection(double x1, double y1, double x2, double y2)
    {
        if (!(x2 > x1) || !(y2 > y1) || !double.IsFinite(x1 + y1 + x2 + y2))
            throw new ArgumentException($"Detection box [{x1}, {y1}, {x2}, {y2}] must have x2 > x1 and y2 > y1.");
        double w = x2 - x1 + 1, h = y2 - y1 + 1;
        int size = (int)Math.Truncate(Math.Min(w, h) * 1.2);
        double cx = x1 + Math.Floor(w / 2), cy = y1 + Math.Floor(h / 2);
        double l = cx - Math.Floor(size / 2.0), t = cy - Math.Floor(size / 2.0);
        double r = l + size, b = t + size;
        return new FaceCropBox((int)Math.Truncate(t), (int)Math.Truncate(b), (int)Math.Truncate(l), (int)Math.Truncate(r));
    }

    /// <summary>Throws unless the box is non-empty and lies inside an image of <paramref name="height"/> x <paramref name="width"/>.</summary>
    public void Validate(long height, long width, string what)
    {
        if (Height < 1 || Width < 1 || Top < 0 || Left < 0 || Bottom > height || Right > width)
            throw new ArgumentException($"{what}: crop box {this} is empty or does not fit an image of {height}x{width} (HxW).");
    }

    /// <inheritdoc />
    public override string ToString() => $"[top {Top}, bottom {Bottom}, left {Left}, right {Right}]";
}
