using System.Globalization;
using ZMagic.Models.Ddpm;

namespace ZMagic.Cli;

/// <summary>
/// Estimates the memory of a request before anything is allocated, and refuses what cannot fit in this machine's
/// memory (the GC's view of it, which follows container limits). The estimates are deliberately rough upper figures
/// calibrated on the measurements in docs/performance.md; they exist to turn "libtorch aborts after 12 GB" into a
/// usage error that names the figure.
/// </summary>
public static class MemoryBudget
{
    /// <summary>Bytes of memory this process may use (physical memory or the container limit).</summary>
    public static long Available
    {
        get
        {
            if (Environment.GetEnvironmentVariable("ZMAGIC_MEMORY_LIMIT_MB") is { Length: > 0 } s
                && long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long mb) && mb > 0)
                return mb << 20;
            long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            return total > 0 ? total : 16L << 30;
        }
    }

    /// <summary>
    /// Stable Diffusion 1.x, one image of <paramref name="size"/> px: the weights, the UNet's attention scores over
    /// (size/8)^2 latent tokens (CFG batch 2, 8 heads, float32, scores + softmax + upcast), and the VAE decoder's
    /// activations: about 80 KB per output pixel when style/content energies need its backward pass (the guided 512 px
    /// step did not fit in 24 GB, docs/performance.md), about 4 KB per pixel for the final decode only.
    /// </summary>
    public static double StableDiffusionBytes(int size, bool guided, long weightBytes)
    {
        double tokens = Math.Pow(size / 8.0, 2);
        double attention = 2 * 8 * tokens * tokens * 4 * 3;
        double decoder = (guided ? 80_000.0 : 4_000.0) * size * size;
        return weightBytes + attention + decoder;
    }

    /// <summary>
    /// A guided step of a DDPM UNet for <paramref name="batch"/> items: every level's activations (channels x side^2,
    /// float32) about 22 times per resnet block, down and up (kept for the backward pass and the VJPs of Z-Magic), plus
    /// the weights. Calibrated on the CelebA-HQ 256 DDPM: about 6.6 GB per item against the 7-8 GB peak measured for
    /// one exact Z-Magic step at batch 1 (docs/performance.md).
    /// </summary>
    public static double DdpmBytes(DdpmUNetConfig c, int batch)
    {
        double perItem = 0;
        for (int level = 0; level < c.ChMult.Count; level++)
        {
            double side = c.Resolution / Math.Pow(2, level);
            perItem += c.Ch * c.ChMult[level] * side * side * (c.NumResBlocks + 1) * 2 * 22 * 4;
        }
        return batch * perItem + 4.0 * c.CountParameters();
    }

    /// <summary>Formats bytes as GiB (or MiB below 1 GiB).</summary>
    public static string Format(double bytes) => bytes >= 1 << 30
        ? string.Create(CultureInfo.InvariantCulture, $"{bytes / (1L << 30):0.#} GiB")
        : string.Create(CultureInfo.InvariantCulture, $"{bytes / (1 << 20):0.#} MiB");
}
