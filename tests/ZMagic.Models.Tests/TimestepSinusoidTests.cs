using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Models.Adm;
using ZMagic.Models.Ddpm;
using ZMagic.Models.Nn;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>
/// The production timestep sinusoids (torch ops on the timesteps' device) against a float64 evaluation of each reference's
/// float32 formula (ZMagic.TestSupport.ReferenceSinusoid: the reference's float32 frequencies and float32 arguments t * f,
/// then sin/cos in float64).
/// </summary>
/// <remarks>
/// Stated bound, per element with argument a = float32(t * f): |emb - ref| &lt;= 2^-22 + 2^-22 |a|. The first term covers the
/// final float32 rounding of sin/cos (SLEEF u10, glibc, MKL and CUDA's non-fast-math kernels are within 2 ulp; an ulp of a
/// value below 1 is at most 2^-24). The second covers a frequency whose exp the device rounds one ulp (2^-23 relative) away
/// from the reference's, plus the then different rounding of t * f (half an ulp of a): one ulp of a frequency moves
/// sin(t f) by up to t f 2^-23, e.g. 6e-5 at t = 999 for the DDPM f_1 = 0.54.
/// </remarks>
public class TimestepSinusoidTests(ITestOutputHelper output)
{
    private static readonly double Two22 = Math.Pow(2, -22);

    /// <summary>0..999, then fractional timesteps (DDIM/ADM respacing and continuous-time samplers pass them).</summary>
    private static float[] Timesteps()
    {
        var t = Enumerable.Range(0, 1000).Select(i => (float)i).ToList();
        var rng = new Random(18);
        t.AddRange([0.5f, 0.25f, 1e-3f, 1.5f, 9.75f, 123.456f, 499.5f, 998.999f, 999.5f, 1000f]);
        for (int i = 0; i < 64; i++) t.Add((float)(rng.NextDouble() * 1000));
        return [.. t];
    }

    private void AssertWithinBound(Tensor actual, Tensor reference64, float[] args, int half, bool oddDim, string what)
    {
        Assert.Equal(ScalarType.Float32, actual.dtype);
        Assert.Equal(reference64.shape, actual.shape);
        long b = actual.shape[0], dim = actual.shape[1];
        var a = actual.cpu().to(ScalarType.Float64).data<double>().ToArray();
        var r = reference64.data<double>().ToArray();
        double worst = 0, worstRatio = 0;
        for (long i = 0; i < b; i++)
            for (long j = 0; j < dim; j++)
            {
                long idx = i * dim + j;
                if (oddDim && j == dim - 1) { Assert.Equal(0.0, a[idx]); continue; }
                double arg = Math.Abs(args[i * half + (j % half)]);
                double diff = Math.Abs(a[idx] - r[idx]), bound = Two22 + Two22 * arg;
                worst = Math.Max(worst, diff);
                worstRatio = Math.Max(worstRatio, diff / bound);
                Assert.True(diff <= bound, $"{what}: row {i} column {j} (arg {arg:R}) = {a[idx]:R}, float64 {r[idx]:R}, |diff| {diff:E3} > {bound:E3}");
            }
        output.WriteLine($"{what}: max |diff| {worst:E3}, at most {worstRatio:P1} of the stated bound ({b} x {dim})");
    }

    [Theory]
    [InlineData(32)]   // the tiny golden config
    [InlineData(128)]  // CelebA-HQ ch
    [InlineData(33)]   // odd: a zero column
    public void Ddpm_sinusoid_matches_the_float64_reference(int dim)
    {
        using var scope = torch.NewDisposeScope();
        var t = Timesteps();
        var freqs = ReferenceSinusoid.DdpmFrequencies(dim / 2);
        var emb = DdpmUNet.TimestepEmbedding(torch.tensor(t), dim);
        var reference = ReferenceSinusoid.Float64(t, freqs, cosFirst: false, dim);
        AssertWithinBound(emb, reference, ReferenceSinusoid.Arguments(t, freqs), dim / 2, dim % 2 == 1, $"DDPM dim {dim}");
    }

    [Theory]
    [InlineData(64, 10000.0)]
    [InlineData(256, 10000.0)] // ImageNet 256 model_channels
    [InlineData(65, 10000.0)]
    [InlineData(64, 1000.0)]
    public void Adm_sinusoid_matches_the_float64_reference(int dim, double maxPeriod)
    {
        using var scope = torch.NewDisposeScope();
        var t = Timesteps();
        var freqs = ReferenceSinusoid.AdmFrequencies(dim / 2, maxPeriod);
        var emb = AdmUNet.TimestepEmbedding(torch.tensor(t), dim, maxPeriod);
        var reference = ReferenceSinusoid.Float64(t, freqs, cosFirst: true, dim);
        AssertWithinBound(emb, reference, ReferenceSinusoid.Arguments(t, freqs), dim / 2, dim % 2 == 1, $"ADM dim {dim} max_period {maxPeriod}");
    }

    [Theory]
    [InlineData(320, true, 0)]  // SD 1.x/2.x: flip_sin_to_cos, freq_shift 0
    [InlineData(32, false, 1)]  // diffusers defaults of Timesteps elsewhere
    public void Diffusers_sinusoid_matches_the_float64_reference(int dim, bool flipSinToCos, int freqShift)
    {
        using var scope = torch.NewDisposeScope();
        var t = Timesteps();
        var freqs = ReferenceSinusoid.AdmFrequencies(dim / 2, 10000, freqShift);
        var emb = Sinusoid.Adm(torch.tensor(t), dim, 10000, flipSinToCos, freqShift);
        var reference = ReferenceSinusoid.Float64(t, freqs, cosFirst: flipSinToCos, dim);
        AssertWithinBound(emb, reference, ReferenceSinusoid.Arguments(t, freqs), dim / 2, false, $"diffusers dim {dim} flip {flipSinToCos} shift {freqShift}");
    }

    [Fact]
    public void Each_row_depends_only_on_its_own_timestep()
    {
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(new float[] { 999, 0, 500.5f, 17 });
        var batched = DdpmUNet.TimestepEmbedding(t, 128);
        var reversed = DdpmUNet.TimestepEmbedding(t.flip(0), 128).flip(0);
        TensorAssert.Close(batched, reversed, Two22 * 1000, 0, "DDPM rows of a reversed batch");
        for (int i = 0; i < 4; i++)
            TensorAssert.Close(batched[i], DdpmUNet.TimestepEmbedding(t[i..(i + 1)], 128)[0], Two22 * 1000, 0, $"DDPM row {i} alone");
    }

    [Fact]
    public void Timesteps_of_any_dtype_give_float32_on_their_device()
    {
        using var scope = torch.NewDisposeScope();
        var i64 = torch.tensor(new long[] { 10, 500 });
        var f64 = torch.tensor(new double[] { 10, 500 });
        Assert.Equal(ScalarType.Float32, DdpmUNet.TimestepEmbedding(i64, 32).dtype);
        Assert.Equal(ScalarType.Float32, AdmUNet.TimestepEmbedding(f64, 32).dtype);
        Assert.True(DdpmUNet.TimestepEmbedding(i64, 32).equal(DdpmUNet.TimestepEmbedding(f64, 32)).all().item<bool>());
    }

    /// <summary>
    /// The meta device has shapes and dtypes but no data: any copy to the host (<c>data&lt;T&gt;()</c>, <c>cpu()</c>, <c>item()</c>)
    /// throws there, so this passing shows the sinusoids are pure device ops.
    /// </summary>
    [Fact]
    public void Sinusoids_run_on_the_meta_device_without_touching_the_host()
    {
        using var scope = torch.NewDisposeScope();
        var meta = new Device(DeviceType.META);
        var t = torch.arange(5, ScalarType.Int64, meta);
        Assert.ThrowsAny<Exception>(() => t.cpu().data<long>().ToArray()); // the premise: meta data cannot be read
        foreach (var (name, emb, dim) in new[]
        {
            ("DDPM", DdpmUNet.TimestepEmbedding(t, 129), 129),
            ("ADM", AdmUNet.TimestepEmbedding(t, 256), 256),
            ("diffusers", Sinusoid.Adm(t, 320, 10000, cosFirst: true, freqShift: 0), 320),
        })
        {
            Assert.True(emb.device_type == DeviceType.META, $"{name}: on {emb.device}");
            Assert.Equal(new long[] { 5, dim }, emb.shape);
            Assert.Equal(ScalarType.Float32, emb.dtype);
        }
    }

    [Fact]
    public void The_reference_sinusoid_equals_the_retired_host_implementation_bit_for_bit()
    {
        // The host path the models used before (SLEEF ports, AVX2 lane grouping) now lives in ZMagic.TestSupport; the golden
        // temb_sinusoid_f32 pins it (DdpmGoldenTests). Here: the float64 reference and it differ by at most an ulp of sin/cos.
        var t = Timesteps();
        var freqs = ReferenceSinusoid.DdpmFrequencies(64);
        var f32 = ReferenceSinusoid.PyTorchCpuFloat32(t, freqs, cosFirst: false, 128);
        var f64 = ReferenceSinusoid.Float64(t, freqs, cosFirst: false, 128);
        TensorAssert.Close(f32, f64, Math.Pow(2, -23), 0, "SLEEF float32 vs float64 of the same arguments");
    }
}
