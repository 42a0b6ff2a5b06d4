using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.IO;

/// <summary>Moves raw little-endian tensor bytes between streams and tensor memory in bounded chunks (no whole-file buffers).</summary>
internal static class TensorBytes
{
    private const long ChunkBytes = 64L << 20;

    /// <summary>Fills a new contiguous CPU tensor of <paramref name="shape"/> and <paramref name="dtype"/> from the stream.</summary>
    internal static Tensor Read(Stream stream, long[] shape, ScalarType dtype)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Big-endian hosts are not supported.");
        var t = torch.empty(shape, dtype);
        try
        {
            long numel = t.numel();
            if (numel == 0) return t;
            using var flat = t.view(-1);
            long chunk = Math.Max(1, ChunkBytes / t.ElementSize);
            for (long start = 0; start < numel; start += chunk)
            {
                using var part = flat.narrow(0, start, Math.Min(chunk, numel - start));
                stream.ReadExactly(part.bytes);
            }
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>Writes a tensor's bytes (CPU, contiguous) to the stream.</summary>
    internal static void Write(Stream stream, Tensor t)
    {
        using var c = t.detach().cpu().contiguous();
        long numel = c.numel();
        if (numel == 0) return;
        using var flat = c.view(-1);
        long chunk = Math.Max(1, ChunkBytes / c.ElementSize);
        for (long start = 0; start < numel; start += chunk)
        {
            using var part = flat.narrow(0, start, Math.Min(chunk, numel - start));
            stream.Write(part.bytes);
        }
    }
}
