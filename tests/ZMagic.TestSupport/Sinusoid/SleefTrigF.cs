using System.Numerics;

namespace ZMagic.TestSupport;

/// <summary>
/// Single-precision sin and cos with the exact rounding of SLEEF's <c>sinf_u1</c>/<c>cosf_u1</c> as PyTorch's AVX2 CPU kernels call
/// them (8 lanes at a time: when any lane of a group has |x| &gt;= 125 the whole group takes the Payne-Hanek reduction).
/// </summary>
/// <remarks>
/// Independent C# implementation of the published algorithms (double-float arithmetic with FMA). The 2/pi table is computed here
/// with exact integer arithmetic, the way SLEEF's generator defines it. Used only for the float32 timestep sinusoid, where
/// reference parity to the last bit matters: a one-ulp cos difference moves a float64 DDPM output by 1e-9.
/// </remarks>
public static class SleefTrigF
{
    private const float M1Pi = (float)0.318309886183790671537767526745028724;
    private const float PiA2 = 3.1414794921875f;
    private const float PiB2 = 0.00011315941810607910156f;
    private const float PiC2 = 1.9841872589410058936e-09f;
    private const float TrigRangeMax2 = 125.0f;
    private const float PiHiHalfNeg = (float)(3.1415927410125732422f * -0.5);
    private const float PiLoHalfNeg = (float)(-8.7422776573475857731e-08f * -0.5);

    /// <summary>SIMD width of the reference kernels (AVX2, 8 floats).</summary>
    public const int Lanes = 8;

    private static readonly Lazy<float[]> Table = new(BuildRempiTable);

    private readonly record struct F2(float X, float Y);

    /// <summary>sin of each element, grouped as the reference kernel groups lanes (see class remarks).</summary>
    public static float[] Sin(ReadOnlySpan<float> d) => Apply(d, sin: true);

    /// <summary>cos of each element, grouped as the reference kernel groups lanes.</summary>
    public static float[] Cos(ReadOnlySpan<float> d) => Apply(d, sin: false);

    private static float[] Apply(ReadOnlySpan<float> d, bool sin)
    {
        var r = new float[d.Length];
        // PyTorch's vectorised loop runs whole pairs of vectors; the remainder goes through the scalar std::sin/std::cos.
        int vecEnd = d.Length / (2 * Lanes) * (2 * Lanes);
        for (int g = 0; g < vecEnd; g += Lanes)
        {
            bool fast = true;
            for (int i = g; i < g + Lanes; i++) if (!(MathF.Abs(d[i]) < TrigRangeMax2)) fast = false;
            for (int i = g; i < g + Lanes; i++) r[i] = sin ? SinU1(d[i], fast) : CosU1(d[i], fast);
        }
        for (int i = vecEnd; i < d.Length; i++) r[i] = (float)(sin ? Math.Sin(d[i]) : Math.Cos(d[i]));
        return r;
    }

    private static float Fma(float a, float b, float c) => MathF.FusedMultiplyAdd(a, b, c);
    private static float Rint(float x) => MathF.Round(x, MidpointRounding.ToEven);
    private static float MulSign(float x, float y) =>
        BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(x) ^ (BitConverter.SingleToInt32Bits(y) & int.MinValue));

    // Double-float helpers (FMA variants).
    private static F2 Normalize(F2 t) { float s = t.X + t.Y; return new(s, t.X - s + t.Y); }
    private static F2 AddFF(float x, float y) { float s = x + y; return new(s, x - s + y); }
    private static F2 Add2FF(float x, float y) { float s = x + y, v = s - x; return new(s, (x - (s - v)) + (y - v)); }
    private static F2 AddF2F(F2 x, float y) { float s = x.X + y; return new(s, x.X - s + y + x.Y); }
    private static F2 Add2F2F(F2 x, float y)
    {
        float s = x.X + y, v = s - x.X;
        float t = (x.X - (s - v)) + (y - v);
        return new(s, t + x.Y);
    }
    private static F2 AddFF2(float x, F2 y) { float s = x + y.X; return new(s, x - s + y.X + y.Y); }
    private static F2 Add2F2F2(F2 x, F2 y)
    {
        float s = x.X + y.X, v = s - x.X;
        float t = (x.X - (s - v)) + (y.X - v);
        return new(s, t + (x.Y + y.Y));
    }
    private static F2 MulFF(float x, float y) { float s = x * y; return new(s, Fma(x, y, -s)); }
    private static F2 MulF2F(F2 x, float y) { float s = x.X * y; return new(s, Fma(x.Y, y, Fma(x.X, y, -s))); }
    private static F2 MulF2F2(F2 x, F2 y) { float s = x.X * y.X; return new(s, Fma(x.X, y.Y, Fma(x.Y, y.X, Fma(x.X, y.X, -s)))); }
    private static float MulToF(F2 x, F2 y) => Fma(x.X, y.X, Fma(x.Y, y.X, x.X * y.Y));
    private static F2 Squ(F2 x) { float s = x.X * x.X; return new(s, Fma(x.X + x.X, x.Y, Fma(x.X, x.X, -s))); }

    private static (float D, int I) RempiSub(float x)
    {
        float y = Rint(x * 4);
        int vi = (int)MathF.Truncate(y - Rint(x) * 4);
        return (x - y * 0.25f, vi);
    }

    private static (F2 Df, int I) Rempi(float a)
    {
        var tab = Table.Value;
        int ex = ((BitConverter.SingleToInt32Bits(a) >>> 23) & 0xff) - 0x7f;
        ex -= 25;
        int q = ex > 90 - 25 ? -64 : 0;
        a = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(a) + (q << 23));
        if (ex < 0) ex = 0;
        ex <<= 2;
        var x = MulFF(a, tab[ex]);
        var di = RempiSub(x.X);
        q = di.I;
        x = Normalize(new F2(di.D, x.Y));
        var y = MulFF(a, tab[ex + 1]);
        x = Add2F2F2(x, y);
        di = RempiSub(x.X);
        q += di.I;
        x = Normalize(new F2(di.D, x.Y));
        y = MulF2F(new F2(tab[ex + 2], tab[ex + 3]), a);
        x = Add2F2F2(x, y);
        x = Normalize(x);
        x = MulF2F2(x, new F2(3.1415927410125732422f * 2, -8.7422776573475857731e-08f * 2));
        if (MathF.Abs(a) < 0.7f) x = new F2(a, 0);
        return (x, q);
    }

    private static float Poly(F2 s0, int q, bool sin)
    {
        var t = s0;
        var s = Squ(s0);
        float u = 2.6083159809786593541503e-06f;
        u = Fma(u, s.X, -0.0001981069071916863322258f);
        u = Fma(u, s.X, 0.00833307858556509017944336f);
        var x = AddFF2(1, MulF2F2(AddFF(-0.166666597127914428710938f, u * s.X), s));
        u = MulToF(t, x);
        bool negate = sin ? (q & 1) == 1 : (q & 2) == 0;
        return negate ? -u : u;
    }

    private static float SinU1(float d, bool fast)
    {
        int q;
        F2 s;
        if (fast)
        {
            float u = Rint(d * M1Pi);
            q = (int)u;
            float v = Fma(u, -PiA2, d);
            s = Add2FF(v, u * -PiB2);
            s = AddF2F(s, u * -PiC2);
        }
        else
        {
            var (df, i) = Rempi(d);
            q = i & 3;
            q = q + q + (df.X > 0 ? 2 : 1);
            q >>= 2;
            bool o = (i & 1) == 1;
            var x = new F2(MulSign(PiHiHalfNeg, df.X), MulSign(PiLoHalfNeg, df.X));
            x = Add2F2F2(df, x);
            s = Normalize(o ? x : df);
            if (float.IsInfinity(d) || float.IsNaN(d)) s = new F2(float.NaN, s.Y);
        }
        float r = Poly(s, q, sin: true);
        return d == 0 && float.IsNegative(d) ? d : r;
    }

    private static float CosU1(float d, bool fast)
    {
        int q;
        F2 s;
        if (fast)
        {
            float dq = Fma(Rint(Fma(d, M1Pi, -0.5f)), 2, 1);
            q = (int)dq;
            s = Add2FF(d, dq * (-PiA2 * 0.5f));
            s = Add2F2F(s, dq * (-PiB2 * 0.5f));
            s = Add2F2F(s, dq * (-PiC2 * 0.5f));
        }
        else
        {
            var (df, i) = Rempi(d);
            q = i & 3;
            q = q + q + (df.X > 0 ? 8 : 7);
            q >>= 1;
            bool o = (i & 1) == 0;
            float y = df.X > 0 ? 0 : -1;
            var x = new F2(MulSign(PiHiHalfNeg, y), MulSign(PiLoHalfNeg, y));
            x = Add2F2F2(df, x);
            s = Normalize(o ? x : df);
            if (float.IsInfinity(d) || float.IsNaN(d)) s = new F2(float.NaN, s.Y);
        }
        return Poly(s, q, sin: false);
    }

    // ---- the 2/pi table: for i = 25..127, frac(2^(i-23) / (2 pi)) / 2^(i-23) (times 2^64 when i > 90), split into four floats
    // (the first three with their two lowest mantissa bits cleared), each taken as float(double(rest)) with round-to-nearest.

    private const int Scale = 2600; // fixed-point bits

    private static float[] BuildRempiTable()
    {
        var pi = PiFixed(Scale + 64);
        // rpi = 1 / (2 pi) at scale 2^Scale
        var rpi = (BigInteger.One << (2 * Scale + 64 - 1)) / pi;
        var table = new float[(128 - 25) * 4];
        for (int i = 25; i < 128; i++)
        {
            int m = i > 90 ? -64 : 0;
            int ex = i - 23;
            // frac(2^ex * rpi) / 2^ex, then times 2^-m: all at scale 2^Scale.
            var y = rpi << ex;                                   // scale Scale
            var frac = y & ((BigInteger.One << Scale) - 1);       // fractional part (y >= 0)
            var x = frac << (-m);                                 // times 2^-m (m <= 0)
            // divide by 2^ex: keep scale Scale + ex instead of shifting bits away
            int scale = Scale + ex;
            int row = (i - 25) * 4;
            for (int k = 0; k < 3; k++)
            {
                float f = (float)ToDouble(x, scale);
                f = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(f) & unchecked((int)0xfffffffc));
                table[row + k] = f;
                x -= FloatToFixed(f, scale);
            }
            table[row + 3] = (float)ToDouble(x, scale);
        }
        return table;
    }

    private static BigInteger PiFixed(int bits)
    {
        // Machin: pi = 16 atan(1/5) - 4 atan(1/239), with 32 guard bits.
        int g = bits + 32;
        var one = BigInteger.One << g;
        static BigInteger Atan(int inv, BigInteger one)
        {
            BigInteger x = one / inv, sum = x, inv2 = (BigInteger)inv * inv;
            int n = 1;
            while (!x.IsZero)
            {
                x /= inv2;
                n += 2;
                var term = x / n;
                sum += (n / 2) % 2 == 1 ? -term : term;
            }
            return sum;
        }
        var pi = 16 * Atan(5, one) - 4 * Atan(239, one);
        return pi >> 32;
    }

    /// <summary>Correctly rounded (nearest-even) double of v / 2^scale.</summary>
    private static double ToDouble(BigInteger v, int scale)
    {
        if (v.IsZero) return 0;
        int sign = v.Sign;
        var a = BigInteger.Abs(v);
        long len = (long)a.GetBitLength();
        int shift = (int)(len - 53);
        BigInteger m;
        if (shift > 0)
        {
            m = a >> shift;
            var rem = a - (m << shift);
            var half = BigInteger.One << (shift - 1);
            if (rem > half || (rem == half && !m.IsEven)) m += 1;
            if (m.GetBitLength() > 53) { m >>= 1; shift++; }
        }
        else
        {
            m = a << -shift;
        }
        double r = Math.ScaleB((double)(ulong)m, shift - scale);
        return sign < 0 ? -r : r;
    }

    private static BigInteger FloatToFixed(float f, int scale)
    {
        if (f == 0) return BigInteger.Zero;
        int bits = BitConverter.SingleToInt32Bits(f);
        int e = (bits >> 23) & 0xff;
        int mant = bits & 0x7fffff;
        if (e == 0) e = 1; else mant |= 0x800000;
        int exp = e - 127 - 23; // f = mant * 2^exp
        var v = (BigInteger)mant << (exp + scale);
        return bits < 0 ? -v : v;
    }
}
