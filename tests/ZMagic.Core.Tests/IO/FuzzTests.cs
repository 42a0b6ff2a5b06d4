using System.Buffers.Binary;
using System.Collections.Concurrent;
using CsCheck;
using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

/// <summary>
/// Property-based fuzzing: random mutations of valid checkpoints must either load or throw
/// <see cref="CheckpointFormatException"/> (or a subclass) — never another exception type, a crash or a hang.
/// The CI run is short; set ZMAGIC_FUZZ_ITERATIONS (per target) for a longer run.
/// </summary>
public class FuzzTests
{
    private readonly ITestOutputHelper _out;

    public FuzzTests(ITestOutputHelper output) => _out = output;

    private static long Iterations(long ciDefault) =>
        long.TryParse(Environment.GetEnvironmentVariable("ZMAGIC_FUZZ_ITERATIONS"), out var n) && n > 0 ? n : ciDefault;

    /// <summary>One mutation: kind, position, value.</summary>
    public readonly record struct Mutation(int Kind, int Pos, int Value)
    {
        public override string ToString() => $"({Kind},{Pos},{Value})";
    }

    private static readonly long[] Interesting = { 0, 1, -1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 40, 100_000_001 };

    private static byte[] Apply(byte[] seed, Mutation[] ops)
    {
        var b = new List<byte>(seed);
        foreach (var m in ops)
        {
            if (b.Count == 0) b.Add((byte)m.Value);
            int pos = (int)((uint)m.Pos % (uint)b.Count);
            switch (m.Kind)
            {
                case 0: b[pos] = (byte)m.Value; break;                                   // overwrite a byte
                case 1: b[pos] ^= (byte)(1 << (m.Value & 7)); break;                     // flip a bit
                case 2: b.RemoveRange(pos, b.Count - pos); break;                        // truncate
                case 3: b.Insert(pos, (byte)m.Value); break;                             // insert a byte
                case 4: b.RemoveRange(pos, Math.Min(b.Count - pos, 1 + (m.Value & 15))); break; // delete a run
                case 5:                                                                   // write an interesting integer
                    {
                        long v = Interesting[(uint)m.Value % (uint)Interesting.Length];
                        int width = (m.Value >> 8 & 3) switch { 0 => 1, 1 => 2, 2 => 4, _ => 8 };
                        var bytes = new byte[8];
                        BinaryPrimitives.WriteInt64LittleEndian(bytes, v);
                        for (int i = 0; i < width && pos + i < b.Count; i++) b[pos + i] = bytes[i];
                        break;
                    }
                case 6:                                                                   // duplicate a slice
                    {
                        int len = Math.Min(b.Count - pos, 1 + (m.Value & 63));
                        b.InsertRange(pos, b.GetRange(pos, len));
                        break;
                    }
                default:                                                                  // replace with an ASCII digit/brace/quote
                    b[pos] = (byte)"0123456789{}[]\",:-e."[(int)((uint)m.Value % 20)];
                    break;
            }
        }
        return b.ToArray();
    }

    private static Gen<Mutation[]> Mutations(int maxOps) =>
        Gen.Select(Gen.Int[0, 7], Gen.Int, Gen.Int, (k, p, v) => new Mutation(k, p, v)).Array[1, maxOps];

    /// <summary>Runs a loader on an input; any exception other than CheckpointFormatException fails the property.</summary>
    private static readonly ConcurrentDictionary<string, int> Outcomes = new();

    private static void MustOnlyThrowFormatErrors(Func<Stream, object?> load, byte[] data, ConcurrentBag<string> failures, string label)
    {
        string outcome = "loaded";
        using var scope = torch.NewDisposeScope();
        using var ms = new MemoryStream(data, writable: false);
        try
        {
            var result = load(ms);
            if (result is Dictionary<string, Tensor> d) foreach (var t in d.Values) t.Dispose();
        }
        catch (CheckpointFormatException ex)
        {
            // the only accepted failure
            string problem = System.Text.RegularExpressions.Regex.Replace(ex.Problem, "[0-9]+", "N");
            outcome = ex.GetType().Name + ": " + problem[..Math.Min(problem.Length, 60)];
        }
        catch (Exception ex)
        {
            failures.Add($"{label}: {ex.GetType().Name}: {ex.Message}");
            throw;
        }
        if (Environment.GetEnvironmentVariable("ZMAGIC_FUZZ_STATS") == "1") Outcomes.AddOrUpdate(label + " | " + outcome, 1, (_, n) => n + 1);
    }

    private static byte[] ValidSafetensors()
    {
        var path = Path.Combine(Path.GetTempPath(), "zmagic-fuzz-" + Guid.NewGuid().ToString("N"));
        try
        {
            SafeTensors.Save(path, new Dictionary<string, Tensor>
            {
                ["a.weight"] = torch.arange(6, dtype: ScalarType.Float32).reshape(2, 3),
                ["b"] = torch.ones(3, dtype: ScalarType.Float16),
                ["n"] = torch.tensor(5L),
                ["m"] = torch.tensor(new[] { true, false }),
            }, new Dictionary<string, string> { ["format"] = "pt" });
            return File.ReadAllBytes(path);
        }
        finally { File.Delete(path); }
    }

    private static Dictionary<string, Tensor> SmallStateDict() => new()
    {
        ["a.weight"] = torch.arange(6, dtype: ScalarType.Float32).reshape(2, 3),
        ["a.bias"] = torch.ones(2, dtype: ScalarType.BFloat16),
        ["bn.num_batches_tracked"] = torch.tensor(3L),
    };

    private void Run(string label, byte[] seed, Func<Stream, object?> load, long ciIterations, int maxOps = 6)
    {
        var failures = new ConcurrentBag<string>();
        long count = Iterations(ciIterations);
        Mutations(maxOps).Sample(ops => MustOnlyThrowFormatErrors(load, Apply(seed, ops), failures, label),
            iter: count, threads: 1, print: ops => string.Join(" ", ops.Select(o => o.ToString())));
        _out.WriteLine($"{label}: {count} mutated inputs, {failures.Count} failures");
        foreach (var (k, n) in Outcomes.Where(kv => kv.Key.StartsWith(label + " |", StringComparison.Ordinal)).OrderByDescending(kv => kv.Value)) _out.WriteLine($"  {n,6} {k}");
        Assert.Empty(failures);
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedSafetensorsOnlyThrowFormatErrors() =>
        Run("safetensors", ValidSafetensors(), s => SafeTensors.Load(s, "fuzz.safetensors"), 400);

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedPtFilesOnlyThrowFormatErrors() =>
        Run("pt-bytes", PtWriter.Build(SmallStateDict(), "state_dict"), s => Checkpoint.LoadStateDict(s, "fuzz.pt"), 300);

    /// <summary>
    /// The zip container itself: CRCs, compressed and uncompressed sizes, name lengths and local header offsets of
    /// every local and central header set to interesting values, plus flipped data bytes; stored and deflated archives.
    /// Every input must load or throw <see cref="CheckpointFormatException"/>.
    /// </summary>
    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedZipHeadersOnlyThrowFormatErrors()
    {
        var seeds = new[]
        {
            PtWriter.Build(SmallStateDict(), "state_dict"),
            ZipWithCompression(),
        };
        // (signature, field offsets): local file header CRC, sizes, name length; central header CRC, sizes, name length, local offset.
        var local = new[] { 14, 18, 22, 26 };
        var central = new[] { 16, 20, 24, 28, 42 };
        long[] values = { 0, 1, 0x7f, 0xff, 0xffff, 0x7fffffff, 0xffffffff, 0xfffffffe, 100_000_000, 1 << 20 };
        var failures = new ConcurrentBag<string>();
        long count = Iterations(300);
        var gen = Gen.Select(Gen.Int[0, seeds.Length - 1], Gen.Int[0, 63], Gen.Int[0, 15], Gen.Int[0, values.Length - 1], Gen.Int);
        gen.Sample((seed, header, field, value, flip) =>
        {
            var data = (byte[])seeds[seed].Clone();
            var offsets = new List<(int At, bool Central)>();
            for (int i = 0; i + 4 <= data.Length; i++)
                if (data[i] == 'P' && data[i + 1] == 'K' && ((data[i + 2] == 3 && data[i + 3] == 4) || (data[i + 2] == 1 && data[i + 3] == 2)))
                    offsets.Add((i, data[i + 2] == 1));
            var (at, isCentral) = offsets[header % offsets.Count];
            var fields = isCentral ? central : local;
            int f = at + fields[field % fields.Length];
            bool twoBytes = fields[field % fields.Length] is 26 or 28;
            if (twoBytes) System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(f), (ushort)values[value]);
            else System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(f), (uint)values[value]);
            if ((flip & 1) == 1) data[(int)((uint)flip % (uint)data.Length)] ^= 0x20; // and one data byte
            MustOnlyThrowFormatErrors(s => Checkpoint.LoadStateDict(s, "fuzz-zip.pt"), data, failures, "zip-headers");
        }, iter: count, threads: 1);
        _out.WriteLine($"zip-headers: {count} mutated archives, {failures.Count} failures");
        foreach (var (k, n) in Outcomes.Where(kv => kv.Key.StartsWith("zip-headers |", StringComparison.Ordinal)).OrderByDescending(kv => kv.Value)) _out.WriteLine($"  {n,6} {k}");
        Assert.Empty(failures);
    }

    private static byte[] ZipWithCompression()
    {
        var stored = PtWriter.Build(SmallStateDict());
        using var src = new System.IO.Compression.ZipArchive(new MemoryStream(stored), System.IO.Compression.ZipArchiveMode.Read);
        var pkl = src.Entries.First(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal));
        var storages = src.Entries.Where(e => e.FullName.Contains("/data/", StringComparison.Ordinal))
            .Select(e => (e.FullName[(e.FullName.LastIndexOf('/') + 1)..], ReadAll(e))).ToList();
        return PtWriter.Zip("archive", ReadAll(pkl), storages, compress: true);
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedPicklesInValidZipsOnlyThrowFormatErrors()
    {
        // Mutate data.pkl itself (the zip CRC would otherwise hide most pickle mutations), then re-zip.
        var sd = SmallStateDict();
        foreach (int protocol in new[] { 2, 4 })
        {
            var zip = PtWriter.Build(sd, "model", "module.", "archive", protocol);
            using var za = new System.IO.Compression.ZipArchive(new MemoryStream(zip));
            var pkl = ReadAll(za.GetEntry("archive/data.pkl")!);
            var storages = za.Entries.Where(e => e.FullName.StartsWith("archive/data/", StringComparison.Ordinal))
                .Select(e => (e.FullName["archive/data/".Length..], ReadAll(e))).ToList();
            var failures = new ConcurrentBag<string>();
            long count = Iterations(400);
            Mutations(6).Sample(ops =>
            {
                var data = PtWriter.Zip("archive", Apply(pkl, ops), storages);
                MustOnlyThrowFormatErrors(s => PyTorchCheckpoint.Load(s, "fuzz-pickle.pt") is var o && Dispose(o), data, failures, "pickle");
                MustOnlyThrowFormatErrors(s => Checkpoint.LoadStateDict(s, "fuzz-pickle.pt"), data, failures, "pickle-sd");
            }, iter: count, threads: 1, print: ops => string.Join(" ", ops.Select(o => o.ToString())));
            _out.WriteLine($"pickle protocol {protocol}: {count} mutated pickles, {failures.Count} failures");
            foreach (var (k, n) in Outcomes.Where(kv => kv.Key.StartsWith("pickle", StringComparison.Ordinal)).OrderByDescending(kv => kv.Value).Take(25)) _out.WriteLine($"  {n,6} {k}");
            Assert.Empty(failures);
        }
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void RandomOpcodeStreamsOnlyThrowFormatErrors()
    {
        // Random sequences drawn from the opcode alphabet with small operands: exercises the unpickler's stack/memo checks.
        byte[] alphabet = "()]}NKJMGXqhrjRbtusaeQ0120.".Select(c => (byte)c).Concat(new byte[] { 0x80, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x93, 0x94, 0x95, 0x81 }).ToArray();
        var failures = new ConcurrentBag<string>();
        long count = Iterations(400);
        Gen.Select(Gen.Int[0, alphabet.Length - 1], Gen.Byte).Array[1, 60].Sample(ops =>
        {
            var p = new List<byte> { 0x80, 4 };
            foreach (var (i, arg) in ops)
            {
                p.Add(alphabet[i]);
                if (alphabet[i] is (byte)'K' or (byte)'q' or (byte)'h' or 0x8a or 0x8c) p.Add((byte)(arg % 8));
                if (alphabet[i] == 0x8c) p.AddRange("collections"u8.ToArray().Take(arg % 8));
            }
            p.Add((byte)'.');
            var data = PtWriter.Zip("archive", p.ToArray(), Array.Empty<(string, byte[])>());
            MustOnlyThrowFormatErrors(s => PyTorchCheckpoint.Load(s, "fuzz-ops.pt") is var o && Dispose(o), data, failures, "opcodes");
        }, iter: count, threads: 1);
        _out.WriteLine($"opcode streams: {count} inputs, {failures.Count} failures");
        Assert.Empty(failures);
    }

    private static readonly long[] Dims = { 0, 1, 2, 3, 4, 7, 16, -1, 1L << 31, 1L << 32, 1L << 62, long.MaxValue, 1_000_000 };

    private static Gen<long> Dim => Gen.Int[0, Dims.Length - 1].Select(i => Dims[i]);

    [Fact]
    [Trait("Category", "Fuzz")]
    public void RandomSafetensorsHeadersOnlyThrowFormatErrors()
    {
        // Structure-aware: well-formed JSON with hostile dtypes, shapes and offsets, and a random-length data section.
        string[] dtypes = { "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "F8_E4M3", "" };
        var entry = Gen.Select(Gen.Int[0, dtypes.Length - 1], Dim.Array[0, 4], Dim, Dim);
        var failures = new ConcurrentBag<string>();
        long count = Iterations(400);
        Gen.Select(entry.Array[0, 4], Gen.Int[0, 64]).Sample((entries, dataBytes) =>
        {
            var sb = new System.Text.StringBuilder("{");
            for (int i = 0; i < entries.Length; i++)
            {
                var (dt, shape, begin, end) = entries[i];
                if (i > 0) sb.Append(',');
                sb.Append($"\"t{i % 3}\":{{\"dtype\":\"{dtypes[dt]}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{Math.Abs(begin % 70)},{(end < 0 ? end : end % 80)}]}}");
            }
            sb.Append('}');
            var data = SafeTensorsTests.Raw(sb.ToString(), dataBytes);
            MustOnlyThrowFormatErrors(st => SafeTensors.Load(st, "fuzz-header.safetensors"), data, failures, "st-header");
        }, iter: count, threads: 1);
        _out.WriteLine($"safetensors headers: {count} inputs, {failures.Count} failures");
        Assert.Empty(failures);
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void RandomTensorViewsOnlyThrowFormatErrors()
    {
        // Structure-aware: _rebuild_tensor_v2 with hostile storage sizes, offsets, sizes, strides and record lengths.
        string[] types = { "FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "BoolStorage", "ByteStorage", "UntypedStorage" };
        var failures = new ConcurrentBag<string>();
        long count = Iterations(400);
        Gen.Select(Gen.Int[0, types.Length - 1], Dim, Dim, Gen.Select(Dim, Dim).Array[0, 3], Gen.Int[0, 64]).Sample((type, numel, offset, dims, bytes) =>
        {
            var p = new PickleBuilder().Proto(2).EmptyDict().Str("w")
                .TensorRef(types[type], "0", numel, offset, dims.Select(d => d.Item1).ToArray(), dims.Select(d => d.Item2).ToArray()).SetItem().Stop();
            var data = PtWriter.Zip("archive", p.ToArray(), new[] { ("0", new byte[bytes]) });
            MustOnlyThrowFormatErrors(st => Checkpoint.LoadStateDict(st, "fuzz-view.pt"), data, failures, "pt-view");
        }, iter: count, threads: 1);
        _out.WriteLine($"tensor views: {count} inputs, {failures.Count} failures");
        Assert.Empty(failures);
    }

    private static bool Dispose(object? o)
    {
        var refs = new List<Tensor>();
        Walk(o, refs, new HashSet<object>(ReferenceEqualityComparer.Instance));
        foreach (var t in refs) t.Dispose();
        return true;
    }

    private static void Walk(object? o, List<Tensor> acc, HashSet<object> seen)
    {
        if (o is null || !seen.Add(o)) return;
        switch (o)
        {
            case Tensor t: acc.Add(t); break;
            case PickleDict d: foreach (var kv in d.Items) Walk(kv.Value, acc, seen); break;
            case List<object?> l: foreach (var v in l) Walk(v, acc, seen); break;
            case object?[] a: foreach (var v in a) Walk(v, acc, seen); break;
        }
    }

    private static byte[] ReadAll(System.IO.Compression.ZipArchiveEntry e)
    {
        using var s = e.Open();
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        return ms.ToArray();
    }
}
