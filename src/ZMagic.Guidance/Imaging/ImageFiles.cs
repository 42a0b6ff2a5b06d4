using SkiaSharp;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Imaging;

/// <summary>An image file could not be decoded: unknown or unsupported format, corrupt or truncated data, or too large.</summary>
public class ImageDecodeException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="source">The file or label of the data (may be null for in-memory data).</param>
    /// <param name="message">What is wrong.</param>
    /// <param name="inner">The underlying exception, if any.</param>
    public ImageDecodeException(string? source, string message, Exception? inner = null)
        : base(source is null ? message : $"{source}: {message}", inner)
    {
        SourceName = source;
    }

    /// <summary>The file or label of the data, when known.</summary>
    public string? SourceName { get; }
}

/// <summary>An 8-bit RGB image, row-major with interleaved channels (<c>[H, W, 3]</c>).</summary>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Pixels">Width * Height * 3 bytes, R G B per pixel, rows top to bottom.</param>
public sealed record RgbImage(int Width, int Height, byte[] Pixels)
{
    /// <summary>A float32 CPU tensor <c>[1, 3, H, W]</c> in [-1, 1] (<c>v / 127.5 - 1</c>).</summary>
    public Tensor ToTensor()
    {
        using var scope = torch.NewDisposeScope();
        using var hwc = torch.tensor(Pixels, new long[] { Height, Width, 3 });
        var t = (hwc.permute(2, 0, 1).unsqueeze(0).to(ScalarType.Float32) / 127.5f - 1f).contiguous();
        return t.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Quantises an image tensor in [-1, 1] (<c>[3, H, W]</c>, <c>[1, 3, H, W]</c>, or one channel <c>[1, H, W]</c> /
    /// <c>[1, 1, H, W]</c>, replicated to grey RGB) to 8 bits: clamp, <c>round((v + 1) * 127.5)</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The tensor has another shape, is not floating-point, or holds NaN.</exception>
    public static RgbImage FromTensor(Tensor image)
    {
        ArgumentNullException.ThrowIfNull(image);
        using var scope = torch.NewDisposeScope();
        var t = image.detach();
        if (t.dim() == 4)
        {
            if (t.shape[0] != 1) throw new ArgumentException($"Expected one image [1, C, H, W]; got shape [{string.Join(", ", t.shape)}].", nameof(image));
            t = t[0];
        }
        if (t.dim() != 3 || (t.shape[0] != 3 && t.shape[0] != 1) || t.shape[1] < 1 || t.shape[2] < 1)
            throw new ArgumentException($"Expected an image tensor [3, H, W] or [1, H, W]; got shape [{string.Join(", ", image.shape)}].", nameof(image));
        if (!torch.is_floating_point(t)) throw new ArgumentException($"Expected a floating-point image in [-1, 1]; got dtype {t.dtype}.", nameof(image));
        if (t.isnan().any().item<bool>()) throw new ArgumentException("The image tensor contains NaN.", nameof(image));
        if (t.shape[0] == 1) t = t.expand(3, -1, -1);
        var q = ((t.to(ScalarType.Float64).clamp(-1, 1) + 1) * 127.5).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous().cpu();
        return new RgbImage((int)t.shape[2], (int)t.shape[1], q.data<byte>().ToArray());
    }
}

/// <summary>
/// Safe PNG/JPEG reading and atomic PNG writing (SkiaSharp). Sizes are checked from the header before any pixel
/// buffer is allocated; undecodable data gives an <see cref="ImageDecodeException"/>; files are written to a
/// temporary file in the target folder and renamed into place, so a failed or cancelled write never leaves a partial
/// image under the target name.
/// </summary>
/// <remarks>The EXIF orientation is not applied; alpha is dropped (pixels are unpremultiplied first).</remarks>
public static class ImageFiles
{
    /// <summary>Largest accepted width or height, in pixels.</summary>
    public const int MaxSide = 16384;

    /// <summary>Largest accepted pixel count (100 megapixels; the RGBA decode buffer is then 400 MB).</summary>
    public const long MaxPixels = 100_000_000;

    /// <summary>Largest accepted encoded file size (256 MiB).</summary>
    public const long MaxFileBytes = 256L << 20;

    /// <summary>Width, height and format read from the header, without decoding pixels.</summary>
    /// <exception cref="ImageDecodeException">Not a PNG/JPEG, or the header is corrupt or declares a size over the limits.</exception>
    public static (int Width, int Height, string Format) ReadHeader(byte[] data, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        CheckSignature(data, source);
        using var skData = SKData.CreateCopy(data);
        using var codec = OpenCodec(skData, source);
        return (codec.Info.Width, codec.Info.Height, codec.EncodedFormat.ToString());
    }

    /// <summary>Decodes PNG or JPEG bytes to RGB.</summary>
    /// <param name="data">The encoded file.</param>
    /// <param name="source">File name or label used in error messages.</param>
    /// <exception cref="ImageDecodeException">Unsupported format, corrupt or truncated data, or a size over the limits.</exception>
    public static RgbImage Decode(byte[] data, string? source = null) => Decode(data, source, MaxPixels);

    private static RgbImage Decode(byte[] data, string? source, long maxPixels)
    {
        ArgumentNullException.ThrowIfNull(data);
        CheckSignature(data, source);
        using var skData = SKData.CreateCopy(data);
        using var codec = OpenCodec(skData, source, maxPixels);
        int w = codec.Info.Width, h = codec.Info.Height;
        var info = new SKImageInfo(w, h, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var result = codec.GetPixels(info, out byte[] rgba);
        if (result != SKCodecResult.Success)
            throw new ImageDecodeException(source, result == SKCodecResult.IncompleteInput
                ? $"the {codec.EncodedFormat} data is truncated ({w}x{h} image)."
                : $"the {codec.EncodedFormat} data is corrupt ({w}x{h} image; decoder said {result}).");
        if (rgba is null || rgba.LongLength != 4L * w * h)
            throw new ImageDecodeException(source, $"the decoder returned {rgba?.LongLength ?? 0} bytes for a {w}x{h} RGBA image.");
        var rgb = new byte[3L * w * h];
        for (long i = 0, j = 0; i < rgba.LongLength; i += 4, j += 3)
        {
            rgb[j] = rgba[i];
            rgb[j + 1] = rgba[i + 1];
            rgb[j + 2] = rgba[i + 2];
        }
        return new RgbImage(w, h, rgb);
    }

    /// <summary>Reads and decodes a PNG or JPEG file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotARegularFileException">The path is a folder, FIFO, device, socket or empty file.</exception>
    /// <exception cref="ImageDecodeException">The file is too large, of another format, corrupt or truncated.</exception>
    public static RgbImage Load(string path) => Load(path, MaxPixels);

    /// <summary>
    /// Reads and decodes a PNG or JPEG file whose header declares at most <paramref name="maxPixels"/> pixels (and at most
    /// <see cref="MaxPixels"/>): an application that only needs small images can refuse large ones before they are
    /// decoded. Only regular files are read, so a FIFO or device cannot block or feed endless data.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotARegularFileException">The path is a folder, FIFO, device, socket or empty file.</exception>
    /// <exception cref="ImageDecodeException">The file is too large, of another format, corrupt or truncated.</exception>
    public static RgbImage Load(string path, long maxPixels)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPixels, 1);
        byte[] data;
        using (var fs = RegularFile.OpenRead(path, "Image file"))
        {
            if (fs.Length > MaxFileBytes)
                throw new ImageDecodeException(path, $"the file has {fs.Length} bytes; at most {MaxFileBytes} are accepted.");
            data = new byte[fs.Length];
            fs.ReadExactly(data);
        }
        return Decode(data, path, maxPixels);
    }
    /// <summary>Encodes an image as PNG.</summary>
    public static byte[] EncodePng(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.Width < 1 || image.Height < 1 || image.Width > MaxSide || image.Height > MaxSide
            || (long)image.Width * image.Height > MaxPixels)
            throw new ArgumentException($"Cannot encode a {image.Width}x{image.Height} image (sides 1..{MaxSide}, at most {MaxPixels} pixels).", nameof(image));
        if (image.Pixels is null || image.Pixels.LongLength != 3L * image.Width * image.Height)
            throw new ArgumentException($"A {image.Width}x{image.Height} RGB image needs {3L * image.Width * image.Height} bytes; got {image.Pixels?.LongLength ?? 0}.", nameof(image));
        var info = new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var rgba = new byte[4L * image.Width * image.Height];
        for (long i = 0, j = 0; j < image.Pixels.LongLength; i += 4, j += 3)
        {
            rgba[i] = image.Pixels[j];
            rgba[i + 1] = image.Pixels[j + 1];
            rgba[i + 2] = image.Pixels[j + 2];
            rgba[i + 3] = 255;
        }
        using var bitmap = new SKBitmap();
        var handle = System.Runtime.InteropServices.GCHandle.Alloc(rgba, System.Runtime.InteropServices.GCHandleType.Pinned);
        try
        {
            if (!bitmap.InstallPixels(info, handle.AddrOfPinnedObject(), info.RowBytes))
                throw new InvalidOperationException("SkiaSharp refused the pixel buffer.");
            using var encoded = bitmap.Encode(SKEncodedImageFormat.Png, 100)
                ?? throw new InvalidOperationException("SkiaSharp failed to encode the PNG.");
            return encoded.ToArray();
        }
        finally
        {
            handle.Free();
        }
    }

    /// <summary>Writes <paramref name="image"/> as a PNG file atomically (see <see cref="WriteAtomic"/>).</summary>
    public static void SavePng(string path, RgbImage image, CancellationToken cancellationToken = default)
    {
        var bytes = EncodePng(image);
        WriteAtomic(path, s => s.Write(bytes), cancellationToken);
    }

    /// <summary>Writes an image tensor in [-1, 1] (see <see cref="RgbImage.FromTensor"/>) as a PNG file atomically.</summary>
    public static void SavePng(string path, Tensor image, CancellationToken cancellationToken = default) =>
        SavePng(path, RgbImage.FromTensor(image), cancellationToken);

    /// <summary>
    /// Writes a file atomically: <paramref name="write"/> fills a temporary file in the target's folder, which is
    /// flushed to disk and then renamed over <paramref name="path"/>. If <paramref name="write"/> throws or the token
    /// is cancelled, the temporary file is deleted and <paramref name="path"/> is left as it was (absent, or the
    /// previous complete file).
    /// </summary>
    public static void WriteAtomic(string path, Action<Stream> write, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        cancellationToken.ThrowIfCancellationRequested();
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(dir);
        string temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(fs);
                cancellationToken.ThrowIfCancellationRequested();
                fs.Flush(flushToDisk: true);
            }
            cancellationToken.ThrowIfCancellationRequested();
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private static void CheckSignature(byte[] data, string? source)
    {
        if (data.LongLength > MaxFileBytes)
            throw new ImageDecodeException(source, $"the data has {data.LongLength} bytes; at most {MaxFileBytes} are accepted.");
        if (data.Length == 0) throw new ImageDecodeException(source, "the data is empty.");
        if (!LooksLikePngOrJpeg(data))
            throw new ImageDecodeException(source, "not a PNG or JPEG file (unrecognised signature).");
        if (data[0] == 0x89) CheckPngChunks(data, source);
    }

    /// <summary>
    /// Walks the PNG chunk lengths up to IEND: a file cut short (after IHDR, inside IDAT) is refused as truncated
    /// here, whatever the codec would make of it.
    /// </summary>
    private static void CheckPngChunks(byte[] data, string? source)
    {
        long pos = 8;
        while (pos + 12 <= data.LongLength)
        {
            uint length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)pos));
            bool iend = data[pos + 4] == (byte)'I' && data[pos + 5] == (byte)'E' && data[pos + 6] == (byte)'N' && data[pos + 7] == (byte)'D';
            if (length > data.LongLength - pos - 12)
                throw new ImageDecodeException(source, $"the PNG data is truncated (a chunk at byte {pos} needs {length} bytes; {data.LongLength - pos - 12} are left).");
            if (iend) return;
            pos += 12 + length;
        }
        throw new ImageDecodeException(source, "the PNG data is truncated (it ends before its IEND chunk).");
    }

    /// <summary>Opens a codec on <paramref name="skData"/> (which must outlive it) and checks format and size.</summary>
    private static SKCodec OpenCodec(SKData skData, string? source, long maxPixels = MaxPixels)
    {
        var codec = SKCodec.Create(skData)
            ?? throw new ImageDecodeException(source, "the image header is corrupt or unsupported.");
        try
        {
            if (codec.EncodedFormat is not (SKEncodedImageFormat.Png or SKEncodedImageFormat.Jpeg))
                throw new ImageDecodeException(source, $"unsupported image format {codec.EncodedFormat} (PNG and JPEG are accepted).");
            int w = codec.Info.Width, h = codec.Info.Height;
            long limit = Math.Min(maxPixels, MaxPixels);
            if (w < 1 || h < 1 || w > MaxSide || h > MaxSide || (long)w * h > limit)
                throw new ImageDecodeException(source, $"the header declares a {w}x{h} image; sides must be 1..{MaxSide} and at most {limit} pixels.");
            return codec;
        }
        catch
        {
            codec.Dispose();
            throw;
        }
    }

    private static bool LooksLikePngOrJpeg(byte[] d) =>
        (d.Length >= 8 && d[0] == 0x89 && d[1] == 0x50 && d[2] == 0x4E && d[3] == 0x47 && d[4] == 0x0D && d[5] == 0x0A && d[6] == 0x1A && d[7] == 0x0A)
        || (d.Length >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF);
}
