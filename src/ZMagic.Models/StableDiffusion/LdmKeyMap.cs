using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace ZMagic.Models.StableDiffusion;

/// <summary>
/// Maps the original CompVis/LDM single-file Stable Diffusion checkpoint layout (<c>model.diffusion_model.*</c>,
/// <c>first_stage_model.*</c>, <c>cond_stage_model.transformer.*</c>) to diffusers keys, as diffusers'
/// <c>convert_from_ckpt.py</c> does: UNet input/middle/output blocks to down/mid/up blocks, VAE down/mid/up to
/// *_blocks (decoder levels reversed), and the VAE mid attention's 1x1-conv q/k/v/proj_out squeezed to linear weights.
/// </summary>
public static partial class LdmKeyMap
{
    /// <summary>Prefix of UNet keys in an LDM checkpoint.</summary>
    public const string UNetPrefix = "model.diffusion_model.";
    /// <summary>Prefix of VAE keys in an LDM checkpoint.</summary>
    public const string VaePrefix = "first_stage_model.";
    /// <summary>Prefix of text-encoder keys in an LDM checkpoint.</summary>
    public const string TextPrefix = "cond_stage_model.transformer.";

    /// <summary>Whether the keys look like an LDM single-file checkpoint.</summary>
    public static bool IsLdmLayout(IEnumerable<string> keys) => keys.Any(k => k.StartsWith(UNetPrefix, StringComparison.Ordinal));

    /// <summary>The UNet part of an LDM checkpoint with diffusers keys.</summary>
    /// <param name="checkpoint">The whole checkpoint.</param>
    /// <param name="config">The UNet config (layers per block and which levels have attention decide the mapping).</param>
    public static Dictionary<string, Tensor> UNet(IReadOnlyDictionary<string, Tensor> checkpoint, UNet2DConditionConfig config)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(config);
        int per = config.LayersPerBlock + 1;
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (fullKey, value) in checkpoint)
        {
            if (!fullKey.StartsWith(UNetPrefix, StringComparison.Ordinal)) continue;
            var key = fullKey[UNetPrefix.Length..];
            string? mapped = key switch
            {
                _ when key.StartsWith("time_embed.0.", StringComparison.Ordinal) => "time_embedding.linear_1." + key[13..],
                _ when key.StartsWith("time_embed.2.", StringComparison.Ordinal) => "time_embedding.linear_2." + key[13..],
                _ when key.StartsWith("input_blocks.0.0.", StringComparison.Ordinal) => "conv_in." + key[17..],
                _ when key.StartsWith("out.0.", StringComparison.Ordinal) => "conv_norm_out." + key[6..],
                _ when key.StartsWith("out.2.", StringComparison.Ordinal) => "conv_out." + key[6..],
                _ => null,
            };
            if (mapped is null && MiddleKey().Match(key) is { Success: true } mid)
            {
                string rest = mid.Groups[2].Value;
                mapped = mid.Groups[1].Value switch
                {
                    "0" => "mid_block.resnets.0." + Resnet(rest),
                    "1" => "mid_block.attentions.0." + rest,
                    _ => "mid_block.resnets.1." + Resnet(rest),
                };
            }
            if (mapped is null && BlockKey().Match(key) is { Success: true } m)
            {
                int i = int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture);
                int sub = int.Parse(m.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture);
                string rest = m.Groups[4].Value;
                mapped = m.Groups[1].Value == "input_blocks" ? InputBlock(i, sub, rest, per) : OutputBlock(i, sub, rest, per);
            }
            if (mapped is null)
            {
                result[fullKey] = value; // not a UNet key this port knows: the loader reports it as unexpected
                continue;
            }
            result[mapped] = value;
        }
        return result;
    }

    private static string InputBlock(int i, int sub, string rest, int per)
    {
        int block = (i - 1) / per, layer = (i - 1) % per;
        if (rest.StartsWith("op.", StringComparison.Ordinal)) return $"down_blocks.{block}.downsamplers.0.conv.{rest[3..]}";
        return sub == 0 ? $"down_blocks.{block}.resnets.{layer}.{Resnet(rest)}" : $"down_blocks.{block}.attentions.{layer}.{rest}";
    }

    private static string OutputBlock(int i, int sub, string rest, int per)
    {
        int block = i / per, layer = i % per;
        if (sub == 0) return $"up_blocks.{block}.resnets.{layer}.{Resnet(rest)}";
        if (rest.StartsWith("conv.", StringComparison.Ordinal)) return $"up_blocks.{block}.upsamplers.0.{rest}";
        return $"up_blocks.{block}.attentions.{layer}.{rest}";
    }

    private static string Resnet(string rest) => rest
        .Replace("in_layers.0.", "norm1.", StringComparison.Ordinal)
        .Replace("in_layers.2.", "conv1.", StringComparison.Ordinal)
        .Replace("out_layers.0.", "norm2.", StringComparison.Ordinal)
        .Replace("out_layers.3.", "conv2.", StringComparison.Ordinal)
        .Replace("emb_layers.1.", "time_emb_proj.", StringComparison.Ordinal)
        .Replace("skip_connection.", "conv_shortcut.", StringComparison.Ordinal);

    [GeneratedRegex(@"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.+)$")]
    private static partial Regex BlockKey();

    [GeneratedRegex(@"^middle_block\.(\d+)\.(.+)$")]
    private static partial Regex MiddleKey();

    /// <summary>The VAE part of an LDM checkpoint with diffusers keys.</summary>
    public static Dictionary<string, Tensor> Vae(IReadOnlyDictionary<string, Tensor> checkpoint, AutoencoderKLConfig config)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(config);
        int levels = config.BlockOutChannels.Count;
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (fullKey, value) in checkpoint)
        {
            if (!fullKey.StartsWith(VaePrefix, StringComparison.Ordinal)) continue;
            var key = fullKey[VaePrefix.Length..];
            var v = value;
            string mapped = key
                .Replace("encoder.norm_out.", "encoder.conv_norm_out.", StringComparison.Ordinal)
                .Replace("decoder.norm_out.", "decoder.conv_norm_out.", StringComparison.Ordinal)
                .Replace(".nin_shortcut.", ".conv_shortcut.", StringComparison.Ordinal)
                .Replace(".mid.block_1.", ".mid_block.resnets.0.", StringComparison.Ordinal)
                .Replace(".mid.block_2.", ".mid_block.resnets.1.", StringComparison.Ordinal);
            var attn = VaeAttn().Match(mapped);
            if (attn.Success)
            {
                string part = attn.Groups[1].Value, name = attn.Groups[2].Value, p = attn.Groups[3].Value;
                string target = name switch { "norm" => "group_norm", "q" => "to_q", "k" => "to_k", "v" => "to_v", _ => "to_out.0" };
                mapped = $"{part}.mid_block.attentions.0.{target}.{p}";
                if (name != "norm" && p == "weight" && v.dim() == 4) v = v.squeeze(-1).squeeze(-1);
            }
            var down = VaeDown().Match(mapped);
            // "encoder.down.1.block.0.norm1.weight" -> "encoder.down_blocks.1.resnets.0.norm1.weight";
            // "encoder.down.0.downsample.conv.weight" -> "encoder.down_blocks.0.downsamplers.0.conv.weight".
            if (down.Success)
                mapped = $"encoder.down_blocks.{down.Groups[1].Value}." + (down.Groups[2].Value == "block" ? "resnets" : "downsamplers.0")
                    + down.Groups[3].Value + down.Groups[4].Value;
            var up = VaeUp().Match(mapped);
            if (up.Success)
            {
                // The LDM decoder numbers levels from the highest resolution; diffusers from the deepest.
                int level = levels - 1 - int.Parse(up.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                mapped = $"decoder.up_blocks.{level}." + (up.Groups[2].Value == "block" ? "resnets" : "upsamplers.0")
                    + up.Groups[3].Value + up.Groups[4].Value;
            }
            result[mapped] = v;
        }
        return result;
    }

    [GeneratedRegex(@"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$")]
    private static partial Regex VaeAttn();

    [GeneratedRegex(@"^encoder\.down\.(\d+)\.(block|downsample)(\.\d+|)(\..+)$")]
    private static partial Regex VaeDown();

    [GeneratedRegex(@"^decoder\.up\.(\d+)\.(block|upsample)(\.\d+|)(\..+)$")]
    private static partial Regex VaeUp();

    /// <summary>
    /// The text-encoder part of an LDM checkpoint in the Hugging Face layout (<c>text_model.*</c>); older files store
    /// it without the <c>text_model.</c> level, which is added.
    /// </summary>
    public static Dictionary<string, Tensor> TextEncoder(IReadOnlyDictionary<string, Tensor> checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (fullKey, value) in checkpoint)
        {
            if (!fullKey.StartsWith(TextPrefix, StringComparison.Ordinal)) continue;
            var key = fullKey[TextPrefix.Length..];
            result[key.StartsWith("text_model.", StringComparison.Ordinal) ? key : "text_model." + key] = value;
        }
        return result;
    }
}
