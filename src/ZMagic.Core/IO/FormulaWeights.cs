using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.IO;

/// <summary>
/// The deterministic "weight formula (b)" of the golden data (shared/golden/README.md): every state-dict entry is
/// a function of its key and shape only, so a network can be given reproducible, full-rank, well-scaled weights
/// without a weight file.
/// </summary>
/// <remarks>
/// For key <c>k</c> with shape <c>S</c> and <c>n</c> elements: <c>s = FNV-1a-32(UTF-8 k) / 2^32</c>;
/// <c>v_i = sin(2π (fmix32(i) / 2^32 + s))</c> in float64; then by the first matching rule:
/// <c>num_batches_tracked</c> → 0; <c>running_var</c> → <c>1 + 0.5|v|</c>; <c>running_mean</c> → <c>0.1 v</c>;
/// rank 1 ending in <c>weight</c> → <c>1 + 0.1 v</c>; rank ≤ 1 otherwise → <c>0.1 v</c>;
/// rank ≥ 2 → <c>v · sqrt(2 / fan_in)</c> with <c>fan_in = n / S[0]</c>. The value is rounded to float32 at the end.
/// </remarks>
public static class FormulaWeights
{
    private const double TwoPi = 6.283185307179586;
    private const double TwoTo32 = 4294967296.0;

    /// <summary>FNV-1a 32-bit hash of the UTF-8 bytes of <paramref name="key"/>.</summary>
    public static uint Fnv1a32(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        uint h = 2166136261;
        foreach (byte b in Encoding.UTF8.GetBytes(key))
        {
            h ^= b;
            h = unchecked(h * 16777619);
        }
        return h;
    }

    /// <summary>The MurmurHash3 32-bit finaliser.</summary>
    public static uint Fmix32(uint x)
    {
        unchecked
        {
            x ^= x >> 16;
            x *= 0x85EBCA6B;
            x ^= x >> 13;
            x *= 0xC2B2AE35;
            x ^= x >> 16;
            return x;
        }
    }

    /// <summary>
    /// The formula values for <paramref name="key"/> and <paramref name="shape"/> as float32 numbers (row-major).
    /// A <c>num_batches_tracked</c> key gives zeros.
    /// </summary>
    public static float[] Values(string key, long[] shape)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(shape);
        long n = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"Shape [{string.Join(", ", shape)}] of '{key}' has a negative dimension.", nameof(shape));
            n = checked(n * d);
        }
        if (n > Array.MaxLength) throw new ArgumentException($"'{key}' has {n} elements, more than one array can hold.", nameof(shape));
        var result = new float[n];
        if (key.EndsWith("num_batches_tracked", StringComparison.Ordinal) || n == 0) return result;

        double s = Fnv1a32(key) / TwoTo32;
        int rank = shape.Length;
        Func<double, double> rule;
        if (key.EndsWith("running_var", StringComparison.Ordinal)) rule = v => 1.0 + 0.5 * Math.Abs(v);
        else if (key.EndsWith("running_mean", StringComparison.Ordinal)) rule = v => 0.1 * v;
        else if (rank == 1 && key.EndsWith("weight", StringComparison.Ordinal)) rule = v => 1.0 + 0.1 * v;
        else if (rank <= 1) rule = v => 0.1 * v;
        else
        {
            double fanIn = (double)(n / shape[0]);
            double scale = Math.Sqrt(2.0 / fanIn);
            rule = v => v * scale;
        }

        // Elements are independent, so large tensors are filled in parallel chunks.
        const int chunk = 1 << 16;
        int chunks = (int)((n + chunk - 1) / chunk);
        Parallel.For(0, chunks, c =>
        {
            long start = (long)c * chunk, end = Math.Min(n, start + chunk);
            for (long i = start; i < end; i++)
            {
                uint m = Fmix32(unchecked((uint)i));
                double v = Math.Sin(TwoPi * (m / TwoTo32 + s));
                result[i] = (float)rule(v);
            }
        });
        return result;
    }

    /// <summary>
    /// A CPU tensor of the formula values for <paramref name="key"/>, <paramref name="shape"/>, in
    /// <paramref name="dtype"/> (the values are rounded to float32 first, as the reference does; a
    /// <c>num_batches_tracked</c> key gives zeros of <paramref name="dtype"/>, normally int64).
    /// </summary>
    public static Tensor Generate(string key, long[] shape, ScalarType dtype)
    {
        var values = Values(key, shape);
        if (key.EndsWith("num_batches_tracked", StringComparison.Ordinal)) return torch.zeros(shape, dtype);
        using var f = torch.tensor(values, shape, ScalarType.Float32);
        return dtype == ScalarType.Float32 ? f.clone() : f.to(dtype);
    }

    /// <summary>
    /// Fills every entry of <paramref name="module"/>'s state dict (parameters and persistent buffers) with the
    /// formula values of its key, keeping each tensor's dtype and device. Runs under no_grad.
    /// </summary>
    public static void Apply(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var noGrad = torch.no_grad();
        foreach (var (key, tensor) in module.state_dict())
        {
            using var value = Generate(key, tensor.shape, tensor.dtype);
            tensor.copy_(value);
        }
    }
}
