using System.IO.Compression;
using System.Text;
using System.Text.Json;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.TestSupport;

/// <summary>
/// Writes a tiny Stable Diffusion pipeline to disk in the real diffusers folder layout: the golden tiny UNet and VAE
/// (their configs and weight files), a small random CLIP text encoder in the Hugging Face layout, CLIP's real
/// vocabulary as vocab.json + merges.txt, and the SD 1.5 scheduler config.
/// </summary>
public static class TinySdFolder
{
    public const int TextWidth = 32;

    public static string Create(string root, bool legacyVaeNames = false)
    {
        Directory.CreateDirectory(root);
        var unetCase = Golden.Dir("sd_unet/tiny_seed1234");
        var vaeCase = Golden.Dir("sd_vae/tiny_seed1234");
        WriteJson(Path.Combine(root, "model_index.json"), new Dictionary<string, object>
        {
            ["_class_name"] = "StableDiffusionPipeline",
            ["_diffusers_version"] = "0.27.2",
            ["unet"] = new[] { "diffusers", "UNet2DConditionModel" },
            ["vae"] = new[] { "diffusers", "AutoencoderKL" },
            ["text_encoder"] = new[] { "transformers", "CLIPTextModel" },
            ["tokenizer"] = new[] { "transformers", "CLIPTokenizer" },
            ["scheduler"] = new[] { "diffusers", "PNDMScheduler" },
        });
        Component(root, "unet", Golden.CaseJson(unetCase).GetProperty("constructor").GetRawText(),
            Path.Combine(unetCase, "weights.safetensors"), "diffusion_pytorch_model.safetensors");
        Component(root, "vae", Golden.CaseJson(vaeCase).GetProperty("constructor").GetRawText(),
            Path.Combine(vaeCase, legacyVaeNames ? "weights_legacy_names.safetensors" : "weights.safetensors"), "diffusion_pytorch_model.safetensors");
        var te = Directory.CreateDirectory(Path.Combine(root, "text_encoder")).FullName;
        File.WriteAllText(Path.Combine(te, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["architectures"] = new[] { "CLIPTextModel" },
            ["hidden_act"] = "quick_gelu",
            ["hidden_size"] = TextWidth,
            ["intermediate_size"] = 4 * TextWidth,
            ["max_position_embeddings"] = 77,
            ["num_attention_heads"] = 2,
            ["num_hidden_layers"] = 2,
            ["projection_dim"] = TextWidth,
            ["vocab_size"] = 49408,
        }));
        SafeTensors.Save(Path.Combine(te, "model.safetensors"), RandomTextEncoder(2, TextWidth, 1234));
        var sched = Directory.CreateDirectory(Path.Combine(root, "scheduler")).FullName;
        File.WriteAllText(Path.Combine(sched, "scheduler_config.json"),
            Golden.CaseJson("sd_scheduler/ddim_sd15_seed1234").GetProperty("sd15_scheduler_config_json").GetRawText());
        WriteTokenizer(Directory.CreateDirectory(Path.Combine(root, "tokenizer")).FullName);
        return root;
    }

    private static void Component(string root, string name, string configJson, string weights, string fileName)
    {
        var dir = Directory.CreateDirectory(Path.Combine(root, name)).FullName;
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        File.Copy(weights, Path.Combine(dir, fileName), overwrite: true);
    }

    private static void WriteJson(string path, object value) => File.WriteAllText(path, JsonSerializer.Serialize(value));

    /// <summary>A random CLIP text encoder state dict in the Hugging Face key layout.</summary>
    public static Dictionary<string, Tensor> RandomTextEncoder(int layers, int width, long seed)
    {
        using var g = new Generator((ulong)seed);
        Tensor R(params long[] shape) => torch.randn(shape, generator: g) * (shape.Length > 1 ? Math.Pow(shape[^1], -0.5) : 0.05);
        var d = new Dictionary<string, Tensor>
        {
            ["text_model.embeddings.token_embedding.weight"] = torch.randn(new long[] { 49408, width }, generator: g) * 0.02,
            ["text_model.embeddings.position_embedding.weight"] = torch.randn(new long[] { 77, width }, generator: g) * 0.01,
            ["text_model.embeddings.position_ids"] = torch.arange(77L).unsqueeze(0),
            ["text_model.final_layer_norm.weight"] = torch.ones(width),
            ["text_model.final_layer_norm.bias"] = torch.zeros(width),
        };
        for (int i = 0; i < layers; i++)
        {
            var p = $"text_model.encoder.layers.{i}.";
            foreach (var proj in new[] { "q_proj", "k_proj", "v_proj", "out_proj" })
            {
                d[p + $"self_attn.{proj}.weight"] = R(width, width);
                d[p + $"self_attn.{proj}.bias"] = R(width);
            }
            d[p + "layer_norm1.weight"] = torch.ones(width);
            d[p + "layer_norm1.bias"] = torch.zeros(width);
            d[p + "layer_norm2.weight"] = torch.ones(width);
            d[p + "layer_norm2.bias"] = torch.zeros(width);
            d[p + "mlp.fc1.weight"] = R(4 * width, width);
            d[p + "mlp.fc1.bias"] = R(4 * width);
            d[p + "mlp.fc2.weight"] = R(width, 4 * width);
            d[p + "mlp.fc2.bias"] = R(width);
        }
        return d;
    }

    /// <summary>
    /// CLIP's vocabulary as Hugging Face's vocab.json + merges.txt, built from OpenAI's bpe_simple_vocab_16e6.txt.gz the
    /// way simple_tokenizer.py builds it (GPT-2 byte alphabet, then with &lt;/w&gt;, then one entry per merge).
    /// </summary>
    private static void WriteTokenizer(string dir)
    {
        string text;
        using (var gz = new GZipStream(File.OpenRead(Path.Combine(Golden.Root, "clip", "bpe_simple_vocab_16e6.txt.gz")), CompressionMode.Decompress))
        using (var reader = new StreamReader(gz, Encoding.UTF8))
            text = reader.ReadToEnd();
        var lines = text.Split('\n');
        const int merges = 49152 - 256 - 2;
        var vocab = new List<string>();
        var bytes = new List<int>();
        for (int b = '!'; b <= '~'; b++) bytes.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) bytes.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) bytes.Add(b);
        var symbols = new List<string>(bytes.Select(b => ((char)b).ToString()));
        int extra = 0;
        for (int b = 0; b < 256; b++)
            if (!bytes.Contains(b)) symbols.Add(((char)(256 + extra++)).ToString());
        vocab.AddRange(symbols);
        vocab.AddRange(symbols.Select(s => s + "</w>"));
        var mergeLines = new List<string> { "#version: 0.2" };
        for (int i = 1; i <= merges; i++)
        {
            var parts = lines[i].Split(' ');
            mergeLines.Add(parts[0] + " " + parts[1]);
            vocab.Add(parts[0] + parts[1]);
        }
        vocab.Add("<|startoftext|>");
        vocab.Add("<|endoftext|>");
        var map = new Dictionary<string, int>();
        for (int i = 0; i < vocab.Count; i++) map[vocab[i]] = i;
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(map));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), string.Join("\n", mergeLines) + "\n");
    }
}
