using System.Text.Json;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

/// <summary>Weight formula (b) against the golden formula_check vectors.</summary>
public class FormulaWeightsTests
{
    private static string CaseDir => Path.Combine(Golden.Root, "formula_check");

    [Fact]
    [Trait("Category", "Golden")]
    public void HashTestVectorsMatch()
    {
        var json = Golden.CaseJson(CaseDir);
        foreach (var p in json.GetProperty("fnv1a32_test_vectors").EnumerateObject())
            Assert.Equal(p.Value.GetUInt32(), FormulaWeights.Fnv1a32(p.Name));
        foreach (var p in json.GetProperty("fmix32_test_vectors").EnumerateObject())
            Assert.Equal(p.Value.GetUInt32(), FormulaWeights.Fmix32(uint.Parse(p.Name, System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Fact]
    [Trait("Category", "Golden")]
    public void EntriesMatchExpectedTensors()
    {
        var json = Golden.CaseJson(CaseDir);
        var expected = SafeTensors.Load(Path.Combine(CaseDir, "expected.safetensors"));
        int checkedEntries = 0;
        foreach (var p in json.GetProperty("entries").EnumerateObject())
        {
            var shape = p.Value.EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var exp = expected[p.Name];
            using var actual = FormulaWeights.Generate(p.Name, shape, exp.dtype);
            AssertWithinOneUlp(actual, exp, p.Name);
            checkedEntries++;
        }
        Assert.True(checkedEntries >= 10);
        // The slices of the large [512, 25088] tensor.
        using var big = FormulaWeights.Generate("output_layer.3.weight", new long[] { 512, 25088 }, ScalarType.Float32);
        AssertWithinOneUlp(big[TensorIndex.Slice(0, 2), TensorIndex.Slice(0, 1000)], expected["output_layer.3.weight[:2,:1000]"], "slice 1");
        AssertWithinOneUlp(big[511, TensorIndex.Slice(-1000, null)], expected["output_layer.3.weight[511,-1000:]"], "slice 2");
        foreach (var t in expected.Values) t.Dispose();
    }

    [Fact]
    public void ApplyFillsEveryParameterAndBufferByKey()
    {
        var m = nn.Sequential(("conv", nn.Conv2d(3, 4, 3)), ("bn", nn.BatchNorm2d(4)), ("fc", nn.Linear(4, 2)));
        FormulaWeights.Apply(m);
        foreach (var (key, t) in m.state_dict())
        {
            using var g = FormulaWeights.Generate(key, t.shape, t.dtype);
            Assert.True(t.equal(g).all().item<bool>(), key);
        }
        Assert.Equal(0L, m.state_dict()["bn.num_batches_tracked"].item<long>());
        Assert.Equal(ScalarType.Int64, m.state_dict()["bn.num_batches_tracked"].dtype);
        Assert.False(m.parameters().First().requires_grad == false);
        // running_var rule: 1 + 0.5|v| >= 1.
        Assert.True(m.state_dict()["bn.running_var"].min().item<float>() >= 1f);
    }

    [Fact]
    public void Float64ModuleGetsFloat32RoundedValues()
    {
        using var g64 = FormulaWeights.Generate("a.weight", new long[] { 3, 4 }, ScalarType.Float64);
        using var g32 = FormulaWeights.Generate("a.weight", new long[] { 3, 4 }, ScalarType.Float32);
        Assert.Equal(ScalarType.Float64, g64.dtype);
        Assert.True(g64.equal(g32.to(ScalarType.Float64)).all().item<bool>());
    }

    private static void AssertWithinOneUlp(Tensor actual, Tensor expected, string what)
    {
        Assert.True(actual.shape.SequenceEqual(expected.shape), $"{what}: shape");
        Assert.Equal(expected.dtype, actual.dtype);
        if (expected.dtype != ScalarType.Float32)
        {
            Assert.True(actual.equal(expected).all().item<bool>(), what);
            return;
        }
        var a = actual.contiguous().data<float>().ToArray();
        var e = expected.contiguous().data<float>().ToArray();
        int ulpDiffs = 0;
        for (int i = 0; i < a.Length; i++)
        {
            int ia = BitConverter.SingleToInt32Bits(a[i]), ie = BitConverter.SingleToInt32Bits(e[i]);
            int d = Math.Abs(ia - ie);
            Assert.True(d <= 1, $"{what}[{i}]: {a[i]:R} vs expected {e[i]:R}");
            if (d == 1) ulpDiffs++;
        }
        // At most a rare 1-ulp flip from a different float64 sin.
        Assert.True(ulpDiffs <= Math.Max(1, a.Length / 1000), $"{what}: {ulpDiffs} elements differ by one ulp");
    }
}
