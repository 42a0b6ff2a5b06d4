using SkiaSharp;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Guidance.Imaging;
using static TorchSharp.torch;

namespace ZMagic.Cli;

/// <summary>
/// The CLI's image input and output, on top of the library's hardened reader and atomic writer
/// (<see cref="ImageFiles"/>): PNG and JPEG only, sizes checked from the header before decoding, truncation detected,
/// only regular files read; every output goes to a temporary file and is renamed into place.
/// </summary>
public static class CliImages
{
    /// <summary>
    /// Largest reference image the CLI decodes (16.8 megapixels, e.g. 4096x4096): references are resized to the model's
    /// size anyway, and this keeps decoding a reference under about 400 MB.
    /// </summary>
    public const long MaxReferencePixels = 4096L * 4096;

    /// <summary>
    /// Reads a reference image as a tensor [1, C, size, size] in [-1, 1], resized (bilinear) to <paramref name="size"/>
    /// and converted to grey (ITU-R 601 luma) when <paramref name="channels"/> is 1.
    /// </summary>
    /// <param name="path">The image file.</param>
    /// <param name="what">The flag or setting that named it (for messages), e.g. <c>--style</c>.</param>
    /// <param name="channels">1 or 3.</param>
    /// <param name="size">Side of the result.</param>
    /// <exception cref="InputException">Missing, not a regular file, not a PNG/JPEG, corrupt, truncated or too large.</exception>
    public static Tensor ReadReference(string path, string what, int channels, int size)
    {
        RgbImage image;
        try
        {
            image = ImageFiles.Load(path, MaxReferencePixels);
        }
        catch (FileNotFoundException)
        {
            throw new InputException($"{what}: image file '{path}' does not exist.");
        }
        catch (ImageDecodeException e)
        {
            throw new InputException($"{what}: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"{what}: image file '{path}' could not be read: {e.Message}", e);
        }
        using var scope = torch.NewDisposeScope();
        var t = image.ToTensor();
        if (t.shape[2] != size || t.shape[3] != size)
            t = torch.nn.functional.interpolate(t, new long[] { size, size }, mode: InterpolationMode.Bilinear, align_corners: false);
        if (channels == 1)
            t = (0.299f * t[.., 0..1] + 0.587f * t[.., 1..2] + 0.114f * t[.., 2..3]);
        return t.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Arranges images [B, C, H, W] in [-1, 1] (C = 1 or 3) into one grid, <paramref name="columns"/> per row.</summary>
    public static RgbImage Grid(Tensor images, int columns, int scale = 1, int gap = 2)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || (images.shape[1] != 1 && images.shape[1] != 3))
            throw new ArgumentException($"Expected images [B, 1|3, H, W]; got [{string.Join(", ", images.shape)}].", nameof(images));
        int b = (int)images.shape[0], c = (int)images.shape[1], h = (int)images.shape[2], w = (int)images.shape[3];
        columns = Math.Max(1, Math.Min(columns, b));
        int rows = (b + columns - 1) / columns;
        int cw = w * scale, chh = h * scale;
        int width = columns * cw + (columns + 1) * gap, height = rows * chh + (rows + 1) * gap;
        var rgb = new byte[3L * width * height];
        Array.Fill(rgb, (byte)128);
        using var cpu = ((images.detach().to(ScalarType.Float32, torch.CPU).clamp(-1, 1) + 1) * 127.5).round().to(ScalarType.Byte).contiguous();
        var px = cpu.data<byte>().ToArray();
        for (int n = 0; n < b; n++)
        {
            int ox = gap + (n % columns) * (cw + gap), oy = gap + (n / columns) * (chh + gap);
            for (int y = 0; y < chh; y++)
                for (int x = 0; x < cw; x++)
                {
                    int sy = y / scale, sx = x / scale;
                    long o = 3L * ((long)(oy + y) * width + ox + x);
                    for (int k = 0; k < 3; k++)
                        rgb[o + k] = c == 1 ? px[((n * h) + sy) * w + sx] : px[((n * 3 + k) * h + sy) * w + sx];
                }
        }
        return new RgbImage(width, height, rgb);
    }

    /// <summary>Writes images [B, C, H, W] in [-1, 1] as a PNG grid, atomically.</summary>
    public static void WriteGrid(Tensor images, string path, int columns, int scale = 1, int gap = 2, CancellationToken ct = default) =>
        ImageFiles.SavePng(path, Grid(images, columns, scale, gap), ct);

    /// <summary>Encodes a bitmap (plots) as PNG and writes it atomically.</summary>
    public static void WritePng(SKBitmap bitmap, string path, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100) ?? throw new IOException($"PNG encoding failed for '{path}'.");
        ImageFiles.WriteAtomic(path, s => data.SaveTo(s), ct);
    }

    /// <summary>Writes UTF-8 text atomically.</summary>
    public static void WriteText(string path, string text, CancellationToken ct = default) =>
        ImageFiles.WriteAtomic(path, s => { using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true); w.Write(text); }, ct);
}
