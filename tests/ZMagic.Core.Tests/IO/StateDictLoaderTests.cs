using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.IO;

public class StateDictLoaderTests
{
    private static nn.Module<Tensor, Tensor> Net() => nn.Sequential(("conv", nn.Conv2d(3, 4, 3)), ("bn", nn.BatchNorm2d(4)), ("fc", nn.Linear(4, 2)));

    private static Dictionary<string, Tensor> SourceFor(nn.Module m, ScalarType? dtype = null)
    {
        var sd = new Dictionary<string, Tensor>();
        foreach (var (k, t) in m.state_dict())
        {
            var v = FormulaWeights.Generate(k, t.shape, t.dtype);
            sd[k] = dtype is { } d && t.is_floating_point() ? v.to(d) : v;
        }
        return sd;
    }

    [Fact]
    public void LoadsEverythingAndReportsComplete()
    {
        var m = Net();
        var report = StateDictLoader.Load(m, SourceFor(m));
        Assert.True(report.IsComplete);
        Assert.Equal(m.state_dict().Count, report.Loaded.Count);
        Assert.True(m.state_dict()["bn.running_var"].equal(FormulaWeights.Generate("bn.running_var", new long[] { 4 }, ScalarType.Float32)).all().item<bool>());
    }

    [Fact]
    public void ListsEveryProblemAndLeavesTheModuleUntouched()
    {
        var m = Net();
        var before = m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var src = SourceFor(m);
        src.Remove("fc.bias");
        src.Remove("conv.weight");
        src["fc.weight"] = torch.zeros(3, 4);
        src["extra.thing"] = torch.zeros(1);
        var ex = Assert.Throws<StateDictMismatchException>(() => StateDictLoader.Load(m, src, new StateDictLoadOptions { SourceName = "my.ckpt" }));
        Assert.Contains("my.ckpt", ex.Message);
        Assert.Contains("fc.bias", ex.Message);
        Assert.Contains("conv.weight", ex.Message);
        Assert.Contains("extra.thing", ex.Message);
        Assert.Contains("fc.weight: expected [2, 4], checkpoint has [3, 4]", ex.Message);
        Assert.Equal(new[] { "conv.weight", "fc.bias" }, ex.Report.Missing.OrderBy(s => s));
        Assert.Single(ex.Report.Unexpected);
        Assert.Single(ex.Report.ShapeMismatches);
        Assert.Empty(ex.Report.Loaded);
        foreach (var (k, t) in m.state_dict()) Assert.True(t.equal(before[k]).all().item<bool>(), $"{k} changed although the load failed");
    }

    [Fact]
    public void ConvertsHalfBFloatAndDoubleToTheModuleDtype()
    {
        foreach (var dt in new[] { ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float64 })
        {
            var m = Net();
            var src = SourceFor(m, dt);
            var report = StateDictLoader.Load(m, src);
            Assert.Equal(ScalarType.Float32, m.state_dict()["conv.weight"].dtype);
            Assert.Contains("conv.weight", report.Converted);
            Assert.True(m.state_dict()["conv.weight"].equal(src["conv.weight"].to(ScalarType.Float32)).all().item<bool>());
        }
    }

    [Fact]
    public void NumBatchesTrackedIsOptionalByDefault()
    {
        var m = Net();
        var src = SourceFor(m);
        src.Remove("bn.num_batches_tracked");
        var report = StateDictLoader.Load(m, src);
        Assert.Contains("bn.num_batches_tracked", report.MissingOptional);
        Assert.True(report.IsComplete);
        var strict = new StateDictLoadOptions { UseDefaultOptionalKeys = false };
        Assert.Throws<StateDictMismatchException>(() => StateDictLoader.Load(m, src, strict));
    }

    [Fact]
    public void StripsModulePrefixAppliesAliasesAndMaps()
    {
        var m = Net();
        var src = SourceFor(m).ToDictionary(kv => "module." + kv.Key.Replace("fc.", "classifier."), kv => kv.Value);
        var ex = Assert.Throws<StateDictMismatchException>(() => StateDictLoader.Load(m, src));
        Assert.Contains("module.classifier.weight", ex.Report.Unexpected);
        var report = StateDictLoader.Load(m, src, new StateDictLoadOptions
        {
            KeyAliases = new Dictionary<string, string> { ["classifier.weight"] = "fc.weight" },
            KeyMap = k => k == "classifier.bias" ? "fc.bias" : k,
        });
        Assert.True(report.IsComplete);
        Assert.Equal("fc.weight", report.Renamed["module.classifier.weight"]);
        Assert.Equal("conv.weight", report.Renamed["module.conv.weight"]);
    }

    [Fact]
    public void IgnorePatternsPartialAndUnexpectedOptions()
    {
        var m = Net();
        var src = SourceFor(m);
        src["aux.head.weight"] = torch.zeros(2);
        src.Remove("fc.bias");
        var r = StateDictLoader.Load(m, src, new StateDictLoadOptions { IgnoreUnexpected = new[] { "aux.*" }, AllowPartial = true });
        Assert.Contains("aux.head.weight", r.Ignored);
        Assert.Contains("fc.bias", r.Missing);
        Assert.False(r.IsComplete);
        var r2 = StateDictLoader.Load(m, src, new StateDictLoadOptions { AllowUnexpected = true, OptionalKeys = new[] { "fc.bias" } });
        Assert.Contains("aux.head.weight", r2.Unexpected);
        Assert.Contains("fc.bias", r2.MissingOptional);
    }

    [Fact]
    public void RefusesFloatIntoIntegerBuffers()
    {
        var m = Net();
        var src = SourceFor(m);
        src["bn.num_batches_tracked"] = torch.tensor(3.5f);
        var ex = Assert.Throws<StateDictMismatchException>(() => StateDictLoader.Load(m, src));
        Assert.Single(ex.Report.DTypeMismatches);
    }

    [Fact]
    public void DuplicateTargetsAreReported()
    {
        var m = Net();
        var src = SourceFor(m);
        src["module.fc.bias"] = torch.zeros(2);
        var ex = Assert.Throws<StateDictMismatchException>(() => StateDictLoader.Load(m, src, new StateDictLoadOptions { KeyMap = k => k.Replace("module.", "") }));
        Assert.Single(ex.Report.Duplicates);
    }
}
