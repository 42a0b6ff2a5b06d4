using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Models.Nn;

/// <summary>
/// The sinusoidal timestep embeddings of the three reference code bases, as torch ops on the timesteps' device: no copy to
/// the host, no synchronisation with an accelerator. Each keeps its reference's float32 formula step for step (the product and
/// quotient rounded to float32 in the order the reference writes them), so the result differs from the reference only where the
/// device's float32 exp/sin/cos round differently (at most an ulp or two of the value and of the frequencies; the tests state
/// the bound against a float64 evaluation).
/// </summary>
internal static class Sinusoid
{
    /// <summary>
    /// ermongroup DDPM <c>get_timestep_embedding</c>: <c>f = exp(arange(half, float32) * -(ln(10000) / (half - 1)))</c>,
    /// <c>cat(sin(t f), cos(t f))</c>, one zero column when <paramref name="dim"/> is odd.
    /// </summary>
    public static Tensor Ddpm(Tensor t, int dim)
    {
        int half = dim / 2;
        using var scope = torch.NewDisposeScope();
        var freqs = torch.arange(half, ScalarType.Float32, t.device).mul_(-(Math.Log(10000) / (half - 1))).exp_();
        return Embed(t, freqs, cosFirst: false, dim).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// guided-diffusion <c>timestep_embedding</c> (also CompVis ldm's and diffusers' <c>get_timestep_embedding</c> with shift
    /// <paramref name="freqShift"/>): <c>f = exp(-ln(max_period) * arange(half, float32) / (half - shift))</c>,
    /// <c>cat(cos(t f), sin(t f))</c> when <paramref name="cosFirst"/> (guided-diffusion, ldm, diffusers' flip_sin_to_cos) else
    /// <c>cat(sin, cos)</c>; one zero column when <paramref name="dim"/> is odd.
    /// </summary>
    public static Tensor Adm(Tensor t, int dim, double maxPeriod, bool cosFirst = true, double freqShift = 0)
    {
        int half = dim / 2;
        using var scope = torch.NewDisposeScope();
        var freqs = torch.arange(half, ScalarType.Float32, t.device).mul_(-Math.Log(maxPeriod)).div_(half - freqShift).exp_();
        return Embed(t, freqs, cosFirst, dim).MoveToOuterDisposeScope();
    }

    // args = t.float()[:, None] * freqs[None] in float32, as all three references write it.
    private static Tensor Embed(Tensor t, Tensor freqs, bool cosFirst, int dim)
    {
        var args = t.to(ScalarType.Float32).unsqueeze(1) * freqs.unsqueeze(0);
        var emb = cosFirst ? torch.cat([args.cos(), args.sin()], 1) : torch.cat([args.sin(), args.cos()], 1);
        return dim % 2 == 1 ? nn.functional.pad(emb, [0, 1]) : emb;
    }
}
