using System.Buffers.Binary;
using CsCheck;

namespace ZMagic.TestSupport;

/// <summary>Byte-level mutations for the fuzz properties (same operators as the checkpoint fuzzers in Core.Tests).</summary>
public static class FuzzSupport
{
    /// <summary>Iterations per target: env ZMAGIC_FUZZ_ITERATIONS, else the short CI default.</summary>
    public static long Iterations(long ciDefault) =>
        long.TryParse(Environment.GetEnvironmentVariable("ZMAGIC_FUZZ_ITERATIONS"), out var n) && n > 0 ? n : ciDefault;

    public readonly record struct Mutation(int Kind, int Pos, int Value)
    {
        public override string ToString() => $"({Kind},{Pos},{Value})";
    }

    private static readonly long[] Interesting = { 0, 1, -1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, int.MaxValue, int.MinValue, uint.MaxValue, 16385, 100_000_001 };

    public static Gen<Mutation[]> Mutations(int maxOps) =>
        Gen.Select(Gen.Int[0, 7], Gen.Int, Gen.Int, (k, p, v) => new Mutation(k, p, v)).Array[1, maxOps];

    public static byte[] Apply(byte[] seed, Mutation[] ops)
    {
        var b = new List<byte>(seed);
        foreach (var m in ops)
        {
            if (b.Count == 0) b.Add((byte)m.Value);
            int pos = (int)((uint)m.Pos % (uint)b.Count);
            switch (m.Kind)
            {
                case 0: b[pos] = (byte)m.Value; break;
                case 1: b[pos] ^= (byte)(1 << (m.Value & 7)); break;
                case 2: b.RemoveRange(pos, b.Count - pos); break;
                case 3: b.Insert(pos, (byte)m.Value); break;
                case 4: b.RemoveRange(pos, Math.Min(b.Count - pos, 1 + (m.Value & 15))); break;
                case 5:
                    {
                        long v = Interesting[(uint)m.Value % (uint)Interesting.Length];
                        int width = (m.Value >> 8 & 3) switch { 0 => 1, 1 => 2, 2 => 4, _ => 8 };
                        var bytes = new byte[8];
                        // Image headers are big-endian (PNG IHDR, JPEG SOF): write both orders depending on a bit.
                        if ((m.Value >> 10 & 1) == 0) BinaryPrimitives.WriteInt64LittleEndian(bytes, v);
                        else { BinaryPrimitives.WriteInt64BigEndian(bytes, v); Array.Copy(bytes, 8 - width, bytes, 0, width); }
                        for (int i = 0; i < width && pos + i < b.Count; i++) b[pos + i] = bytes[i];
                        break;
                    }
                case 6:
                    {
                        int len = Math.Min(b.Count - pos, 1 + (m.Value & 63));
                        b.InsertRange(pos, b.GetRange(pos, len));
                        break;
                    }
                default:
                    b[pos] = (byte)"0123456789{}[]\",:-e."[(int)((uint)m.Value % 20)];
                    break;
            }
        }
        return b.ToArray();
    }
}
