using System.Text.Json;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Encoders.Clip;
using ZMagic.Models.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.StableDiffusion;

/// <summary>
/// The components of a Stable Diffusion 1.x (or 2.x-shaped) model: UNet, VAE, CLIP text encoder, tokenizer and
/// scheduler config, loaded from a diffusers folder or a single-file LDM checkpoint.
/// </summary>
public sealed class StableDiffusionModel : IDisposable
{
    private StableDiffusionModel(UNet2DConditionModel unet, AutoencoderKL vae, ClipTextModel textEncoder, ClipTokenizer tokenizer, SdSchedulerConfig scheduler)
    {
        UNet = unet;
        Vae = vae;
        TextEncoder = textEncoder;
        Tokenizer = tokenizer;
        SchedulerConfig = scheduler;
        foreach (var m in new nn.Module[] { unet, vae, textEncoder })
        {
            m.eval();
            foreach (var p in m.parameters()) p.requires_grad_(false);
        }
    }

    /// <summary>The denoising UNet.</summary>
    public UNet2DConditionModel UNet { get; }

    /// <summary>The latent autoencoder.</summary>
    public AutoencoderKL Vae { get; }

    /// <summary>The CLIP text tower (no projection; its final hidden states condition the UNet).</summary>
    public ClipTextModel TextEncoder { get; }

    /// <summary>The CLIP tokenizer (SD 1.x pads with the end token).</summary>
    public ClipTokenizer Tokenizer { get; }

    /// <summary>The scheduler settings.</summary>
    public SdSchedulerConfig SchedulerConfig { get; }

    /// <summary>Components a diffusers folder must have.</summary>
    public static IReadOnlyList<string> RequiredComponents { get; } = new[] { "unet", "vae", "text_encoder", "tokenizer", "scheduler" };

    /// <summary>
    /// Loads a diffusers folder: <c>model_index.json</c>, and for each component its <c>config.json</c> and weights
    /// (<c>diffusion_pytorch_model[.fp16].safetensors</c> or <c>.bin</c>; the text encoder's <c>model[.fp16].safetensors</c>
    /// or <c>pytorch_model.bin</c>); the tokenizer's <c>vocab.json</c> and <c>merges.txt</c>; the scheduler config.
    /// fp16 weights become float32. Every mismatch between a config and its weights is reported with the keys.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder or a component folder is missing.</exception>
    /// <exception cref="FileNotFoundException">A config, weights or tokenizer file is missing.</exception>
    /// <exception cref="StateDictMismatchException">A component's weights do not fit its config.</exception>
    public static StableDiffusionModel LoadDiffusersFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Stable Diffusion folder '{folder}' does not exist.");
        var index = Path.Combine(folder, "model_index.json");
        if (!File.Exists(index)) throw new FileNotFoundException($"'{folder}' is not a diffusers folder: model_index.json is missing.", index);
        var missing = RequiredComponents.Where(c => !Directory.Exists(Path.Combine(folder, c))).ToList();
        if (missing.Count > 0)
            throw new DirectoryNotFoundException($"Diffusers folder '{folder}' is incomplete: missing component folder(s) {string.Join(", ", missing)}.");

        var unetConfig = UNet2DConditionConfig.FromJson(ReadJson(Path.Combine(folder, "unet", "config.json")), Path.Combine(folder, "unet", "config.json"));
        var vaeConfig = AutoencoderKLConfig.FromJson(ReadJson(Path.Combine(folder, "vae", "config.json")), Path.Combine(folder, "vae", "config.json"));
        var textConfigPath = Path.Combine(folder, "text_encoder", "config.json");
        var textConfig = TextConfigFromJson(ReadJson(textConfigPath), textConfigPath);
        var schedulerPath = Path.Combine(folder, "scheduler", "scheduler_config.json");
        var scheduler = SdSchedulerConfig.FromJson(ReadJson(schedulerPath), schedulerPath);
        var tokenizer = ClipTokenizer.FromVocabAndMerges(
            Path.Combine(folder, "tokenizer", "vocab.json"), Path.Combine(folder, "tokenizer", "merges.txt"),
            new ClipTokenizerOptions(textConfig.ContextLength, ClipPadding.EndOfText, Truncate: false));

        UNet2DConditionModel? unet = null;
        AutoencoderKL? vae = null;
        ClipTextModel? text = null;
        try
        {
            unet = new UNet2DConditionModel(unetConfig);
            StateDictLoader.LoadFile(unet, ComponentWeights(folder, "unet", "diffusion_pytorch_model"));
            vae = new AutoencoderKL(vaeConfig);
            StateDictLoader.LoadFile(vae, ComponentWeights(folder, "vae", "diffusion_pytorch_model"),
                new StateDictLoadOptions { KeyAliases = AutoencoderKL.LegacyKeyAliases });
            text = new ClipTextModel(textConfig, withProjection: false);
            var textFile = ComponentWeights(folder, "text_encoder", "model", "pytorch_model.bin");
            var textDict = Checkpoint.LoadStateDict(textFile);
            try { ClipWeights.Load(text, textDict, textFile); }
            finally { foreach (var t in textDict.Values) t.Dispose(); }
            return new StableDiffusionModel(unet, vae, text, tokenizer, scheduler);
        }
        catch
        {
            unet?.Dispose();
            vae?.Dispose();
            text?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads an original CompVis/LDM single-file checkpoint (<c>.ckpt</c> or <c>.safetensors</c> with
    /// <c>model.diffusion_model.*</c>, <c>first_stage_model.*</c>, <c>cond_stage_model.transformer.*</c>) through
    /// <see cref="LdmKeyMap"/>, with the architecture given by configs (SD 1.5 by default) and the tokenizer given
    /// separately (the file holds none).
    /// </summary>
    public static StableDiffusionModel LoadSingleFile(string path, ClipTokenizer tokenizer, UNet2DConditionConfig? unetConfig = null,
        AutoencoderKLConfig? vaeConfig = null, ClipConfig? textConfig = null, SdSchedulerConfig? scheduler = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        unetConfig ??= UNet2DConditionConfig.Sd15;
        vaeConfig ??= AutoencoderKLConfig.Sd15;
        textConfig ??= Sd15TextConfig;
        var all = Checkpoint.LoadStateDict(path);
        UNet2DConditionModel? unet = null;
        AutoencoderKL? vae = null;
        ClipTextModel? text = null;
        try
        {
            if (!LdmKeyMap.IsLdmLayout(all.Keys))
                throw new CheckpointFormatException(path, $"not a single-file LDM checkpoint: no '{LdmKeyMap.UNetPrefix}*' keys (first keys: {string.Join(", ", all.Keys.Take(5))}).");
            unet = new UNet2DConditionModel(unetConfig);
            StateDictLoader.Load(unet, LdmKeyMap.UNet(all, unetConfig), new StateDictLoadOptions { SourceName = path + " (UNet)" });
            vae = new AutoencoderKL(vaeConfig);
            StateDictLoader.Load(vae, LdmKeyMap.Vae(all, vaeConfig), new StateDictLoadOptions { SourceName = path + " (VAE)" });
            text = new ClipTextModel(textConfig, withProjection: false);
            ClipWeights.Load(text, LdmKeyMap.TextEncoder(all), path + " (text encoder)");
            return new StableDiffusionModel(unet, vae, text, tokenizer, scheduler ?? SdSchedulerConfig.Sd15);
        }
        catch
        {
            unet?.Dispose();
            vae?.Dispose();
            text?.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in all.Values) t.Dispose();
        }
    }

    /// <summary>SD 1.x's text encoder (CLIP ViT-L/14 text tower: width 768, 12 layers, 12 heads).</summary>
    public static ClipConfig Sd15TextConfig { get; } = ClipConfig.VitL14;

    /// <summary>
    /// The text encoder's final hidden states [1, 77, D] of <paramref name="prompt"/> (no gradient).
    /// </summary>
    /// <exception cref="ArgumentException">The prompt has more than 75 tokens.</exception>
    public Tensor EncodePrompt(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        using var _ = no_grad();
        using var tokens = Tokenizer.Tokenize(prompt);
        var device = TextEncoder.parameters().First().device;
        return TextEncoder.EncodeTextHidden(tokens.to(device));
    }

    /// <summary>Moves every component to <paramref name="device"/> and <paramref name="dtype"/> (e.g. float16 on CUDA).</summary>
    public void To(Device device, ScalarType dtype = ScalarType.Float32)
    {
        UNet.to(device, dtype);
        Vae.to(device, dtype);
        TextEncoder.to(device, dtype);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        UNet.Dispose();
        Vae.Dispose();
        TextEncoder.Dispose();
    }

    /// <summary>Reads a Hugging Face <c>CLIPTextConfig</c> (the SD <c>text_encoder/config.json</c>).</summary>
    public static ClipConfig TextConfigFromJson(JsonElement json, string source)
    {
        int Int(string name, int def) => json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : def;
        var act = json.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String ? a.GetString() : "quick_gelu";
        if (act != "quick_gelu")
            throw new FormatException($"{source}: hidden_act '{act}' is not supported (SD 1.x's CLIP text encoder uses quick_gelu).");
        int width = Int("hidden_size", 768);
        int inter = Int("intermediate_size", 4 * width);
        if (inter != 4 * width) throw new FormatException($"{source}: intermediate_size {inter} is not 4 x hidden_size {width}.");
        // The vision fields are unused by a text-only tower; ViT-L/14's keep the config valid.
        var v = ClipConfig.VitL14;
        return new ClipConfig(Int("projection_dim", v.EmbedDim), v.ImageResolution, v.VisionLayers, v.VisionWidth, v.VisionPatchSize,
            Int("max_position_embeddings", 77), Int("vocab_size", 49408), width, Int("num_attention_heads", 12), Int("num_hidden_layers", 12));
    }

    private static JsonElement ReadJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file '{path}' is missing.", path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return doc.RootElement.Clone();
        }
        catch (JsonException ex)
        {
            throw new FormatException($"{path}: not valid JSON ({ex.Message}).", ex);
        }
    }

    private static string ComponentWeights(string folder, string component, string stem, string? binName = null)
    {
        var dir = Path.Combine(folder, component);
        var candidates = new[] { stem + ".safetensors", stem + ".fp16.safetensors", binName ?? stem + ".bin" };
        return candidates.Select(c => Path.Combine(dir, c)).FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"Component '{component}' in '{folder}' has no weights (looked for {string.Join(", ", candidates)}).", Path.Combine(dir, candidates[0]));
    }
}
