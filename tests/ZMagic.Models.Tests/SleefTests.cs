using ZMagic.TestSupport;

namespace ZMagic.Models.Tests;

/// <summary>The float32 SLEEF ports in ZMagic.TestSupport that reproduce the reference CPU sinusoid.</summary>
public class SleefTests
{
    [Fact]
    public void Exp_is_within_one_ulp_of_the_correctly_rounded_value()
    {
        for (float x = -20f; x < 20f; x += 0.0137f)
        {
            float mine = SleefExpF.Exp(x), exact = (float)Math.Exp(x);
            int ulps = Math.Abs(BitConverter.SingleToInt32Bits(mine) - BitConverter.SingleToInt32Bits(exact));
            Assert.True(ulps <= 1, $"exp({x:R}) = {mine:R}, correctly rounded {exact:R}");
        }
    }

    [Fact]
    public void Sin_and_cos_are_within_one_ulp_on_both_reduction_paths()
    {
        // 16 values per batch so that both lane groups run vectorised: one group small (fast path), one with |x| >= 125.
        var xs = new float[1600];
        var rng = new Random(7);
        for (int i = 0; i < xs.Length; i++)
            xs[i] = (i / 8) % 2 == 0 ? (float)(rng.NextDouble() * 250 - 125) * 0.99f : (float)(rng.NextDouble() * 2000 - 1000);
        var s = SleefTrigF.Sin(xs);
        var c = SleefTrigF.Cos(xs);
        for (int i = 0; i < xs.Length; i++)
        {
            Assert.True(Math.Abs(s[i] - Math.Sin(xs[i])) <= 1.2e-7, $"sin({xs[i]:R}) = {s[i]:R}, exact {Math.Sin(xs[i]):R}");
            Assert.True(Math.Abs(c[i] - Math.Cos(xs[i])) <= 1.2e-7, $"cos({xs[i]:R}) = {c[i]:R}, exact {Math.Cos(xs[i]):R}");
        }
    }
}
