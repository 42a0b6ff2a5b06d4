using ZMagic.TestSupport;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using CsCheck;
using Xunit.Abstractions;
using ZMagic.Core.IO;
using ZMagic.Encoders.FaceApi;

namespace ZMagic.Encoders.Tests.Reliability;

/// <summary>
/// Fuzzing the tfjs manifest reader: mutated manifests, mutated shard bytes and generated manifests must load or
/// throw <see cref="CheckpointFormatException"/> (or a subclass), with allocation bounded by the input size.
/// CI runs a short pass; ZMAGIC_FUZZ_ITERATIONS sets the count per target.
/// </summary>
public class TfjsManifestFuzzTests : IDisposable
{
    private readonly ITestOutputHelper _out;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "zmagic-tfjs-fuzz-" + Guid.NewGuid().ToString("N"));

    public TfjsManifestFuzzTests(ITestOutputHelper output)
    {
        _out = output;
        Directory.CreateDirectory(_dir);
    }

    public void Dispose() => Directory.Delete(_dir, true);

    private const string SeedManifest = """
        [{"paths": ["shard1", "shard2"], "weights": [
          {"name": "conv/filters", "shape": [3, 3, 1, 2], "dtype": "float32"},
          {"name": "conv/bias", "shape": [2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
          {"name": "fc/weights", "shape": [2, 3], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 0.001, "min": 0}},
          {"name": "fc/bias", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}},
          {"name": "idx", "shape": [2, 1], "dtype": "int32"}
        ]},
        {"paths": ["shard3"], "weights": [{"name": "g2/w", "shape": [4], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 2, "min": 1}}]}]
        """;

    // 18*4 + 2 + 6*2 + 3*2 + 2*4 = 100 bytes in group 0, 4 in group 1.
    private static byte[] ShardBytes(int n, int salt) => Enumerable.Range(0, n).Select(i => (byte)(i * 31 + salt * 7)).ToArray();

    private static readonly byte[] Shard1 = ShardBytes(60, 1), Shard2 = ShardBytes(40, 2), Shard3 = ShardBytes(4, 3);

    private static readonly ConcurrentDictionary<string, int> Outcomes = new();

    /// <summary>Writes the files, loads, and classifies the outcome; returns a failure description or null.</summary>
    private string? Try(string label, byte[] manifest, byte[] s1, byte[] s2, byte[] s3)
    {
        string dir = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "weights_manifest.json"), manifest);
            File.WriteAllBytes(Path.Combine(dir, "shard1"), s1);
            File.WriteAllBytes(Path.Combine(dir, "shard2"), s2);
            File.WriteAllBytes(Path.Combine(dir, "shard3"), s3);
            long inputBytes = manifest.Length + s1.Length + s2.Length + s3.Length;
            long before = GC.GetAllocatedBytesForCurrentThread();
            var sw = Stopwatch.StartNew();
            string outcome;
            try
            {
                var loaded = TfjsWeights.Load(Path.Combine(dir, "weights_manifest.json"));
                outcome = $"loaded {loaded.Count} tensors";
            }
            catch (CheckpointFormatException ex)
            {
                outcome = ex.GetType().Name + ": " + System.Text.RegularExpressions.Regex.Replace(ex.Problem, "[0-9]+", "N");
            }
            catch (Exception ex)
            {
                Outcomes.AddOrUpdate($"{label} | FAILURE {ex.GetType().Name}", 1, (_, n) => n + 1);
                return $"{label}: {ex.GetType().Name}: {ex.Message}\nmanifest: {Encoding.UTF8.GetString(manifest)}";
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Outcomes.AddOrUpdate($"{label} | {outcome[..Math.Min(outcome.Length, 100)]}", 1, (_, n) => n + 1);
            // Reading the manifest text, the JSON document and float32 outputs (at most 4 per input byte), with slack.
            long bound = 16 * inputBytes + (1 << 20);
            if (allocated > bound) return $"{label}: allocated {allocated} bytes for {inputBytes} input bytes ({outcome})";
            if (sw.ElapsedMilliseconds > 5000) return $"{label}: took {sw.ElapsedMilliseconds} ms ({outcome})";
            return null;
        }
        finally { Directory.Delete(dir, true); }
    }

    private void Report(string label, long count, ConcurrentBag<string> failures)
    {
        _out.WriteLine($"{label}: {count} inputs, {failures.Count} failures");
        foreach (var (k, n) in Outcomes.Where(kv => kv.Key.StartsWith(label + " |", StringComparison.Ordinal)).OrderByDescending(kv => kv.Value).Take(20))
            _out.WriteLine($"  {n,6} {k}");
        foreach (var f in failures.Take(5)) _out.WriteLine("FAIL " + f);
        Assert.Empty(failures);
    }

    [Fact]
    public void TheSeedLoads()
    {
        Assert.Null(Try("seed", Encoding.UTF8.GetBytes(SeedManifest), Shard1, Shard2, Shard3));
        Assert.Contains(Outcomes.Keys, k => k == "seed | loaded 6 tensors");
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedManifestsOnlyThrowFormatErrors()
    {
        var seed = Encoding.UTF8.GetBytes(SeedManifest);
        var failures = new ConcurrentBag<string>();
        long count = FuzzSupport.Iterations(400);
        FuzzSupport.Mutations(6).Sample(ops =>
        {
            if (Try("manifest", FuzzSupport.Apply(seed, ops), Shard1, Shard2, Shard3) is { } f) failures.Add(f);
        }, iter: count, threads: 1);
        Report("manifest", count, failures);
    }

    [Fact]
    [Trait("Category", "Fuzz")]
    public void MutatedShardsOnlyThrowFormatErrors()
    {
        var manifest = Encoding.UTF8.GetBytes(SeedManifest);
        var failures = new ConcurrentBag<string>();
        long count = FuzzSupport.Iterations(200);
        Gen.Select(Gen.Int[0, 2], FuzzSupport.Mutations(4)).Sample((which, ops) =>
        {
            var s = new[] { Shard1, Shard2, Shard3 };
            s[which] = FuzzSupport.Apply(s[which], ops);
            if (Try("shards", manifest, s[0], s[1], s[2]) is { } f) failures.Add(f);
        }, iter: count, threads: 1);
        Report("shards", count, failures);
    }

    private static readonly string[] Dims = { "0", "1", "2", "3", "4", "-1", "1.5", "1e3", "\"2\"", "null", "4294967296", "1099511627776", "9223372036854775807", "99999999999999999999" };
    private static readonly string[] DTypes = { "\"float32\"", "\"int32\"", "\"bool\"", "\"complex64\"", "3", "null" };
    private static readonly string[] Quants = { "", ", \"quantization\": {\"dtype\": \"uint8\", \"scale\": 1e400, \"min\": 0}", ", \"quantization\": {\"dtype\": \"uint8\", \"scale\": 0.1, \"min\": -1}",
        ", \"quantization\": {\"dtype\": \"uint16\", \"scale\": 1, \"min\": 0}", ", \"quantization\": {\"dtype\": \"float16\"}", ", \"quantization\": {\"dtype\": \"int4\"}",
        ", \"quantization\": null", ", \"quantization\": 5", ", \"quantization\": {\"dtype\": \"uint8\", \"scale\": \"x\", \"min\": 0}", ", \"quantization\": {\"dtype\": \"uint8\", \"scale\": 1e-400, \"min\": -1e308}" };
    private static readonly string[] Paths = { "\"shard1\"", "\"shard2\"", "\"shard3\"", "\"../shard1\"", "\"/etc/passwd\"", "\"\"", "\".\"", "\"nope\"", "7", "\"sub/shard1\"", "\"shard1\\u0000x\"" };

    [Fact]
    [Trait("Category", "Fuzz")]
    public void GeneratedManifestsOnlyThrowFormatErrors()
    {
        var entry = Gen.Select(Gen.Int[0, Dims.Length - 1].Array[0, 4], Gen.Int[0, DTypes.Length - 1], Gen.Int[0, Quants.Length - 1], Gen.Int[0, 3],
            (dims, dt, q, n) => $"{{\"name\": \"t{n}\", \"shape\": [{string.Join(", ", dims.Select(i => Dims[i]))}], \"dtype\": {DTypes[dt]}{Quants[q]}}}");
        var group = Gen.Select(Gen.Int[0, Paths.Length - 1].Array[0, 3], entry.Array[0, 4],
            (p, w) => $"{{\"paths\": [{string.Join(", ", p.Select(i => Paths[i]))}], \"weights\": [{string.Join(", ", w)}]}}");
        var failures = new ConcurrentBag<string>();
        long count = FuzzSupport.Iterations(400);
        group.Array[0, 3].Sample(groups =>
        {
            var manifest = Encoding.UTF8.GetBytes("[" + string.Join(", ", groups) + "]");
            if (Try("generated", manifest, Shard1, Shard2, Shard3) is { } f) failures.Add(f);
        }, iter: count, threads: 1);
        Report("generated", count, failures);
    }

    [Theory]
    [InlineData("""[{"paths": ["shard3"], "weights": [{"name": "huge", "shape": [1099511627776], "dtype": "float32"}]}]""")]
    [InlineData("""[{"paths": ["shard3"], "weights": [{"name": "huge", "shape": [65536, 65536, 65536], "dtype": "float32"}]}]""")]
    [InlineData("""[{"paths": ["shard3"], "weights": [{"name": "a", "shape": [268435456], "dtype": "float32"}, {"name": "b", "shape": [268435456], "dtype": "float32"}]}]""")]
    public void ATerabyteClaimIsRefusedBeforeAnyAllocation(string manifest)
    {
        Assert.Null(Try("terabyte", Encoding.UTF8.GetBytes(manifest), Shard1, Shard2, Shard3));
        Assert.DoesNotContain(Outcomes.Keys, k => k.StartsWith("terabyte | loaded", StringComparison.Ordinal));
    }
}
