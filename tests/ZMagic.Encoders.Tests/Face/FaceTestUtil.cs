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
    /// FreeDoM's energies (IDLoss, FaceParseTool, FaceLandMarkTool, CLIPEncoder) take ONE norm over the whole batch,
    /// <c>L = ||R||</c> with <c>R = [r_1; ...; r_B]</c>, which couples the items; the library's guidance is per item
    /// (<c>l_b = ||r_b||</c>). In eval mode r_b depends only on x_b, so <c>dL/dx_b = (l_b / L) dl_b/dx_b</c>.
    /// Returns the reference's coupled loss and gradient and, from a separate per-item pass over the same graph, the
    /// per-item gradients mapped through that relation, so both can be compared with the golden gradient item by item.
    /// </summary>
    public static (Tensor Loss, Tensor Grad, Tensor PerItemGradScaled) CoupledAndPerItemGrads(Tensor residual, Tensor x)
    {
        var loss = residual.norm();
        var grad = torch.autograd.grad([loss], [x], retain_graph: true)[0];
        var perItem = residual.flatten(1).square().sum(1).sqrt();
        Assert.Equal(x.shape[0], perItem.shape[0]);
        var gItem = torch.autograd.grad([perItem.sum()], [x], retain_graph: false)[0];
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[0] = x.shape[0];
        var scale = (perItem.detach() / loss.detach()).view(shape);
        return (loss, grad, gItem * scale);
    }

    /// <summary>Compares <paramref name="actual"/> with <paramref name="outputs"/>[key] when the case stores that key (the README lists it as optional or diagnostic).</summary>
    public static bool CloseIfPresent(IReadOnlyDictionary<string, Tensor> outputs, string key, Tensor actual, double abs, double rel)
    {
        if (!outputs.TryGetValue(key, out var expected)) return false;
        ZMagic.TestSupport.TensorAssert.Close(actual, expected, abs, rel, key);
        return true;
    }

    /// <summary>
    /// Asserts that a case (any root) is claimed by exactly one harness, so an unseen
    /// case in an unexpected shape fails loudly instead of being silently filtered out of every theory.
    /// </summary>
    public static void AssertClaimed(string caseDir, params (string Harness, bool Claims)[] harnesses)
    {
        var claimed = harnesses.Where(h => h.Claims).Select(h => h.Harness).ToList();
        Assert.True(claimed.Count == 1, $"{caseDir}: claimed by {claimed.Count} harnesses [{string.Join(", ", claimed)}]; expected exactly one of [{string.Join(", ", harnesses.Select(h => h.Harness))}].");
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
