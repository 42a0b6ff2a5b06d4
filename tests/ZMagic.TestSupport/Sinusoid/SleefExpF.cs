namespace ZMagic.TestSupport;

/// <summary>
/// Single-precision exp with the exact rounding of SLEEF's <c>expf_u10</c> (the vectorised float32 exp PyTorch's CPU kernels use on
/// AVX2/AVX-512). The reference timestep embeddings were computed with it; a correctly rounded exp differs by one ulp for a few
/// frequencies, which shifts <c>sin(t f)</c> by up to 1e-5 at t near 1000.
/// </summary>
/// <remarks>An independent C# implementation of the published algorithm (Cody-Waite reduction, degree-6 polynomial, FMA).</remarks>
public static class SleefExpF
{
    private const float RLn2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
    private const float L2U = 0.693145751953125f;
    private const float L2L = 1.428606765330187045e-06f;

    public static float Exp(float d)
    {
        float qf = MathF.Round(d * RLn2, MidpointRounding.ToEven);
        int q = (int)qf;
        float s = MathF.FusedMultiplyAdd(qf, -L2U, d);
        s = MathF.FusedMultiplyAdd(qf, -L2L, s);
        float u = 0.000198527617612853646278381f;
        u = MathF.FusedMultiplyAdd(u, s, 0.00139304355252534151077271f);
        u = MathF.FusedMultiplyAdd(u, s, 0.00833336077630519866943359f);
        u = MathF.FusedMultiplyAdd(u, s, 0.0416664853692054748535156f);
        u = MathF.FusedMultiplyAdd(u, s, 0.166666671633720397949219f);
        u = MathF.FusedMultiplyAdd(u, s, 0.5f);
        u = 1.0f + MathF.FusedMultiplyAdd(s * s, u, s);
        u = LdExp2(u, q);
        if (d < -104f) u = 0f;
        if (d > 100f) u = float.PositiveInfinity;
        return u;
    }

    private static float LdExp2(float d, int e)
    {
        int h = e >> 1;
        return d * Pow2(h) * Pow2(e - h);
    }

    private static float Pow2(int e) => BitConverter.Int32BitsToSingle((e + 127) << 23);
}
