using System.Text.Json;
using TorchSharp;
using ZMagic.Models.Adm;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>The full-size presets have exactly the checkpoint's keys and shapes (built on the meta device: nothing is allocated).</summary>
public class ManifestTests
{
    private static List<(string Key, long[] Shape)> ManifestKeys(JsonElement m, string property = "keys") =>
        m.GetProperty(property).EnumerateArray()
            .Select(e => (e.GetProperty("key").GetString()!, e.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray()))
            .ToList();

    private static List<(string Key, long[] Shape)> ModuleKeys(nn.Module module) =>
        module.state_dict().Select(kv => (kv.Key, kv.Value.shape)).ToList();

    private static void AssertSameKeys(List<(string Key, long[] Shape)> expected, List<(string Key, long[] Shape)> actual, string what)
    {
        var exp = expected.ToDictionary(e => e.Key, e => e.Shape);
        var act = actual.ToDictionary(e => e.Key, e => e.Shape);
        var missing = exp.Keys.Where(k => !act.ContainsKey(k)).ToList();
        var extra = act.Keys.Where(k => !exp.ContainsKey(k)).ToList();
        var wrong = exp.Keys.Where(k => act.TryGetValue(k, out var s) && !s.SequenceEqual(exp[k]))
            .Select(k => $"{k}: manifest [{string.Join(",", exp[k])}], module [{string.Join(",", act[k])}]").ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0 && wrong.Count == 0,
            $"{what}: missing {missing.Count} [{string.Join(", ", missing.Take(10))}], extra {extra.Count} [{string.Join(", ", extra.Take(10))}], shape {wrong.Count} [{string.Join("; ", wrong.Take(10))}]");
        // state_dict order equals the reference registration order too
        Assert.Equal(expected.Select(e => e.Key), actual.Select(a => a.Key));
    }

    public static TheoryData<string> DdpmManifests() => new()
    {
        Path.Combine(Golden.Root, "zmagic_steps", "manifest.json"),
        Path.Combine(Golden.Root, "guided_unet", "manifest_celeba_ddpm_Model.json"),
    };

    [Theory]
    [MemberData(nameof(DdpmManifests))]
    public void CelebAHq_preset_has_the_checkpoint_keys(string manifestPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(manifestPath));
        var m = doc.RootElement;
        var config = Assert.IsType<DdpmUNetConfig>(BackboneConfig.FromJson(m));
        Assert.Equal(DdpmUNetConfig.CelebAHq with { VarType = config.VarType }, config);
        using var net = new DdpmUNet(DdpmUNetConfig.CelebAHq, torch.META);
        var keys = ModuleKeys(net);
        AssertSameKeys(ManifestKeys(m), keys, Path.GetFileName(manifestPath));
        Assert.Equal(m.GetProperty("num_keys").GetInt32(), keys.Count);
        Assert.Equal(m.GetProperty("num_float_elements").GetInt64(), keys.Sum(k => k.Shape.Aggregate(1L, (a, b) => a * b)));
    }

    [Fact]
    public void Tiny_ddpm_config_has_the_tiny_manifest_keys()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Golden.Root, "zmagic_steps", "manifest.json")));
        var m = doc.RootElement;
        var config = DdpmUNetConfig.FromJson(m.GetProperty("tiny_test_config"));
        using var net = new DdpmUNet(config, torch.META);
        var keys = ModuleKeys(net);
        AssertSameKeys(ManifestKeys(m, "tiny_test_keys"), keys, "tiny_test_keys");
        Assert.Equal(m.GetProperty("tiny_test_num_float_elements").GetInt64(), keys.Sum(k => k.Shape.Aggregate(1L, (a, b) => a * b)));
    }

    [Fact]
    public void ImageNet256_preset_has_the_checkpoint_keys()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Golden.Root, "guided_unet", "manifest_imagenet256_uncond.json")));
        var m = doc.RootElement;
        var config = Assert.IsType<AdmUNetConfig>(BackboneConfig.FromJson(m));
        Assert.Equal(AdmUNetConfig.ImageNet256Uncond, config);
        var resolved = m.GetProperty("resolved_UNetModel_args");
        Assert.Equal(resolved.GetProperty("model_channels").GetInt32(), config.ModelChannels);
        Assert.Equal(resolved.GetProperty("out_channels").GetInt32(), config.OutChannels);
        Assert.Equal(resolved.GetProperty("attention_resolutions(ds)").EnumerateArray().Select(e => e.GetInt32()).Order(), config.AttentionResolutions.Order());
        using var net = new AdmUNet(AdmUNetConfig.ImageNet256Uncond, torch.META);
        var keys = ModuleKeys(net);
        // fp16-listed keys (convert_to_fp16) are compared by shape; dtype is the checkpoint's storage detail.
        AssertSameKeys(ManifestKeys(m), keys, "manifest_imagenet256_uncond.json");
        Assert.Equal(m.GetProperty("num_keys").GetInt32(), keys.Count);
        Assert.Equal(m.GetProperty("num_float_elements").GetInt64(), keys.Sum(k => k.Shape.Aggregate(1L, (a, b) => a * b)));
    }
}
