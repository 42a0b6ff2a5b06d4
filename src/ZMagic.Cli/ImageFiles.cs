using SkiaSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Cli;

/// <summary>PNG reading and writing (SkiaSharp); every write goes to a temp file and is renamed, so no partial PNG is left.</summary>
public static class ImageFiles
{
    /// <summary>
    /// Reads an image file as a tensor [1, C, size, size] in [-1, 1], resized (bilinear) to <paramref name="size"/> and
    /// converted to grayscale when <paramref name="channels"/> is 1.
    /// </summary>
    /// <exception cref="InputException">The file is missing or not a decodable image.</exception>
    public static Tensor Read(string path, int channels, int size)
    {
        if (!File.Exists(path)) throw new InputException($"Image file '{path}' does not exist.");
        SKBitmap? decoded;
        try
        {
            decoded = SKBitmap.Decode(path);
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            throw new InputException($"Image file '{path}' could not be read: {e.Message}", e);
        }
        if (decoded is null) throw new InputException($"Image file '{path}' is not a decodable image (PNG, JPEG, BMP, GIF, WebP).");
        using var src = decoded;
        using var rgba = src.Copy(SKColorType.Rgba8888) ?? throw new InputException($"Image file '{path}' could not be converted to RGBA.");
        using var resized = rgba.Width == size && rgba.Height == size ? rgba.Copy() : rgba.Resize(new SKImageInfo(size, size, SKColorType.Rgba8888, SKAlphaType.Unpremul), new SKSamplingOptions(SKFilterMode.Linear));
        var bytes = resized.Bytes;
        var data = new float[channels * size * size];
        for (int i = 0; i < size * size; i++)
        {
            float r = bytes[4 * i], g = bytes[4 * i + 1], b = bytes[4 * i + 2];
            if (channels == 1) data[i] = (0.299f * r + 0.587f * g + 0.114f * b) / 127.5f - 1f;
            else
            {
                data[i] = r / 127.5f - 1f;
                data[size * size + i] = g / 127.5f - 1f;
                data[2 * size * size + i] = b / 127.5f - 1f;
            }
        }
        return torch.tensor(data, new long[] { 1, channels, size, size });
    }

    /// <summary>Converts images [B, C, H, W] in [-1, 1] into one grid bitmap (C = 1 or 3), <paramref name="columns"/> per row.</summary>
    public static SKBitmap Grid(Tensor images, int columns, int scale = 1, int gap = 2)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || (images.shape[1] != 1 && images.shape[1] != 3))
            throw new ArgumentException($"Expected images [B, 1|3, H, W]; got [{string.Join(", ", images.shape)}].", nameof(images));
        int b = (int)images.shape[0], c = (int)images.shape[1], h = (int)images.shape[2], w = (int)images.shape[3];
        columns = Math.Max(1, Math.Min(columns, b));
        int rows = (b + columns - 1) / columns;
        int cw = w * scale, chh = h * scale;
        var bmp = new SKBitmap(new SKImageInfo(columns * cw + (columns + 1) * gap, rows * chh + (rows + 1) * gap, SKColorType.Rgba8888, SKAlphaType.Opaque));
        bmp.Erase(new SKColor(128, 128, 128));
        using var cpu = ((images.detach().to(ScalarType.Float32, torch.CPU).clamp(-1, 1) + 1) * 127.5).round().to(ScalarType.Byte).contiguous();
        var px = cpu.data<byte>().ToArray();
        for (int n = 0; n < b; n++)
        {
            int ox = gap + (n % columns) * (cw + gap), oy = gap + (n / columns) * (chh + gap);
            for (int y = 0; y < chh; y++)
                for (int x = 0; x < cw; x++)
                {
                    int sy = y / scale, sx = x / scale;
                    byte r, g, bl;
                    if (c == 1) r = g = bl = px[((n * h) + sy) * w + sx];
                    else
                    {
                        r = px[((n * 3 + 0) * h + sy) * w + sx];
                        g = px[((n * 3 + 1) * h + sy) * w + sx];
                        bl = px[((n * 3 + 2) * h + sy) * w + sx];
                    }
                    bmp.SetPixel(ox + x, oy + y, new SKColor(r, g, bl));
                }
        }
        return bmp;
    }

    /// <summary>Encodes a bitmap as PNG to <paramref name="path"/> through a temp file and a rename.</summary>
    public static void WritePng(SKBitmap bitmap, string path)
    {
        ArgumentNullException.ThrowIfNull(bitmap);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100) ?? throw new IOException($"PNG encoding failed for '{path}'.");
        AtomicFile.Write(path, s => data.SaveTo(s));
    }

    /// <summary>Writes images [B, C, H, W] in [-1, 1] as a PNG grid.</summary>
    public static void WriteGrid(Tensor images, string path, int columns, int scale = 1, int gap = 2)
    {
        using var bmp = Grid(images, columns, scale, gap);
        WritePng(bmp, path);
    }
}

/// <summary>Writes files through a temp file in the same folder and a rename, so readers never see a partial file.</summary>
public static class AtomicFile
{
    /// <summary>Writes with <paramref name="write"/> then renames into place; the temp file is removed on failure.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp");
        try
        {
            using (var s = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                write(s);
                s.Flush(true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>Writes text atomically.</summary>
    public static void WriteText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true); w.Write(text); });
}
