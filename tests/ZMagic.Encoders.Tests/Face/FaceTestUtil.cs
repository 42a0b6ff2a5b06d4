using System.Text.Json;
using TorchSharp;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>Helpers shared by the face-network tests.</summary>
internal static class FaceTestUtil
{
    /// <summary>(key, shape) of a golden manifest, in file order.</summary>
    public static List<(string Key, long[] Shape)> Manifest(string network)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Golden.Root, network, "manifest.json")));
        return doc.RootElement.GetProperty("keys").EnumerateArray()
            .Select(e => (e.GetProperty("key").GetString()!, e.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray()))
            .ToList();
    }

    /// <summary>Asserts that the module's state-dict keys and shapes equal <paramref name="expected"/> exactly (as sets).</summary>
    public static void AssertKeysEqual(torch.nn.Module module, IEnumerable<(string Key, long[] Shape)> expected, string what)
    {
        var sd = module.state_dict();
        var exp = expected.ToDictionary(e => e.Key, e => e.Shape);
        var missing = exp.Keys.Except(sd.Keys).OrderBy(k => k).ToList();
        var extra = sd.Keys.Except(exp.Keys).OrderBy(k => k).ToList();
        var wrong = exp.Where(e => sd.ContainsKey(e.Key) && !sd[e.Key].shape.SequenceEqual(e.Value))
            .Select(e => $"{e.Key}: [{string.Join(",", sd[e.Key].shape)}] vs [{string.Join(",", e.Value)}]").ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0 && wrong.Count == 0,
            $"{what}: missing {missing.Count} [{string.Join(", ", missing.Take(10))}], unexpected {extra.Count} [{string.Join(", ", extra.Take(10))}], shape mismatches {wrong.Count} [{string.Join("; ", wrong.Take(10))}]");
        Assert.Equal(exp.Count, sd.Count);
    }

    /// <summary>Copies every entry of <paramref name="weights"/> into the module, requiring identical key sets and shapes.</summary>
    public static void LoadExact(torch.nn.Module module, IReadOnlyDictionary<string, Tensor> weights, string what)
    {
        AssertKeysEqual(module, weights.Select(kv => (kv.Key, kv.Value.shape)), what);
        var sd = module.state_dict();
        using var noGrad = torch.no_grad();
        foreach (var (k, v) in weights) sd[k].copy_(v);
    }

    /// <summary>A case's float tolerance pair {abs, rel} under <paramref name="name"/> (or the top-level pair).</summary>
    public static (double Abs, double Rel) Tol(JsonElement caseJson, string? name = null)
    {
        var t = caseJson.GetProperty("tolerance");
        if (name is not null) t = t.GetProperty(name);
        double abs = t.TryGetProperty("abs", out var a) ? a.GetDouble() : 0;
        double rel = t.TryGetProperty("rel", out var r) ? r.GetDouble() : 0;
        return (abs, rel);
    }

    /// <summary>
    /// A gradient check for the golden "grad": {"abs", "rel_l2"} entries, read as "max |diff| &lt;= abs, or else
    /// ||diff|| / ||ref|| &lt;= rel_l2". The README gives no combination rule; the elementwise abs bound alone is below
    /// the reference's own float32 rounding (its float32 gradient differs from a float64 evaluation of the same
    /// function by more than abs), so the relative L2 bound is the one that decides.
    /// </summary>
    /// <returns>The max abs difference and the relative L2 error, for the log.</returns>
    public static (double MaxAbs, double RelL2) GradClose(Tensor actual, Tensor expected, JsonElement gradTol, string what)
    {
        double abs = gradTol.GetProperty("abs").GetDouble(), relL2 = gradTol.GetProperty("rel_l2").GetDouble();
        using var scope = torch.NewDisposeScope();
        Assert.True(actual.shape.SequenceEqual(expected.shape), $"{what}: shape [{string.Join(",", actual.shape)}] vs [{string.Join(",", expected.shape)}]");
        var a = actual.detach().to(ScalarType.Float64);
        var b = expected.detach().to(ScalarType.Float64);
        double maxAbs = (a - b).abs().max().item<double>();
        double bn = b.norm().item<double>();
        double r = (a - b).norm().item<double>() / (bn > 0 ? bn : 1);
        if (maxAbs > abs) TensorAssert.RelL2(actual, expected, relL2, $"{what} (max |diff| {maxAbs:E2} > abs {abs:E1})");
        return (maxAbs, r);
    }
}
