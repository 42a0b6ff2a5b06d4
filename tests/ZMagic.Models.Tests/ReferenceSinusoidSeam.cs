using TorchSharp;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>
/// Feeds a DDPM UNet the reference's own CPU sinusoid (PyTorch's SLEEF rounding, bit for bit, from ZMagic.TestSupport) in
/// place of its torch-op one. Only the float64 golden tests use it: their tolerances (1e-11 to 1e-10) are far below what one
/// float32 ulp of a sin/cos value does to a float64 output (about 2e-7 measured), so they check the UNet given the reference's
/// exact input. The float32 golden tests and TimestepSinusoidTests check the production sinusoid itself.
/// </summary>
internal static class ReferenceSinusoidSeam
{
    public static void UseReferenceCpuSinusoid(DdpmDenoiser denoiser) => ((DdpmUNet)denoiser.Module).SinusoidOverride = Ddpm;

    /// <summary>The reference <c>get_timestep_embedding(t, dim)</c> as PyTorch 1.13's AVX2 CPU kernels round it.</summary>
    public static Tensor Ddpm(Tensor t, int dim)
    {
        float[] tf;
        using (var tc = t.detach().to(ScalarType.Float32).cpu()) tf = tc.data<float>().ToArray();
        return ReferenceSinusoid.PyTorchCpuFloat32(tf, ReferenceSinusoid.DdpmFrequencies(dim / 2), cosFirst: false, dim).to(t.device);
    }
}
