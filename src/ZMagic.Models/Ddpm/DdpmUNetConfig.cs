using System.Text.Json;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Models.Ddpm;

/// <summary>
/// Configuration of the ermongroup / SDEdit DDPM UNet (<c>models/diffusion.py</c> class <c>Model</c>) and of the diffusion it
/// was trained with. Property names follow the reference config keys (<c>ch</c>, <c>out_ch</c>, <c>ch_mult</c>, ...).
/// </summary>
public sealed record DdpmUNetConfig : BackboneConfig
{
    /// <summary>Base channel count (<c>ch</c>); the timestep embedding has 4·ch channels.</summary>
    public int Ch { get; init; } = 128;

    /// <summary>Output channels (<c>out_ch</c>), epsilon only.</summary>
    public int OutCh { get; init; } = 3;

    /// <summary>Channel multiplier per resolution level (<c>ch_mult</c>).</summary>
    public IReadOnlyList<int> ChMult { get; init; } = [1, 1, 2, 2, 4, 4];

    /// <summary>ResnetBlocks per level on the way down (<c>num_res_blocks</c>); the way up has one more.</summary>
    public int NumResBlocks { get; init; } = 2;

    /// <summary>Spatial resolutions (in pixels, not rates) at which attention follows each ResnetBlock (<c>attn_resolutions</c>).</summary>
    public IReadOnlyList<int> AttnResolutions { get; init; } = [16];

    /// <summary>Dropout probability inside the ResnetBlocks (inactive in eval mode).</summary>
    public double Dropout { get; init; }

    /// <summary>Input channels (<c>in_channels</c>).</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Image side length (<c>image_size</c> / <c>resolution</c>); the forward pass requires exactly this size.</summary>
    public int Resolution { get; init; } = 256;

    /// <summary>Learned 3x3 convs for up/down-sampling (<c>resamp_with_conv</c>); otherwise plain nearest / average pooling.</summary>
    public bool ResampWithConv { get; init; } = true;

    /// <summary>Reference <c>type</c>: "simple", or "bayesian" (adds a <c>logvar</c> parameter of length T).</summary>
    public string ModelType { get; init; } = "simple";

    /// <summary>Reference <c>var_type</c> (fixedsmall / fixedlarge); informational: the samplers here do not use it.</summary>
    public string VarType { get; init; } = "fixedsmall";

    /// <summary>Training timesteps T (<c>num_diffusion_timesteps</c>).</summary>
    public int NumDiffusionTimesteps { get; init; } = 1000;

    /// <summary>Beta schedule name as in the ermongroup <c>get_beta_schedule</c>: linear, quad, const, sigmoid (jsd ends at beta = 1 and is refused).</summary>
    public string BetaSchedule { get; init; } = "linear";

    /// <summary>First beta.</summary>
    public double BetaStart { get; init; } = 1e-4;

    /// <summary>Last beta.</summary>
    public double BetaEnd { get; init; } = 0.02;

    /// <inheritdoc />
    public override string Architecture => "ddpm";

    /// <summary>SDEdit's CelebA-HQ 256 model (<c>celeba_hq.ckpt</c>): ch 128, ch_mult 1,1,2,2,4,4, 2 res blocks, attention at 16, linear betas 1e-4..0.02, T = 1000.</summary>
    public static DdpmUNetConfig CelebAHq { get; } = new();

    /// <summary>
    /// A small 1-channel 32x32 config for a digits prior trained from scratch: ch 32, ch_mult 1,2,2, 1 res block,
    /// attention at 8x8, dropout 0.1, linear betas 1e-4..0.02 over 1000 steps (about 1.5M parameters).
    /// </summary>
    public static DdpmUNetConfig Digits32 { get; } = new()
    {
        Ch = 32, OutCh = 1, InChannels = 1, ChMult = [1, 2, 2], NumResBlocks = 1, AttnResolutions = [8],
        Dropout = 0.1, Resolution = 32, VarType = "fixedlarge",
    };

    /// <summary>The training noise schedule.</summary>
    /// <exception cref="NotSupportedException">Unknown <see cref="BetaSchedule"/>.</exception>
    public NoiseSchedule CreateSchedule()
    {
        int n = NumDiffusionTimesteps;
        switch (BetaSchedule)
        {
            case "linear": return NoiseSchedule.Linear(n, BetaStart, BetaEnd);
            case "quad": return NoiseSchedule.ScaledLinear(n, BetaStart, BetaEnd);
            case "const": return new NoiseSchedule(Enumerable.Repeat(BetaEnd, n).ToArray());
            case "sigmoid":
                return new NoiseSchedule(Enumerable.Range(0, n).Select(i =>
                {
                    double u = n == 1 ? -6 : -6 + 12.0 * i / (n - 1);
                    return 1 / (1 + Math.Exp(-u)) * (BetaEnd - BetaStart) + BetaStart;
                }).ToArray());
            default: throw new NotSupportedException($"Unknown DDPM beta schedule '{BetaSchedule}' (expected linear, quad, const or sigmoid).");
        }
    }

    /// <summary>Checks the values the constructor relies on.</summary>
    /// <exception cref="ArgumentException">A value is out of range (names the key and value).</exception>
    public void Validate()
    {
        if (Ch <= 0 || InChannels <= 0 || OutCh <= 0) throw new ArgumentException($"DDPM config: ch ({Ch}), in_channels ({InChannels}) and out_ch ({OutCh}) must be positive.");
        if (ChMult is null || ChMult.Count == 0 || ChMult.Any(m => m <= 0)) throw new ArgumentException("DDPM config: ch_mult must be a non-empty list of positive integers.");
        if (NumResBlocks < 0) throw new ArgumentException($"DDPM config: num_res_blocks must be >= 0; got {NumResBlocks}.");
        foreach (var m in ChMult.Prepend(1))
            if (Ch * m % 32 != 0) throw new ArgumentException($"DDPM config: ch*mult = {Ch * m} is not divisible by the 32 GroupNorm groups.");
        int div = 1 << (ChMult.Count - 1);
        if (Resolution <= 0 || Resolution % div != 0) throw new ArgumentException($"DDPM config: image_size {Resolution} must be divisible by 2^(levels-1) = {div}.");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"DDPM config: dropout must be in [0, 1); got {Dropout}.");
        if (ModelType is not ("simple" or "bayesian")) throw new ArgumentException($"DDPM config: type must be 'simple' or 'bayesian'; got '{ModelType}'.");
        if (NumDiffusionTimesteps <= 0) throw new ArgumentException($"DDPM config: num_diffusion_timesteps must be positive; got {NumDiffusionTimesteps}.");
    }

    /// <inheritdoc />
    public override TorchSharp.torch.nn.Module CreateModule(Device? device = null) => new DdpmUNet(this, device);

    /// <inheritdoc />
    public override BackboneDenoiser CreateDenoiser(Device? device = null) => new DdpmDenoiser(this, device);

    /// <inheritdoc />
    public override BackboneDenoiser LoadDenoiser(string checkpointPath, Device? device = null) => DdpmDenoiser.Load(checkpointPath, this, device);

    /// <summary>
    /// Reads an ermongroup config: the flat dict FreeDoM hard-codes (<c>ch</c>, <c>out_ch</c>, <c>ch_mult</c>, <c>num_res_blocks</c>,
    /// <c>attn_resolutions</c>, <c>dropout</c>, <c>in_channels</c>, <c>image_size</c>, <c>resamp_with_conv</c>, <c>type</c>,
    /// <c>var_type</c>, <c>num_diffusion_timesteps</c>, optional <c>beta_schedule</c>/<c>beta_start</c>/<c>beta_end</c>), or the
    /// DDIM/SDEdit yml layout with <c>data</c>, <c>model</c> and <c>diffusion</c> sections. Missing keys keep the CelebA-HQ values.
    /// </summary>
    /// <exception cref="FormatException">A value has the wrong type.</exception>
    public static new DdpmUNetConfig FromJson(JsonElement json)
    {
        if (json.ValueKind != JsonValueKind.Object) throw new FormatException($"A DDPM config must be a JSON object; got {json.ValueKind}.");
        JsonElement m = json, d = json, data = json;
        if (json.TryGetProperty("model", out var mm) && mm.ValueKind == JsonValueKind.Object) m = mm;
        if (json.TryGetProperty("diffusion", out var dd) && dd.ValueKind == JsonValueKind.Object) d = dd;
        if (json.TryGetProperty("data", out var da) && da.ValueKind == JsonValueKind.Object) data = da;
        var def = new DdpmUNetConfig();
        int res = Json.Int(m, "image_size", Json.Int(m, "resolution", Json.Int(data, "image_size", def.Resolution)));
        return new DdpmUNetConfig
        {
            Ch = Json.Int(m, "ch", def.Ch),
            OutCh = Json.Int(m, "out_ch", def.OutCh),
            ChMult = Json.Ints(m, "ch_mult") ?? [.. def.ChMult],
            NumResBlocks = Json.Int(m, "num_res_blocks", def.NumResBlocks),
            AttnResolutions = Json.Ints(m, "attn_resolutions") ?? [.. def.AttnResolutions],
            Dropout = Json.Double(m, "dropout", def.Dropout),
            InChannels = Json.Int(m, "in_channels", Json.Int(data, "channels", def.InChannels)),
            Resolution = res,
            ResampWithConv = Json.Bool(m, "resamp_with_conv", def.ResampWithConv),
            ModelType = Json.String(m, "type", def.ModelType)!,
            VarType = Json.String(m, "var_type", def.VarType)!,
            NumDiffusionTimesteps = Json.Int(d, "num_diffusion_timesteps", Json.Int(m, "num_diffusion_timesteps", def.NumDiffusionTimesteps)),
            BetaSchedule = Json.String(d, "beta_schedule", def.BetaSchedule)!,
            BetaStart = Json.Double(d, "beta_start", def.BetaStart),
            BetaEnd = Json.Double(d, "beta_end", def.BetaEnd),
        };
    }

    /// <summary>The flat reference dict (FreeDoM <c>celeba_dict</c> layout) plus the beta schedule keys.</summary>
    public string ToJson()
    {
        var o = new Dictionary<string, object>
        {
            ["type"] = ModelType, ["in_channels"] = InChannels, ["out_ch"] = OutCh, ["ch"] = Ch, ["ch_mult"] = ChMult,
            ["num_res_blocks"] = NumResBlocks, ["attn_resolutions"] = AttnResolutions, ["dropout"] = Dropout, ["var_type"] = VarType,
            ["resamp_with_conv"] = ResampWithConv, ["image_size"] = Resolution, ["num_diffusion_timesteps"] = NumDiffusionTimesteps,
            ["beta_schedule"] = BetaSchedule, ["beta_start"] = BetaStart, ["beta_end"] = BetaEnd,
        };
        return JsonSerializer.Serialize(o);
    }

    /// <summary>Value equality including the list contents.</summary>
    public bool Equals(DdpmUNetConfig? other) =>
        other is not null && Ch == other.Ch && OutCh == other.OutCh && ChMult.SequenceEqual(other.ChMult) && NumResBlocks == other.NumResBlocks
        && AttnResolutions.SequenceEqual(other.AttnResolutions) && Dropout.Equals(other.Dropout) && InChannels == other.InChannels
        && Resolution == other.Resolution && ResampWithConv == other.ResampWithConv && ModelType == other.ModelType && VarType == other.VarType
        && NumDiffusionTimesteps == other.NumDiffusionTimesteps && BetaSchedule == other.BetaSchedule && BetaStart.Equals(other.BetaStart)
        && BetaEnd.Equals(other.BetaEnd);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Ch, OutCh, ChMult.Count, NumResBlocks, InChannels, Resolution, ModelType, NumDiffusionTimesteps);
}
