using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Clip;

/// <summary>
/// Loads CLIP weights in either layout: the OpenAI state dict (<c>visual.transformer.resblocks.N.attn.in_proj_weight</c>,
/// ...) or Hugging Face <c>CLIPModel</c> / <c>CLIPTextModel</c> (<c>vision_model.encoder.layers.N.self_attn.q_proj</c>,
/// <c>text_model...</c>, <c>visual_projection</c>, <c>text_projection</c>), which is mapped to the OpenAI keys
/// (q, k, v merged into <c>in_proj</c>; projections transposed; <c>position_ids</c> buffers ignored).
/// </summary>
public static partial class ClipWeights
{
    /// <summary>Keys of the OpenAI TorchScript archive that <c>clip.build_model</c> deletes before loading.</summary>
    private static readonly HashSet<string> JitExtras = new(StringComparer.Ordinal) { "input_resolution", "context_length", "vocab_size" };

    /// <summary>Whether the keys are in the Hugging Face layout.</summary>
    public static bool IsHuggingFaceLayout(IEnumerable<string> keys) =>
        keys.Any(k => k.StartsWith("vision_model.", StringComparison.Ordinal) || k.StartsWith("text_model.", StringComparison.Ordinal));

    /// <summary>
    /// Maps a Hugging Face CLIP state dict to OpenAI keys. Unknown keys are kept as they are (and then reported as
    /// unexpected by the loader); <c>*.position_ids</c> buffers are dropped.
    /// </summary>
    /// <exception cref="ArgumentException">A layer has some of q/k/v but not all three.</exception>
    public static Dictionary<string, Tensor> HuggingFaceToOpenAI(IReadOnlyDictionary<string, Tensor> hf)
    {
        ArgumentNullException.ThrowIfNull(hf);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var qkv = new Dictionary<string, Tensor?[]>(StringComparer.Ordinal);
        foreach (var (key, value) in hf)
        {
            if (key.EndsWith("embeddings.position_ids", StringComparison.Ordinal)) continue;
            var m = LayerKey().Match(key);
            if (m.Success)
            {
                string prefix = (m.Groups[1].Value == "vision_model" ? "visual.transformer" : "transformer") + ".resblocks." + m.Groups[2].Value + ".";
                string rest = m.Groups[3].Value;
                var q = QkvKey().Match(rest);
                if (q.Success)
                {
                    string target = prefix + "attn.in_proj_" + q.Groups[2].Value;
                    if (!qkv.TryGetValue(target, out var parts)) qkv[target] = parts = new Tensor?[3];
                    parts["qkv".IndexOf(q.Groups[1].Value[0])] = value;
                    continue;
                }
                result[prefix + MapBlock(rest)] = value;
                continue;
            }
            switch (key)
            {
                case "logit_scale": result["logit_scale"] = value; break;
                case "text_model.embeddings.token_embedding.weight": result["token_embedding.weight"] = value; break;
                case "text_model.embeddings.position_embedding.weight": result["positional_embedding"] = value; break;
                case "text_model.final_layer_norm.weight": result["ln_final.weight"] = value; break;
                case "text_model.final_layer_norm.bias": result["ln_final.bias"] = value; break;
                case "text_projection.weight": result["text_projection"] = value.t(); break;
                case "vision_model.embeddings.class_embedding": result["visual.class_embedding"] = value; break;
                case "vision_model.embeddings.patch_embedding.weight": result["visual.conv1.weight"] = value; break;
                case "vision_model.embeddings.position_embedding.weight": result["visual.positional_embedding"] = value; break;
                case "vision_model.pre_layrnorm.weight": result["visual.ln_pre.weight"] = value; break;
                case "vision_model.pre_layrnorm.bias": result["visual.ln_pre.bias"] = value; break;
                case "vision_model.post_layernorm.weight": result["visual.ln_post.weight"] = value; break;
                case "vision_model.post_layernorm.bias": result["visual.ln_post.bias"] = value; break;
                case "visual_projection.weight": result["visual.proj"] = value.t(); break;
                default: result[key] = value; break;
            }
        }
        foreach (var (target, parts) in qkv)
        {
            if (parts.Any(p => p is null))
                throw new ArgumentException($"Hugging Face CLIP weights have only some of q_proj/k_proj/v_proj for '{target}'.");
            result[target] = torch.cat(parts!, 0);
        }
        return result;
    }

    private static string MapBlock(string rest) => rest
        .Replace("self_attn.out_proj.", "attn.out_proj.", StringComparison.Ordinal)
        .Replace("layer_norm1.", "ln_1.", StringComparison.Ordinal)
        .Replace("layer_norm2.", "ln_2.", StringComparison.Ordinal)
        .Replace("mlp.fc1.", "mlp.c_fc.", StringComparison.Ordinal)
        .Replace("mlp.fc2.", "mlp.c_proj.", StringComparison.Ordinal);

    [GeneratedRegex(@"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)$")]
    private static partial Regex LayerKey();

    [GeneratedRegex(@"^self_attn\.([qkv])_proj\.(weight|bias)$")]
    private static partial Regex QkvKey();

    /// <summary>Converts either layout to OpenAI keys, dropping <c>position_ids</c> and the TorchScript extras.</summary>
    public static Dictionary<string, Tensor> ToOpenAI(IReadOnlyDictionary<string, Tensor> dict)
    {
        var d = IsHuggingFaceLayout(dict.Keys) ? HuggingFaceToOpenAI(dict) : new Dictionary<string, Tensor>(dict, StringComparer.Ordinal);
        foreach (var k in JitExtras) d.Remove(k);
        return d;
    }

    /// <summary>Loads a state dict (either layout) into <paramref name="model"/>, strictly, naming every bad key.</summary>
    /// <exception cref="ZMagic.Core.IO.StateDictMismatchException">Missing, unexpected or mis-shaped keys.</exception>
    public static void Load(ClipModel model, IReadOnlyDictionary<string, Tensor> dict, string source = "state dict")
    {
        ArgumentNullException.ThrowIfNull(model);
        WeightLoading.Load(model, ToOpenAI(dict), source);
    }

    /// <summary>
    /// Loads a text tower from a full CLIP or a text-only state dict (either layout). The image tower's keys
    /// (<c>visual.*</c>), the logit scale and, for a model without projection, <c>text_projection</c> are ignored.
    /// </summary>
    /// <exception cref="ZMagic.Core.IO.StateDictMismatchException">Text keys are missing or mis-shaped (e.g. a vision-only file).</exception>
    public static void Load(ClipTextModel model, IReadOnlyDictionary<string, Tensor> dict, string source = "state dict")
    {
        ArgumentNullException.ThrowIfNull(model);
        bool hasProjection = model.state_dict().ContainsKey("text_projection");
        var ignore = hasProjection ? new[] { "visual.*", "logit_scale" } : new[] { "visual.*", "logit_scale", "text_projection" };
        WeightLoading.Load(model, ToOpenAI(dict), source, ignore);
    }

    /// <summary>
    /// Builds and loads a full CLIP from <paramref name="path"/>: a Hugging Face folder (<c>config.json</c> plus
    /// <c>model.safetensors</c> or <c>pytorch_model.bin</c>) or an OpenAI-layout state-dict file (configuration
    /// inferred from the shapes as <c>clip.build_model</c> does, unless <paramref name="config"/> is given).
    /// </summary>
    public static ClipModel LoadModel(string path, ClipConfig? config = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string source = path;
        Dictionary<string, Tensor> raw;
        if (Directory.Exists(path))
        {
            var cfgPath = Path.Combine(path, "config.json");
            var file = new[] { "model.safetensors", "pytorch_model.bin" }.Select(f => Path.Combine(path, f)).FirstOrDefault(File.Exists)
                ?? throw new FileNotFoundException($"'{path}' has neither model.safetensors nor pytorch_model.bin.");
            if (config is null && File.Exists(cfgPath)) config = ClipConfig.FromHuggingFaceConfigJson(cfgPath);
            raw = WeightLoading.ReadFile(file);
            source = file;
        }
        else
        {
            raw = WeightLoading.ReadFile(path);
        }
        try
        {
            var sd = ToOpenAI(raw);
            config ??= ClipConfig.FromOpenAIStateDict(sd, source);
            var model = new ClipModel(config);
            WeightLoading.Load(model, sd, source);
            return model;
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    /// <summary>Builds and loads a text tower (see <see cref="Load(ClipTextModel, IReadOnlyDictionary{string, Tensor}, string)"/>) from a file or HF folder.</summary>
    public static ClipTextModel LoadTextModel(string path, ClipConfig config, bool withProjection = true)
    {
        ArgumentNullException.ThrowIfNull(path);
        string file = path;
        if (Directory.Exists(path))
            file = new[] { "model.safetensors", "pytorch_model.bin" }.Select(f => Path.Combine(path, f)).FirstOrDefault(File.Exists)
                ?? throw new FileNotFoundException($"'{path}' has neither model.safetensors nor pytorch_model.bin.");
        var raw = WeightLoading.ReadFile(file);
        try
        {
            var model = new ClipTextModel(config, withProjection);
            Load(model, raw, file);
            return model;
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }
}
