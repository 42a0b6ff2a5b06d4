using System.Text.Json;
using TorchSharp;
using ZMagic.Models.StableDiffusion;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests.StableDiffusion;

/// <summary>
/// The full-size SD 1.5 UNet and VAE have exactly the key/shape lists of the real checkpoints (golden manifests).
/// Built on the meta device, so nothing is allocated; that switches the process-wide default device, hence the
/// collection that runs alone.
/// </summary>
[Collection(MetaDeviceCollection.Name)]
public class SdManifestTests
{
    public static TheoryData<string> Manifests => new() { "sd_unet/manifest_sd15_unet.json", "sd_vae/manifest_sd15_vae.json" };

    [Theory]
    [MemberData(nameof(Manifests))]
    public void FullSizeSd15ComponentsMatchTheManifest(string manifest)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Golden.Root, manifest)));
        var expected = doc.RootElement.GetProperty("keys").EnumerateArray()
            .Select(e => (Key: e.GetProperty("key").GetString()!, Shape: e.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray()))
            .ToList();
        Assert.Equal(doc.RootElement.GetProperty("num_keys").GetInt32(), expected.Count);
        var before = torch.get_default_device();
        torch.set_default_device(torch.META);
        try
        {
            using nn.Module model = manifest.StartsWith("sd_unet", StringComparison.Ordinal)
                ? new UNet2DConditionModel(UNet2DConditionConfig.Sd15)
                : new AutoencoderKL(AutoencoderKLConfig.Sd15);
            var actual = model.state_dict();
            Assert.True(actual.Values.All(t => t.device_type == DeviceType.META), "the model was not built on the meta device");
            var missing = expected.Where(e => !actual.ContainsKey(e.Key)).Select(e => e.Key).ToList();
            var unexpected = actual.Keys.Where(k => expected.All(e => e.Key != k)).ToList();
            var mismatched = expected.Where(e => actual.ContainsKey(e.Key) && !actual[e.Key].shape.SequenceEqual(e.Shape))
                .Select(e => $"{e.Key}: [{string.Join(",", actual[e.Key].shape)}] vs [{string.Join(",", e.Shape)}]").ToList();
            Assert.True(missing.Count == 0 && unexpected.Count == 0 && mismatched.Count == 0,
                $"missing [{string.Join(", ", missing.Take(10))}] unexpected [{string.Join(", ", unexpected.Take(10))}] mismatched [{string.Join("; ", mismatched.Take(10))}]");
            long elements = expected.Sum(e => e.Shape.Aggregate(1L, (a, b) => a * b));
            Assert.Equal(doc.RootElement.GetProperty("num_float_elements").GetInt64(), elements);
        }
        finally
        {
            torch.set_default_device(before);
        }
    }
}

/// <summary>Tests that switch the process-wide default device run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MetaDeviceCollection
{
    public const string Name = "Meta default device (runs alone)";
}
