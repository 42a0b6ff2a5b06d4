using System.Text.Json;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Encoders.Tests.Clip;
using ZMagic.Encoders.Vgg;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Vgg;

public class VggGoldenTests
{
    public static TheoryData<string> Cases() => Golden.Cases("vgg_style");

    private static VggKind KindOf(string caseDir)
    {
        var reference = Golden.CaseJson(caseDir).GetProperty("reference").GetString()!;
        if (reference.Contains("vgg16")) return VggKind.Vgg16;
        if (reference.Contains("vgg19")) return VggKind.Vgg19;
        throw new InvalidOperationException($"{caseDir}: reference '{reference}' names no known VGG.");
    }

    /// <summary>A VGG with formula weights computed for the FULL torchvision key set (as the golden data).</summary>
    internal static VggFeatures FormulaVgg(VggKind kind)
    {
        var vgg = new VggFeatures(kind);
        FormulaWeights.Apply(vgg);
        return vgg;
    }

    [Theory]
    [Trait("Category", "Golden")]
    [MemberData(nameof(Cases))]
    public void Activations_and_grams_match(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        var tol = json.GetProperty("tolerance");
        double abs = tol.GetProperty("abs").GetDouble(), rel = tol.GetProperty("rel").GetDouble();
        double gramRel = tol.TryGetProperty("gram", out var g) && g.TryGetProperty("rel", out var gr) ? gr.GetDouble() : rel;
        using var vgg = FormulaVgg(KindOf(caseDir));
        foreach (var p in json.GetProperty("layer_indices_in_features").EnumerateObject())
            Assert.Equal(p.Value.GetInt32(), vgg.IndexOf(p.Name));
        var names = json.GetProperty("all_feature_layer_names").EnumerateArray().Select(e => e.GetString()!).ToArray();
        Assert.Equal(names, vgg.LayerNames);

        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        // Preprocessing: the stored x is Normalize(image01); also check the [-1, 1] path gives the same tensor.
        TensorAssert.Close(VggFeatures.NormalizeUnit(inputs["image01"]), inputs["x"], 1e-6, 1e-5, "NormalizeUnit(image01)");
        TensorAssert.Close(VggFeatures.NormalizeSignedUnit(inputs["image01"] * 2 - 1), inputs["x"], 1e-5, 1e-5, "NormalizeSignedUnit(2 image01 - 1)");

        var layers = outputs.Keys.Where(k => !k.StartsWith("gram_")).ToList();
        Assert.NotEmpty(layers);
        using var _ = torch.no_grad();
        var acts = vgg.Extract(inputs["x"], layers.Concat(outputs.Keys.Where(k => k.StartsWith("gram_")).Select(k => k[5..])));
        foreach (var l in layers) TensorAssert.Close(acts[l], outputs[l], abs, rel, l);
        foreach (var k in outputs.Keys.Where(k => k.StartsWith("gram_")))
            TensorAssert.Close(VggFeatures.Gram(acts[k[5..]]), outputs[k], abs, gramRel, k);
    }

    [Theory]
    [InlineData(VggKind.Vgg16, "manifest_vgg16.json", 32)]
    [InlineData(VggKind.Vgg19, "manifest_vgg19.json", 38)]
    public void Full_size_models_match_the_manifests(VggKind kind, string manifest, int keys)
    {
        using var full = new VggFeatures(kind, withClassifier: true, device: torch.META);
        ClipModelTests.AssertMatchesManifest(full.state_dict(), Path.Combine(Golden.Root, "vgg_style", manifest));
        using var features = new VggFeatures(kind, device: torch.META);
        Assert.Equal(keys, features.state_dict().Count + 6);
    }

    [Fact]
    public void A_full_torchvision_file_loads_its_features_and_ignores_the_classifier()
    {
        using var scope = torch.NewDisposeScope();
        using var source = new VggFeatures(VggKind.Vgg16);
        var features = source.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        // The classifier's values never matter (its keys are skipped before any shape check): small stand-ins.
        var sd = new Dictionary<string, Tensor>(features);
        foreach (var i in new[] { 0, 3, 6 }) { sd[$"classifier.{i}.weight"] = torch.zeros(1); sd[$"classifier.{i}.bias"] = torch.zeros(1); }
        using var vgg = new VggFeatures(VggKind.Vgg16);
        var report = vgg.LoadWeights(sd, "vgg16.pth");
        Assert.Equal(26, report.Loaded.Count);
        Assert.Contains("classifier.0.weight", report.Ignored);
        Assert.Equal(0f, (vgg.state_dict()["features.28.weight"] - sd["features.28.weight"]).abs().max().item<float>());

        sd.Remove("features.28.weight");
        var ex = Assert.Throws<StateDictMismatchException>(() => vgg.LoadWeights(sd, "vgg16.pth"));
        Assert.Contains("features.28.weight", ex.Message);
        // A VGG16 file is not a VGG19.
        using var v19 = new VggFeatures(VggKind.Vgg19);
        var ex19 = Assert.Throws<StateDictMismatchException>(() => v19.LoadWeights(features, "vgg16.pth"));
        Assert.Contains("features.34.weight", ex19.Message);
    }

    [Fact]
    public void Bad_inputs_and_layer_names_are_refused()
    {
        using var vgg = new VggFeatures(VggKind.Vgg16);
        Assert.Throws<ArgumentException>(() => vgg.Extract(torch.zeros(1, 1, 32, 32), new[] { "relu1_1" }));
        Assert.Throws<ArgumentException>(() => vgg.Extract(torch.zeros(1, 3, 8, 8), new[] { "relu1_1" }));
        var ex = Assert.Throws<ArgumentException>(() => vgg.IndexOf("relu3_4"));
        Assert.Contains("relu3_3", ex.Message);
        Assert.Equal(29, new VggFeatures(VggKind.Vgg19, device: torch.META).IndexOf("relu5_1"));
        Assert.Equal(8, vgg.IndexOf("relu2_2"));
        Assert.Equal(20, vgg.IndexOf("relu4_2"));
    }
}
