using System.Text.Json;
using TorchSharp;
using ZMagic.Models.Adm;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Models;

/// <summary>
/// Architecture and diffusion settings of a pixel-space backbone. The concrete records are
/// <see cref="DdpmUNetConfig"/> (ermongroup / SDEdit DDPM UNet) and <see cref="AdmUNetConfig"/> (OpenAI guided-diffusion UNetModel).
/// </summary>
public abstract record BackboneConfig
{
    /// <summary>Short architecture tag: <c>"ddpm"</c> or <c>"adm"</c>.</summary>
    public abstract string Architecture { get; }

    /// <summary>Builds the network with freshly initialised weights on <paramref name="device"/> (CPU by default; "meta" allocates nothing).</summary>
    public abstract nn.Module CreateModule(Device? device = null);

    /// <summary>Parameter elements of the network (state-dict floats); built on the meta device, so nothing is allocated.</summary>
    public long CountParameters()
    {
        using var m = CreateModule(torch.META);
        return m.state_dict().Values.Sum(t => t.numel());
    }

    /// <summary>Builds a denoiser (network plus schedule) with freshly initialised weights.</summary>
    public abstract BackboneDenoiser CreateDenoiser(Device? device = null);

    /// <summary>Builds a denoiser and loads a checkpoint into it (see <see cref="BackboneDenoiser"/> loading rules).</summary>
    public abstract BackboneDenoiser LoadDenoiser(string checkpointPath, Device? device = null);

    /// <summary>
    /// Parses a JSON model config of either family and returns the matching record:
    /// an ermongroup config (<c>ch</c>, <c>ch_mult</c>, ...; <c>type</c> "simple"/"bayesian", also the SDEdit/DDIM yml layout with
    /// <c>model</c>/<c>diffusion</c>/<c>data</c> sections), a guided-diffusion <c>UNetModel</c> constructor dict
    /// (<c>model_channels</c>, ...), or a <c>create_model</c>/FreeDoM flag dict (<c>num_channels</c>, <c>learn_sigma</c>, <c>type</c> "openai").
    /// A golden case.json may be passed whole: its <c>model.config</c> or <c>constructor</c> member is used.
    /// </summary>
    /// <exception cref="FormatException">The JSON matches neither family or has a malformed value.</exception>
    public static BackboneConfig FromJson(JsonElement json)
    {
        if (json.ValueKind != JsonValueKind.Object) throw new FormatException($"A backbone config must be a JSON object; got {json.ValueKind}.");
        if (json.TryGetProperty("constructor", out var ctor) && ctor.ValueKind == JsonValueKind.Object) return AdmUNetConfig.FromJson(ctor);
        if (json.TryGetProperty("model", out var model) && model.ValueKind == JsonValueKind.Object
            && model.TryGetProperty("config", out var cfg) && cfg.ValueKind == JsonValueKind.Object) return FromJson(cfg);
        if (json.TryGetProperty("create_model_kwargs", out var kw) && kw.ValueKind == JsonValueKind.Object) return AdmUNetConfig.FromJson(kw);
        if (json.TryGetProperty("constructor_config", out var cc) && cc.ValueKind == JsonValueKind.Object) return FromJson(cc);
        if (json.TryGetProperty("config", out var c2) && c2.ValueKind == JsonValueKind.Object) return FromJson(c2);

        string? type = json.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (type == "openai" || json.TryGetProperty("model_channels", out _) || json.TryGetProperty("num_channels", out _))
            return AdmUNetConfig.FromJson(json);
        if (json.TryGetProperty("ch", out _) || (json.TryGetProperty("model", out var m2) && m2.ValueKind == JsonValueKind.Object))
            return DdpmUNetConfig.FromJson(json);
        throw new FormatException("Unrecognised backbone config: expected ermongroup keys (ch, ch_mult, ...) or guided-diffusion keys (model_channels / num_channels, ...).");
    }

    /// <summary>Parses a JSON text; see <see cref="FromJson(JsonElement)"/>.</summary>
    public static BackboneConfig FromJson(string jsonText)
    {
        using var doc = JsonDocument.Parse(jsonText);
        return FromJson(doc.RootElement);
    }
}
