using System.Text.Json;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Models.Adm;

/// <summary>
/// Configuration of OpenAI guided-diffusion's <c>UNetModel</c> (every constructor argument of the reference class, same names in
/// PascalCase) plus the diffusion settings the checkpoint was trained with (noise schedule, steps).
/// </summary>
public sealed record AdmUNetConfig : BackboneConfig
{
    /// <summary>Image side length (<c>image_size</c>).</summary>
    public int ImageSize { get; init; } = 256;

    /// <summary>Input channels (<c>in_channels</c>).</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Base channel count (<c>model_channels</c>); the time embedding has 4x as many.</summary>
    public int ModelChannels { get; init; } = 256;

    /// <summary>Output channels (<c>out_channels</c>): in_channels, or 2 x in_channels with learned sigma.</summary>
    public int OutChannels { get; init; } = 6;

    /// <summary>Residual blocks per level (<c>num_res_blocks</c>).</summary>
    public int NumResBlocks { get; init; } = 2;

    /// <summary>Downsample RATES (1, 2, 4, ...) at which attention follows the residual blocks (<c>attention_resolutions</c>).</summary>
    public IReadOnlyList<int> AttentionResolutions { get; init; } = [8, 16, 32];

    /// <summary>Dropout (inactive in eval mode).</summary>
    public double Dropout { get; init; }

    /// <summary>Channel multiplier per level (<c>channel_mult</c>; fractional values such as 0.5 are allowed as in the reference).</summary>
    public IReadOnlyList<double> ChannelMult { get; init; } = [1, 1, 2, 2, 4, 4];

    /// <summary>Learned convolutions for up/down-sampling (<c>conv_resample</c>).</summary>
    public bool ConvResample { get; init; } = true;

    /// <summary>Signal dimensionality (<c>dims</c>): 1, 2 or 3. Denoisers use 2.</summary>
    public int Dims { get; init; } = 2;

    /// <summary>Number of classes for a class-conditional model (<c>num_classes</c>, adds <c>label_emb</c>), or null.</summary>
    public int? NumClasses { get; init; }

    /// <summary>Gradient checkpointing flag of the reference; it changes no values and is ignored here.</summary>
    public bool UseCheckpoint { get; init; }

    /// <summary>
    /// The reference runs the torso in float16. Here fp16 checkpoints are cast to the module's dtype (float32 by default) on load;
    /// the flag is kept for config round-trips and has no other effect.
    /// </summary>
    public bool UseFp16 { get; init; } = true;

    /// <summary>Attention heads (<c>num_heads</c>), used when <see cref="NumHeadChannels"/> is -1.</summary>
    public int NumHeads { get; init; } = 4;

    /// <summary>Channels per head (<c>num_head_channels</c>); overrides <see cref="NumHeads"/> unless -1.</summary>
    public int NumHeadChannels { get; init; } = 64;

    /// <summary>Heads in the upsampling path (<c>num_heads_upsample</c>; -1 = <see cref="NumHeads"/>).</summary>
    public int NumHeadsUpsample { get; init; } = -1;

    /// <summary>FiLM-like scale/shift conditioning (<c>use_scale_shift_norm</c>).</summary>
    public bool UseScaleShiftNorm { get; init; } = true;

    /// <summary>Residual blocks for up/down-sampling (<c>resblock_updown</c>).</summary>
    public bool ResblockUpdown { get; init; } = true;

    /// <summary>QKVAttention (split qkv before heads) instead of QKVAttentionLegacy (<c>use_new_attention_order</c>).</summary>
    public bool UseNewAttentionOrder { get; init; }

    /// <summary>guided-diffusion noise schedule name: "linear" or "cosine".</summary>
    public string NoiseScheduleName { get; init; } = "linear";

    /// <summary>Training timesteps (<c>diffusion_steps</c>).</summary>
    public int DiffusionSteps { get; init; } = 1000;

    /// <inheritdoc />
    public override string Architecture => "adm";

    /// <summary>True when the output carries learned-variance channels (out_channels = 2 x in_channels).</summary>
    public bool LearnSigma => OutChannels == 2 * InChannels;

    /// <summary>
    /// <c>256x256_diffusion_uncond.pt</c> as FreeDoM builds it: 256 channels, mult 1,1,2,2,4,4, 2 res blocks, attention at 32,16,8
    /// (rates 8,16,32), 64 channels per head, learned sigma, scale-shift norm, resblock up/down, fp16 torso, linear schedule, T = 1000.
    /// </summary>
    public static AdmUNetConfig ImageNet256Uncond { get; } = new();

    /// <summary>The reference schedule: linear betas (1e-4..0.02) x 1000/T, or the cosine schedule.</summary>
    /// <exception cref="NotSupportedException">Unknown schedule name.</exception>
    public NoiseSchedule CreateSchedule()
    {
        double scale = 1000.0 / DiffusionSteps;
        return NoiseScheduleName switch
        {
            "linear" => NoiseSchedule.Linear(DiffusionSteps, scale * 0.0001, scale * 0.02),
            "cosine" => NoiseSchedule.Cosine(DiffusionSteps),
            _ => throw new NotSupportedException($"Unknown guided-diffusion noise schedule '{NoiseScheduleName}' (expected linear or cosine)."),
        };
    }

    /// <summary>Channels at each level: int(mult * model_channels).</summary>
    public int LevelChannels(int level) => (int)(ChannelMult[level] * ModelChannels);

    /// <summary>Heads of an attention block with <paramref name="channels"/> channels, as the reference computes them.</summary>
    public int HeadsFor(int channels, bool upsample)
    {
        if (NumHeadChannels == -1) return upsample ? (NumHeadsUpsample == -1 ? NumHeads : NumHeadsUpsample) : NumHeads;
        return channels / NumHeadChannels;
    }

    /// <summary>Checks the values the constructor relies on.</summary>
    /// <exception cref="ArgumentException">A value is out of range (names the key and value).</exception>
    public void Validate()
    {
        if (ImageSize <= 0 || InChannels <= 0 || ModelChannels <= 0 || OutChannels <= 0)
            throw new ArgumentException($"ADM config: image_size ({ImageSize}), in_channels ({InChannels}), model_channels ({ModelChannels}) and out_channels ({OutChannels}) must be positive.");
        if (ChannelMult is null || ChannelMult.Count == 0 || ChannelMult.Any(m => !(m > 0))) throw new ArgumentException("ADM config: channel_mult must be a non-empty list of positive numbers.");
        if (NumResBlocks < 0) throw new ArgumentException($"ADM config: num_res_blocks must be >= 0; got {NumResBlocks}.");
        if (Dims is < 1 or > 3) throw new ArgumentException($"ADM config: dims must be 1, 2 or 3; got {Dims}.");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"ADM config: dropout must be in [0, 1); got {Dropout}.");
        if (NumClasses is <= 0) throw new ArgumentException($"ADM config: num_classes must be positive or null; got {NumClasses}.");
        if (NumHeadChannels == -1 && (NumHeads <= 0 || (NumHeadsUpsample != -1 && NumHeadsUpsample <= 0)))
            throw new ArgumentException($"ADM config: num_heads ({NumHeads}) and num_heads_upsample ({NumHeadsUpsample}) must be positive.");
        if (NumHeadChannels is 0 or < -1) throw new ArgumentException($"ADM config: num_head_channels must be positive or -1; got {NumHeadChannels}.");
        for (int l = 0; l < ChannelMult.Count; l++)
        {
            int c = LevelChannels(l);
            if (c <= 0 || c % 32 != 0) throw new ArgumentException($"ADM config: level {l} has {c} channels; GroupNorm(32) needs a positive multiple of 32.");
        }
        if (DiffusionSteps <= 0) throw new ArgumentException($"ADM config: diffusion_steps must be positive; got {DiffusionSteps}.");
    }

    /// <inheritdoc />
    public override TorchSharp.torch.nn.Module CreateModule(Device? device = null) => new AdmUNet(this, device);

    /// <inheritdoc />
    public override BackboneDenoiser CreateDenoiser(Device? device = null) => new AdmDenoiser(this, device);

    /// <inheritdoc />
    public override BackboneDenoiser LoadDenoiser(string checkpointPath, Device? device = null) => AdmDenoiser.Load(checkpointPath, this, device);

    /// <summary>
    /// Reads either a <c>UNetModel</c> constructor dict (<c>model_channels</c>, <c>attention_resolutions</c> as downsample RATES,
    /// <c>channel_mult</c> list, ...) or a <c>create_model</c> / FreeDoM flag dict (<c>num_channels</c>, <c>learn_sigma</c>,
    /// <c>class_cond</c>, <c>attention_resolutions</c> as pixel resolutions like "32,16,8", <c>channel_mult</c> "" for the
    /// image-size default, <c>noise_schedule</c>, <c>diffusion_steps</c>). Missing keys take the reference defaults.
    /// </summary>
    /// <exception cref="FormatException">A value has the wrong type, or the image size has no default channel_mult.</exception>
    public static new AdmUNetConfig FromJson(JsonElement json)
    {
        if (json.ValueKind != JsonValueKind.Object) throw new FormatException($"An ADM config must be a JSON object; got {json.ValueKind}.");
        int imageSize = Json.Int(json, "image_size", 256);
        int inChannels = Json.Int(json, "in_channels", 3);
        bool flagStyle = !Json.Has(json, "model_channels") && Json.Has(json, "num_channels");
        var schedule = Json.String(json, "noise_schedule", "linear")!;
        int steps = Json.Int(json, "diffusion_steps", Json.Int(json, "num_diffusion_timesteps", 1000));
        if (!flagStyle)
        {
            return new AdmUNetConfig
            {
                ImageSize = imageSize,
                InChannels = inChannels,
                ModelChannels = Json.Int(json, "model_channels", 256),
                OutChannels = Json.Int(json, "out_channels", inChannels),
                NumResBlocks = Json.Int(json, "num_res_blocks", 2),
                AttentionResolutions = Json.Ints(json, "attention_resolutions") ?? [],
                Dropout = Json.Double(json, "dropout", 0),
                ChannelMult = Json.Numbers(json, "channel_mult") ?? [1, 2, 4, 8],
                ConvResample = Json.Bool(json, "conv_resample", true),
                Dims = Json.Int(json, "dims", 2),
                NumClasses = Json.NullableInt(json, "num_classes"),
                UseCheckpoint = Json.Bool(json, "use_checkpoint", false),
                UseFp16 = Json.Bool(json, "use_fp16", false),
                NumHeads = Json.Int(json, "num_heads", 1),
                NumHeadChannels = Json.Int(json, "num_head_channels", -1),
                NumHeadsUpsample = Json.Int(json, "num_heads_upsample", -1),
                UseScaleShiftNorm = Json.Bool(json, "use_scale_shift_norm", false),
                ResblockUpdown = Json.Bool(json, "resblock_updown", false),
                UseNewAttentionOrder = Json.Bool(json, "use_new_attention_order", false),
                NoiseScheduleName = schedule,
                DiffusionSteps = steps,
            };
        }

        // create_model(...) semantics (script_util.py); FreeDoM passes in/out channels too, out doubled by learn_sigma.
        var mult = Json.Numbers(json, "channel_mult");
        if (mult is null || mult.Length == 0)
        {
            mult = imageSize switch
            {
                512 => [0.5, 1, 1, 2, 2, 4, 4],
                256 => [1, 1, 2, 2, 4, 4],
                128 => [1, 1, 2, 3, 4],
                64 => [1, 2, 3, 4],
                _ => throw new FormatException($"ADM config: no default channel_mult for image_size {imageSize}; give channel_mult."),
            };
        }
        var attnRes = Json.Ints(json, "attention_resolutions") ?? [16];
        bool learnSigma = Json.Bool(json, "learn_sigma", false);
        int outBase = Json.Int(json, "out_channels", 3);
        bool classCond = Json.Bool(json, "class_cond", false);
        return new AdmUNetConfig
        {
            ImageSize = imageSize,
            InChannels = inChannels,
            ModelChannels = Json.Int(json, "num_channels", 256),
            OutChannels = learnSigma ? 2 * outBase : outBase,
            NumResBlocks = Json.Int(json, "num_res_blocks", 2),
            AttentionResolutions = attnRes.Select(r => r > 0 && imageSize % r == 0 ? imageSize / r
                : throw new FormatException($"ADM config: attention resolution {r} does not divide image_size {imageSize}.")).ToArray(),
            Dropout = Json.Double(json, "dropout", 0),
            ChannelMult = mult,
            ConvResample = Json.Bool(json, "conv_resample", Json.Bool(json, "resamp_with_conv", true)),
            Dims = 2,
            NumClasses = classCond ? Json.Int(json, "num_classes", 1000) : null,
            UseCheckpoint = Json.Bool(json, "use_checkpoint", false),
            UseFp16 = Json.Bool(json, "use_fp16", false),
            NumHeads = Json.Int(json, "num_heads", 1),
            NumHeadChannels = Json.Int(json, "num_head_channels", -1),
            NumHeadsUpsample = Json.Int(json, "num_heads_upsample", -1),
            UseScaleShiftNorm = Json.Bool(json, "use_scale_shift_norm", false),
            ResblockUpdown = Json.Bool(json, "resblock_updown", false),
            UseNewAttentionOrder = Json.Bool(json, "use_new_attention_order", false),
            NoiseScheduleName = schedule,
            DiffusionSteps = steps,
        };
    }

    /// <summary>The UNetModel constructor dict plus <c>noise_schedule</c> and <c>diffusion_steps</c>.</summary>
    public string ToJson()
    {
        var o = new Dictionary<string, object?>
        {
            ["image_size"] = ImageSize, ["in_channels"] = InChannels, ["model_channels"] = ModelChannels, ["out_channels"] = OutChannels,
            ["num_res_blocks"] = NumResBlocks, ["attention_resolutions"] = AttentionResolutions, ["dropout"] = Dropout,
            ["channel_mult"] = ChannelMult, ["conv_resample"] = ConvResample, ["dims"] = Dims, ["num_classes"] = NumClasses,
            ["use_checkpoint"] = UseCheckpoint, ["use_fp16"] = UseFp16, ["num_heads"] = NumHeads, ["num_head_channels"] = NumHeadChannels,
            ["num_heads_upsample"] = NumHeadsUpsample, ["use_scale_shift_norm"] = UseScaleShiftNorm, ["resblock_updown"] = ResblockUpdown,
            ["use_new_attention_order"] = UseNewAttentionOrder, ["noise_schedule"] = NoiseScheduleName, ["diffusion_steps"] = DiffusionSteps,
        };
        return JsonSerializer.Serialize(o);
    }

    /// <summary>Value equality including the list contents.</summary>
    public bool Equals(AdmUNetConfig? other) =>
        other is not null && ImageSize == other.ImageSize && InChannels == other.InChannels && ModelChannels == other.ModelChannels
        && OutChannels == other.OutChannels && NumResBlocks == other.NumResBlocks && AttentionResolutions.SequenceEqual(other.AttentionResolutions)
        && Dropout.Equals(other.Dropout) && ChannelMult.SequenceEqual(other.ChannelMult) && ConvResample == other.ConvResample && Dims == other.Dims
        && NumClasses == other.NumClasses && UseCheckpoint == other.UseCheckpoint && UseFp16 == other.UseFp16 && NumHeads == other.NumHeads
        && NumHeadChannels == other.NumHeadChannels && NumHeadsUpsample == other.NumHeadsUpsample && UseScaleShiftNorm == other.UseScaleShiftNorm
        && ResblockUpdown == other.ResblockUpdown && UseNewAttentionOrder == other.UseNewAttentionOrder
        && NoiseScheduleName == other.NoiseScheduleName && DiffusionSteps == other.DiffusionSteps;

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(ImageSize, InChannels, ModelChannels, OutChannels, NumResBlocks, ChannelMult.Count, Dims, NumClasses);
}
