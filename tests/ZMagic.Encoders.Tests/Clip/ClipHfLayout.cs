using System.Text.Json;
using System.Text.RegularExpressions;
using ZMagic.Encoders.Clip;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Clip;

/// <summary>
/// Test-side writer of the Hugging Face CLIPModel layout (as transformers' convert_clip_original_pytorch_to_hf.py
/// produces it) from an OpenAI state dict, so the loader's key map can be checked without HF files.
/// </summary>
internal static class ClipHfLayout
{
    public static Dictionary<string, Tensor> ToHuggingFace(IDictionary<string, Tensor> sd, bool withPositionIds = true)
    {
        var hf = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, v) in sd)
        {
            var m = Regex.Match(key, @"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$");
            if (m.Success)
            {
                string p = (m.Groups[1].Success ? "vision_model" : "text_model") + ".encoder.layers." + m.Groups[2].Value + ".";
                string rest = m.Groups[3].Value;
                if (rest.StartsWith("attn.in_proj_"))
                {
                    string kind = rest["attn.in_proj_".Length..];
                    var chunks = v.chunk(3, 0);
                    hf[p + "self_attn.q_proj." + kind] = chunks[0].clone();
                    hf[p + "self_attn.k_proj." + kind] = chunks[1].clone();
                    hf[p + "self_attn.v_proj." + kind] = chunks[2].clone();
                    continue;
                }
                rest = rest.Replace("attn.out_proj.", "self_attn.out_proj.").Replace("ln_1.", "layer_norm1.").Replace("ln_2.", "layer_norm2.")
                    .Replace("mlp.c_fc.", "mlp.fc1.").Replace("mlp.c_proj.", "mlp.fc2.");
                hf[p + rest] = v;
                continue;
            }
            string k = key switch
            {
                "logit_scale" => "logit_scale",
                "token_embedding.weight" => "text_model.embeddings.token_embedding.weight",
                "positional_embedding" => "text_model.embeddings.position_embedding.weight",
                "ln_final.weight" => "text_model.final_layer_norm.weight",
                "ln_final.bias" => "text_model.final_layer_norm.bias",
                "text_projection" => "text_projection.weight",
                "visual.class_embedding" => "vision_model.embeddings.class_embedding",
                "visual.conv1.weight" => "vision_model.embeddings.patch_embedding.weight",
                "visual.positional_embedding" => "vision_model.embeddings.position_embedding.weight",
                "visual.ln_pre.weight" => "vision_model.pre_layrnorm.weight",
                "visual.ln_pre.bias" => "vision_model.pre_layrnorm.bias",
                "visual.ln_post.weight" => "vision_model.post_layernorm.weight",
                "visual.ln_post.bias" => "vision_model.post_layernorm.bias",
                "visual.proj" => "visual_projection.weight",
                _ => throw new InvalidOperationException("unmapped key " + key),
            };
            hf[k] = key is "text_projection" or "visual.proj" ? v.t().contiguous() : v;
        }
        if (withPositionIds)
        {
            hf["text_model.embeddings.position_ids"] = arange(sd["positional_embedding"].shape[0]).unsqueeze(0);
            hf["vision_model.embeddings.position_ids"] = arange(sd["visual.positional_embedding"].shape[0]).unsqueeze(0);
        }
        return hf;
    }

    /// <summary>A transformers-style config.json for <paramref name="c"/>.</summary>
    public static string ConfigJson(ClipConfig c) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["architectures"] = new[] { "CLIPModel" },
        ["projection_dim"] = c.EmbedDim,
        ["text_config"] = new Dictionary<string, object>
        {
            ["hidden_size"] = c.TransformerWidth, ["intermediate_size"] = 4 * c.TransformerWidth, ["num_attention_heads"] = c.TransformerHeads,
            ["num_hidden_layers"] = c.TransformerLayers, ["max_position_embeddings"] = c.ContextLength, ["vocab_size"] = c.VocabSize,
            ["hidden_act"] = "quick_gelu",
        },
        ["vision_config"] = new Dictionary<string, object>
        {
            ["hidden_size"] = c.VisionWidth, ["intermediate_size"] = 4 * c.VisionWidth, ["num_attention_heads"] = c.VisionHeads,
            ["num_hidden_layers"] = c.VisionLayers, ["image_size"] = c.ImageResolution, ["patch_size"] = c.VisionPatchSize,
            ["hidden_act"] = "quick_gelu",
        },
    });
}
