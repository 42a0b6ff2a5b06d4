using System.Text.Json;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Clip;

/// <summary>
/// The constructor arguments of openai/CLIP's <c>CLIP</c> class (ViT image tower), with the same names and meaning.
/// </summary>
/// <param name="EmbedDim">Joint embedding size (<c>embed_dim</c>; 512 for ViT-B/16, 768 for ViT-L/14).</param>
/// <param name="ImageResolution">Input side in pixels (<c>image_resolution</c>).</param>
/// <param name="VisionLayers">Residual blocks of the image transformer.</param>
/// <param name="VisionWidth">Image transformer width; CLIP uses <c>width / 64</c> heads.</param>
/// <param name="VisionPatchSize">Patch side (the stride of <c>visual.conv1</c>).</param>
/// <param name="ContextLength">Text positions (77).</param>
/// <param name="VocabSize">Token vocabulary (49408).</param>
/// <param name="TransformerWidth">Text transformer width.</param>
/// <param name="TransformerHeads">Text attention heads.</param>
/// <param name="TransformerLayers">Text residual blocks.</param>
public sealed record ClipConfig(
    int EmbedDim,
    int ImageResolution,
    int VisionLayers,
    int VisionWidth,
    int VisionPatchSize,
    int ContextLength,
    int VocabSize,
    int TransformerWidth,
    int TransformerHeads,
    int TransformerLayers)
{
    /// <summary>Image attention heads; CLIP fixes it to <c>VisionWidth / 64</c> (at least 1).</summary>
    public int VisionHeads { get; init; } = Math.Max(1, VisionWidth / 64);

    /// <summary>Patches per side.</summary>
    public int Grid => ImageResolution / VisionPatchSize;

    /// <summary>ViT-B/16 (FreeDoM's CLIP): 149.6M parameters, 302 state-dict entries.</summary>
    public static ClipConfig VitB16 { get; } = new(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12);

    /// <summary>ViT-L/14: 427.6M parameters, 446 state-dict entries.</summary>
    public static ClipConfig VitL14 { get; } = new(768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12);

    /// <summary>Checks that the numbers describe a buildable model.</summary>
    /// <exception cref="ArgumentException">A size is not positive, or a width is not divisible by its heads.</exception>
    public void Validate()
    {
        foreach (var (name, v) in new[] { (nameof(EmbedDim), EmbedDim), (nameof(ImageResolution), ImageResolution), (nameof(VisionLayers), VisionLayers),
                     (nameof(VisionWidth), VisionWidth), (nameof(VisionPatchSize), VisionPatchSize), (nameof(ContextLength), ContextLength),
                     (nameof(VocabSize), VocabSize), (nameof(TransformerWidth), TransformerWidth), (nameof(TransformerHeads), TransformerHeads),
                     (nameof(TransformerLayers), TransformerLayers), (nameof(VisionHeads), VisionHeads) })
            if (v <= 0) throw new ArgumentException($"ClipConfig.{name} must be positive; got {v}.");
        if (ImageResolution % VisionPatchSize != 0)
            throw new ArgumentException($"ClipConfig.ImageResolution {ImageResolution} is not a multiple of VisionPatchSize {VisionPatchSize}.");
        if (VisionWidth % VisionHeads != 0) throw new ArgumentException($"VisionWidth {VisionWidth} is not divisible by VisionHeads {VisionHeads}.");
        if (TransformerWidth % TransformerHeads != 0)
            throw new ArgumentException($"TransformerWidth {TransformerWidth} is not divisible by TransformerHeads {TransformerHeads}.");
    }

    /// <summary>Reads the constructor arguments from a JSON object with openai/CLIP's names (<c>embed_dim</c>, ...).</summary>
    public static ClipConfig FromConstructorJson(JsonElement c)
    {
        int Get(string name) => c.TryGetProperty(name, out var v) ? v.GetInt32()
            : throw new ArgumentException($"CLIP constructor JSON lacks '{name}'.");
        return new ClipConfig(Get("embed_dim"), Get("image_resolution"), Get("vision_layers"), Get("vision_width"), Get("vision_patch_size"),
            Get("context_length"), Get("vocab_size"), Get("transformer_width"), Get("transformer_heads"), Get("transformer_layers"));
    }

    /// <summary>
    /// Infers the configuration from an OpenAI-layout state dict as <c>clip.build_model</c> does (text heads =
    /// width / 64, as there).
    /// </summary>
    /// <exception cref="ArgumentException">A key that build_model reads is missing (e.g. a ResNet CLIP or another model).</exception>
    public static ClipConfig FromOpenAIStateDict(IReadOnlyDictionary<string, Tensor> sd, string source = "state dict")
    {
        Tensor Need(string key) => sd.TryGetValue(key, out var t) ? t
            : throw new ArgumentException($"{source}: cannot infer the CLIP configuration: key '{key}' is missing " +
                                          "(only ViT CLIP models in the OpenAI key layout are supported here).");
        var conv = Need("visual.conv1.weight");
        int visionWidth = (int)conv.shape[0];
        int patch = (int)conv.shape[^1];
        int visionLayers = sd.Keys.Count(k => k.StartsWith("visual.", StringComparison.Ordinal) && k.EndsWith(".attn.in_proj_weight", StringComparison.Ordinal));
        int grid = (int)Math.Round(Math.Sqrt(Need("visual.positional_embedding").shape[0] - 1));
        int embedDim = (int)Need("text_projection").shape[1];
        int context = (int)Need("positional_embedding").shape[0];
        int vocab = (int)Need("token_embedding.weight").shape[0];
        int width = (int)Need("ln_final.weight").shape[0];
        int layers = sd.Keys.Where(k => k.StartsWith("transformer.resblocks.", StringComparison.Ordinal))
            .Select(k => k.Split('.')[2]).Distinct().Count();
        return new ClipConfig(embedDim, patch * grid, visionLayers, visionWidth, patch, context, vocab, width, Math.Max(1, width / 64), layers);
    }

    /// <summary>
    /// Reads a Hugging Face <c>CLIPModel</c> <c>config.json</c> (<c>text_config</c>, <c>vision_config</c>,
    /// <c>projection_dim</c>), using transformers' defaults for absent fields.
    /// </summary>
    /// <exception cref="ArgumentException">The MLP size is not 4x the width (CLIP's fixed ratio), or the activation is not quick_gelu.</exception>
    public static ClipConfig FromHuggingFaceConfigJson(string configJsonPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(configJsonPath));
        var root = doc.RootElement;
        JsonElement Section(string name) => root.TryGetProperty(name, out var s) && s.ValueKind == JsonValueKind.Object ? s : default;
        static int Int(JsonElement e, string name, int dflt) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : dflt;
        static string Str(JsonElement e, string name, string dflt) =>
            e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : dflt;
        var text = Section("text_config");
        var vision = Section("vision_config");
        int tw = Int(text, "hidden_size", 512), vw = Int(vision, "hidden_size", 768);
        foreach (var (sec, w, name) in new[] { (text, tw, "text_config"), (vision, vw, "vision_config") })
        {
            int inter = Int(sec, "intermediate_size", 4 * w);
            if (inter != 4 * w) throw new ArgumentException($"{configJsonPath}: {name}.intermediate_size {inter} is not 4 x hidden_size {w}; only CLIP's 4x MLP is supported.");
            var act = Str(sec, "hidden_act", "quick_gelu");
            if (act != "quick_gelu") throw new ArgumentException($"{configJsonPath}: {name}.hidden_act '{act}' is not supported (OpenAI CLIP uses quick_gelu).");
        }
        return new ClipConfig(
            Int(root, "projection_dim", 512), Int(vision, "image_size", 224), Int(vision, "num_hidden_layers", 12), vw, Int(vision, "patch_size", 32),
            Int(text, "max_position_embeddings", 77), Int(text, "vocab_size", 49408), tw, Int(text, "num_attention_heads", 8), Int(text, "num_hidden_layers", 12))
        { VisionHeads = Int(vision, "num_attention_heads", 12) };
    }
}
