using static TorchSharp.torch;

namespace ZMagic.TestSupport;

/// <summary>
/// Host-side references for the timestep sinusoids of ZMagic.Models (which run as torch ops on the timesteps' device).
/// <list type="bullet">
/// <item><see cref="PyTorchCpuFloat32"/>: the float32 values PyTorch's AVX2 CPU kernels give, bit for bit (SLEEF expf_u10 /
/// sinf_u1 / cosf_u1 with PyTorch's lane grouping); the golden data were generated that way.</item>
/// <item><see cref="Float64"/>: the same float32 frequencies and float32 arguments <c>t * f</c>, then sin and cos in float64: the
/// exact value of the reference's float32 formula up to the final rounding, against which any device's kernels are bounded.</item>
/// </list>
/// Frequencies follow each reference's float32 steps: <see cref="DdpmFrequencies"/> (ermongroup DDPM) and
/// <see cref="AdmFrequencies"/> (guided-diffusion, ldm and diffusers), with PyTorch's CPU exp rounding.
/// </summary>
public static class ReferenceSinusoid
{
    /// <summary>
    /// <c>exp(arange(half, float32) * float32(-(ln(10000) / (half - 1))))</c> as PyTorch's AVX2 CPU kernels compute it: float32
    /// product, SLEEF exp over whole pairs of 8-lane vectors, std::exp for the tail.
    /// </summary>
    public static float[] DdpmFrequencies(int half)
    {
        float minusStep = (float)(-(Math.Log(10000) / (half - 1)));
        return CpuExp(half, k => k * minusStep);
    }

    /// <summary>
    /// <c>exp(float32(-ln(max_period)) * arange(half, float32) / float32(half - shift))</c> as PyTorch's AVX2 CPU kernels compute
    /// it (float32 product, float32 quotient, SLEEF exp rounding).
    /// </summary>
    public static float[] AdmFrequencies(int half, double maxPeriod = 10000, double freqShift = 0)
    {
        float minusLog = (float)-Math.Log(maxPeriod), divisor = (float)(half - freqShift);
        return CpuExp(half, k => k * minusLog / divisor);
    }

    private static float[] CpuExp(int n, Func<int, float> exponent)
    {
        int vecEnd = n / (2 * SleefTrigF.Lanes) * (2 * SleefTrigF.Lanes); // the scalar tail uses std::exp
        var f = new float[n];
        for (int k = 0; k < n; k++) f[k] = k < vecEnd ? SleefExpF.Exp(exponent(k)) : (float)Math.Exp(exponent(k));
        return f;
    }

    /// <summary>The float32 arguments <c>t[:, None] * freqs[None]</c> [B * half], row-major.</summary>
    public static float[] Arguments(ReadOnlySpan<float> t, ReadOnlySpan<float> freqs)
    {
        var args = new float[t.Length * freqs.Length];
        for (int i = 0; i < t.Length; i++)
            for (int k = 0; k < freqs.Length; k++) args[i * freqs.Length + k] = t[i] * freqs[k];
        return args;
    }

    /// <summary>
    /// The float32 embedding [B, dim] exactly as PyTorch's AVX2 CPU kernels round it: <c>cat(cos, sin)</c> when
    /// <paramref name="cosFirst"/>, else <c>cat(sin, cos)</c>; a zero column when <paramref name="dim"/> is odd.
    /// </summary>
    public static Tensor PyTorchCpuFloat32(ReadOnlySpan<float> t, float[] freqs, bool cosFirst, int dim)
    {
        var args = Arguments(t, freqs);
        return Assemble(t.Length, freqs.Length, dim, SleefTrigF.Sin(args), SleefTrigF.Cos(args), cosFirst, ScalarType.Float32);
    }

    /// <summary>
    /// The float64 embedding [B, dim] of the same float32 arguments: <c>Math.Sin</c>/<c>Math.Cos</c> of <c>float32(t * f)</c>.
    /// </summary>
    public static Tensor Float64(ReadOnlySpan<float> t, float[] freqs, bool cosFirst, int dim)
    {
        var args = Arguments(t, freqs);
        var sin = new double[args.Length];
        var cos = new double[args.Length];
        for (int i = 0; i < args.Length; i++) { sin[i] = Math.Sin(args[i]); cos[i] = Math.Cos(args[i]); }
        return Assemble(t.Length, freqs.Length, dim, sin, cos, cosFirst, ScalarType.Float64);
    }

    private static Tensor Assemble<T>(int b, int half, int dim, T[] sin, T[] cos, bool cosFirst, ScalarType dtype) where T : unmanaged
    {
        var emb = new T[b * dim];
        var (first, second) = cosFirst ? (cos, sin) : (sin, cos);
        for (int i = 0; i < b; i++)
        {
            Array.Copy(first, i * half, emb, i * dim, half);
            Array.Copy(second, i * half, emb, i * dim + half, half);
        }
        var flat = typeof(T) == typeof(float) ? tensor((float[])(object)emb) : tensor((double[])(object)emb);
        return flat.reshape(b, dim).to(dtype);
    }
}
