using System.Text.Json;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Encoders.Clip;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Clip;

public class ClipModelTests
{
    private static string TinyCase => Golden.CaseDirectories("clip").First();

    internal static void AssertMatchesManifest(Dictionary<string, Tensor> stateDict, string manifestPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(manifestPath));
        var entries = doc.RootElement.GetProperty("keys").EnumerateArray()
            .Select(e => (Key: e.GetProperty("key").GetString()!, Shape: e.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray()))
            .ToList();
        Assert.Equal(doc.RootElement.GetProperty("num_keys").GetInt32(), entries.Count);
        var missing = entries.Where(e => !stateDict.ContainsKey(e.Key)).Select(e => e.Key).ToList();
        var extra = stateDict.Keys.Except(entries.Select(e => e.Key)).ToList();
        Assert.True(missing.Count == 0 && extra.Count == 0, $"missing: {string.Join(", ", missing)}; extra: {string.Join(", ", extra)}");
        foreach (var (key, shape) in entries)
            Assert.True(stateDict[key].shape.SequenceEqual(shape), $"{key}: [{string.Join(", ", stateDict[key].shape)}] != manifest [{string.Join(", ", shape)}]");
        long elements = stateDict.Values.Sum(t => t.numel());
        Assert.Equal(doc.RootElement.GetProperty("num_float_elements").GetInt64(), elements);
    }

    [Theory]
    [InlineData("ViT-B-16")]
    [InlineData("ViT-L-14")]
    public void Full_size_presets_match_the_manifests(string name)
    {
        var preset = name == "ViT-B-16" ? ClipConfig.VitB16 : ClipConfig.VitL14;
        var manifest = Path.Combine(Golden.Root, "clip", $"manifest_{name}.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(manifest));
        Assert.Equal(ClipConfig.FromConstructorJson(doc.RootElement.GetProperty("constructor")), preset);
        using var model = new ClipModel(preset, torch.META);
        AssertMatchesManifest(model.state_dict(), manifest);
    }

    [Fact]
    public void Config_is_inferred_from_an_openai_state_dict_as_build_model()
    {
        using var model = new ClipModel(ClipConfig.VitL14, torch.META);
        var inferred = ClipConfig.FromOpenAIStateDict(model.state_dict());
        Assert.Equal(ClipConfig.VitL14, inferred);
    }

    [Fact]
    public void Loads_an_openai_safetensors_file_and_a_huggingface_folder()
    {
        using var scope = torch.NewDisposeScope();
        var dir = Directory.CreateTempSubdirectory("zmagic-clip-");
        try
        {
            var config = ClipConfig.FromConstructorJson(Golden.CaseJson(TinyCase).GetProperty("constructor"));
            var sd = Golden.Load(TinyCase, "weights.safetensors");
            // fp16 file -> fp32 module (the released OpenAI weights are mostly fp16).
            var half = sd.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float16));
            var halfPath = Path.Combine(dir.FullName, "openai-fp16.safetensors");
            SafeTensors.Save(halfPath, half);
            using var fromHalf = ClipWeights.LoadModel(halfPath, config);
            Assert.All(fromHalf.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));

            var hfDir = Directory.CreateDirectory(Path.Combine(dir.FullName, "hf"));
            File.WriteAllText(Path.Combine(hfDir.FullName, "config.json"), ClipHfLayout.ConfigJson(config));
            SafeTensors.Save(Path.Combine(hfDir.FullName, "model.safetensors"), ClipHfLayout.ToHuggingFace(sd));
            using var fromHf = ClipWeights.LoadModel(hfDir.FullName);
            Assert.Equal(config, fromHf.Config);

            var inputs = Golden.Load(TinyCase, "inputs.safetensors");
            var outputs = Golden.Load(TinyCase, "outputs.safetensors");
            using var _ = torch.no_grad();
            TensorAssert.Close(fromHf.EncodeImage(inputs["image"]), outputs["encode_image"], 1e-4, 1e-4, "HF folder encode_image");
            TensorAssert.Close(fromHf.EncodeText(inputs["text_tokens"]), outputs["encode_text"], 1e-4, 1e-4, "HF folder encode_text");
            // fp16 rounding of the weights: close, not equal.
            TensorAssert.Close(fromHalf.EncodeText(inputs["text_tokens"]), outputs["encode_text"], 2e-2, 2e-2, "fp16 file encode_text");
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void Text_tower_loads_from_full_weights_and_matches()
    {
        using var scope = torch.NewDisposeScope();
        var config = ClipConfig.FromConstructorJson(Golden.CaseJson(TinyCase).GetProperty("constructor"));
        using var text = new ClipTextModel(config);
        ClipWeights.Load(text, Golden.Load(TinyCase, "weights.safetensors"));
        var inputs = Golden.Load(TinyCase, "inputs.safetensors");
        var outputs = Golden.Load(TinyCase, "outputs.safetensors");
        using var _ = torch.no_grad();
        TensorAssert.Close(text.EncodeText(inputs["text_tokens"]), outputs["encode_text"], 1e-4, 1e-4, "text tower encode_text");
        Assert.Equal(new long[] { 4, 77, config.TransformerWidth }, text.EncodeTextHidden(inputs["text_tokens"]).shape);
    }

    [Fact]
    public void Vision_checkpoint_given_as_text_tower_lists_the_keys()
    {
        using var scope = torch.NewDisposeScope();
        var config = ClipConfig.FromConstructorJson(Golden.CaseJson(TinyCase).GetProperty("constructor"));
        var sd = Golden.Load(TinyCase, "weights.safetensors");
        var hfVisionOnly = ClipHfLayout.ToHuggingFace(sd).Where(kv => kv.Key.StartsWith("vision_model.") || kv.Key == "visual_projection.weight")
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        using var text = new ClipTextModel(config);
        var ex = Assert.Throws<StateDictMismatchException>(() => ClipWeights.Load(text, hfVisionOnly, "vision.safetensors"));
        Assert.Contains("vision.safetensors", ex.Message);
        Assert.Contains("missing keys", ex.Message);
        Assert.Contains("token_embedding.weight", ex.Message);
        Assert.Contains("ln_final.weight", ex.Message);
    }

    [Fact]
    public void Wrong_keys_and_shapes_are_reported()
    {
        using var scope = torch.NewDisposeScope();
        var config = ClipConfig.FromConstructorJson(Golden.CaseJson(TinyCase).GetProperty("constructor"));
        var sd = Golden.Load(TinyCase, "weights.safetensors");
        sd.Remove("visual.proj");
        sd["visual.ln_pre.weight"] = torch.ones(3);
        sd["bogus.key"] = torch.ones(1);
        using var model = new ClipModel(config);
        var ex = Assert.Throws<StateDictMismatchException>(() => ClipWeights.Load(model, sd, "bad.safetensors"));
        Assert.Contains("missing keys (1):\n    visual.proj", ex.Message);
        Assert.Contains("unexpected keys (1):\n    bogus.key", ex.Message);
        Assert.Contains("visual.ln_pre.weight: expected [64], checkpoint has [3]", ex.Message);
    }

    [Fact]
    public void Wrong_image_sizes_and_tokens_are_refused()
    {
        using var scope = torch.NewDisposeScope();
        var config = ClipConfig.FromConstructorJson(Golden.CaseJson(TinyCase).GetProperty("constructor"));
        using var model = new ClipModel(config);
        var ex = Assert.Throws<ArgumentException>(() => model.EncodeImage(torch.zeros(1, 3, 64, 64)));
        Assert.Contains("[N, 3, 32, 32]", ex.Message);
        Assert.Contains("[1, 3, 64, 64]", ex.Message);
        Assert.Throws<ArgumentException>(() => model.EncodeImage(torch.zeros(3, 32, 32)));
        Assert.Throws<ArgumentException>(() => model.EncodeImage(torch.zeros(1, 1, 32, 32)));
        Assert.Throws<ArgumentException>(() => model.EncodeText(torch.zeros(1, 76, ScalarType.Int64)));
        Assert.Throws<ArgumentException>(() => model.EncodeText(torch.zeros(1, 77, ScalarType.Float32)));
        Assert.Throws<ArgumentException>(() => model.EncodeText(torch.full(1, 77, 49408L)));
        Assert.Throws<ArgumentException>(() => ClipPreprocess.FromSignedUnit(torch.zeros(1, 1, 8, 8), 32));
    }
}
