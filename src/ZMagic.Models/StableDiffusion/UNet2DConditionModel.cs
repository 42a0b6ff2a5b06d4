using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using ZMagic.Models.Nn;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Models.StableDiffusion;

/// <summary>
/// The subset of diffusers' <c>UNet2DConditionModel</c> config that the SD 1.x/2.x family uses, read from a
/// <c>unet/config.json</c>. Unsupported options that change the architecture are refused when parsing.
/// </summary>
public sealed record UNet2DConditionConfig
{
    /// <summary>Latent size the model was trained at.</summary>
    public int SampleSize { get; init; } = 64;
    /// <summary>Latent channels in.</summary>
    public int InChannels { get; init; } = 4;
    /// <summary>Latent channels out.</summary>
    public int OutChannels { get; init; } = 4;
    /// <summary>Down block types (CrossAttnDownBlock2D, DownBlock2D).</summary>
    public IReadOnlyList<string> DownBlockTypes { get; init; } = new[] { "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D" };
    /// <summary>Up block types (UpBlock2D, CrossAttnUpBlock2D).</summary>
    public IReadOnlyList<string> UpBlockTypes { get; init; } = new[] { "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D" };
    /// <summary>Channels per level.</summary>
    public IReadOnlyList<int> BlockOutChannels { get; init; } = new[] { 320, 640, 1280, 1280 };
    /// <summary>Resnets per down block (up blocks have one more).</summary>
    public int LayersPerBlock { get; init; } = 2;
    /// <summary>GroupNorm groups.</summary>
    public int NormNumGroups { get; init; } = 32;
    /// <summary>GroupNorm epsilon of the resnets.</summary>
    public double NormEps { get; init; } = 1e-5;
    /// <summary>Text embedding width.</summary>
    public int CrossAttentionDim { get; init; } = 768;
    /// <summary>Attention heads per level (diffusers' misnamed <c>attention_head_dim</c> in SD 1.x configs).</summary>
    public IReadOnlyList<int> AttentionHeads { get; init; } = new[] { 8, 8, 8, 8 };
    /// <summary>Linear (SD 2.x) instead of 1x1 conv (SD 1.x) transformer projections.</summary>
    public bool UseLinearProjection { get; init; }
    /// <summary>Order of the sinusoid halves: [cos | sin] when true.</summary>
    public bool FlipSinToCos { get; init; } = true;
    /// <summary>Frequency shift of the sinusoid.</summary>
    public int FreqShift { get; init; }
    /// <summary>Padding of the down-sampling convs.</summary>
    public int DownsamplePadding { get; init; } = 1;
    /// <summary>Transformer blocks per attention.</summary>
    public int TransformerLayersPerBlock { get; init; } = 1;

    /// <summary>The SD v1.5 UNet.</summary>
    public static UNet2DConditionConfig Sd15 { get; } = new();

    /// <summary>Parses a diffusers <c>config.json</c> object.</summary>
    /// <exception cref="FormatException">A field has the wrong type, or an architecture option this port does not implement is set.</exception>
    public static UNet2DConditionConfig FromJson(JsonElement json, string source = "config.json")
    {
        var c = new UNet2DConditionConfig();
        int Int(string name, int def) => json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : def;
        double Dbl(string name, double def) => json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : def;
        bool Bool(string name, bool def) => json.TryGetProperty(name, out var v) && (v.ValueKind == JsonValueKind.True || v.ValueKind == JsonValueKind.False) ? v.GetBoolean() : def;
        string[]? Strs(string name) => json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(e => e.GetString() ?? "").ToArray() : null;
        int[]? Ints(string name) => json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(e => e.GetInt32()).ToArray() : null;

        var blocks = Ints("block_out_channels") ?? c.BlockOutChannels.ToArray();
        int[] heads;
        // num_attention_heads wins; else attention_head_dim (which SD 1.x uses to mean heads).
        JsonElement h;
        if ((json.TryGetProperty("num_attention_heads", out h) && h.ValueKind != JsonValueKind.Null)
            || (json.TryGetProperty("attention_head_dim", out h) && h.ValueKind != JsonValueKind.Null))
            heads = h.ValueKind == JsonValueKind.Array ? h.EnumerateArray().Select(e => e.GetInt32()).ToArray() : Enumerable.Repeat(h.GetInt32(), blocks.Length).ToArray();
        else heads = Enumerable.Repeat(8, blocks.Length).ToArray();

        foreach (var (key, allowed) in new[] { ("class_embed_type", (string?)null), ("addition_embed_type", null), ("encoder_hid_dim_type", null), ("time_cond_proj_dim", null) })
            if (json.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null)
                throw new FormatException($"{source}: '{key}' = {v.GetRawText()} is not supported by this UNet2DConditionModel port (SD 1.x/2.x family only).");
        if (json.TryGetProperty("mid_block_type", out var mid) && mid.ValueKind == JsonValueKind.String && mid.GetString() != "UNetMidBlock2DCrossAttn")
            throw new FormatException($"{source}: mid_block_type '{mid.GetString()}' is not supported (expected UNetMidBlock2DCrossAttn).");
        if (json.TryGetProperty("transformer_layers_per_block", out var tl) && tl.ValueKind == JsonValueKind.Array)
            throw new FormatException($"{source}: per-block transformer_layers_per_block lists (SDXL) are not supported.");

        c = c with
        {
            SampleSize = Int("sample_size", c.SampleSize),
            InChannels = Int("in_channels", c.InChannels),
            OutChannels = Int("out_channels", c.OutChannels),
            DownBlockTypes = Strs("down_block_types") ?? c.DownBlockTypes,
            UpBlockTypes = Strs("up_block_types") ?? c.UpBlockTypes,
            BlockOutChannels = blocks,
            LayersPerBlock = Int("layers_per_block", c.LayersPerBlock),
            NormNumGroups = Int("norm_num_groups", c.NormNumGroups),
            NormEps = Dbl("norm_eps", c.NormEps),
            CrossAttentionDim = Int("cross_attention_dim", c.CrossAttentionDim),
            AttentionHeads = heads,
            UseLinearProjection = Bool("use_linear_projection", false),
            FlipSinToCos = Bool("flip_sin_to_cos", true),
            FreqShift = Int("freq_shift", 0),
            DownsamplePadding = Int("downsample_padding", 1),
            TransformerLayersPerBlock = Int("transformer_layers_per_block", 1),
        };
        c.Validate(source);
        return c;
    }

    /// <summary>Checks the config is self-consistent.</summary>
    public void Validate(string source = "config")
    {
        int n = BlockOutChannels.Count;
        if (n == 0) throw new FormatException($"{source}: block_out_channels is empty.");
        if (DownBlockTypes.Count != n || UpBlockTypes.Count != n)
            throw new FormatException($"{source}: {n} block_out_channels but {DownBlockTypes.Count} down and {UpBlockTypes.Count} up block types.");
        if (AttentionHeads.Count != n) throw new FormatException($"{source}: {AttentionHeads.Count} attention head counts for {n} levels.");
        foreach (var t in DownBlockTypes)
            if (t is not ("CrossAttnDownBlock2D" or "DownBlock2D")) throw new FormatException($"{source}: down block type '{t}' is not supported.");
        foreach (var t in UpBlockTypes)
            if (t is not ("CrossAttnUpBlock2D" or "UpBlock2D")) throw new FormatException($"{source}: up block type '{t}' is not supported.");
        foreach (var ch in BlockOutChannels)
            if (ch % NormNumGroups != 0) throw new FormatException($"{source}: {ch} channels are not divisible by norm_num_groups {NormNumGroups}.");
    }
}

/// <summary>Down block of the UNet (CrossAttnDownBlock2D when it has attentions, else DownBlock2D).</summary>
public sealed class SdDownBlock : nn.Module
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Transformer2DModel>? attentions;
    private readonly ModuleList<Downsample2D>? downsamplers;

    internal SdDownBlock(UNet2DConditionConfig c, int level, long inCh, long outCh, long tembCh, bool cross, bool downsample) : base(nameof(SdDownBlock))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, c.LayersPerBlock)
            .Select(i => new ResnetBlock2D(i == 0 ? inCh : outCh, outCh, tembCh, c.NormNumGroups, c.NormEps)).ToArray());
        if (cross)
            attentions = nn.ModuleList(Enumerable.Range(0, c.LayersPerBlock)
                .Select(_ => new Transformer2DModel(outCh, c.AttentionHeads[level], c.CrossAttentionDim, c.NormNumGroups, c.TransformerLayersPerBlock, c.UseLinearProjection)).ToArray());
        if (downsample) downsamplers = nn.ModuleList(new Downsample2D(outCh, c.DownsamplePadding));
        RegisterComponents();
    }

    internal Tensor forward(Tensor x, Tensor temb, Tensor context, List<Tensor> skips)
    {
        for (int i = 0; i < resnets.Count; i++)
        {
            x = resnets[i].forward(x, temb);
            if (attentions is not null) x = attentions[i].forward(x, context);
            skips.Add(x);
        }
        if (downsamplers is not null)
        {
            x = downsamplers[0].forward(x);
            skips.Add(x);
        }
        return x;
    }
}

/// <summary>Up block of the UNet (CrossAttnUpBlock2D when it has attentions, else UpBlock2D).</summary>
public sealed class SdUpBlock : nn.Module
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Transformer2DModel>? attentions;
    private readonly ModuleList<Upsample2D>? upsamplers;

    internal SdUpBlock(UNet2DConditionConfig c, long heads, long inCh, long prevOutCh, long outCh, long tembCh, bool cross, bool upsample) : base(nameof(SdUpBlock))
    {
        int layers = c.LayersPerBlock + 1;
        resnets = nn.ModuleList(Enumerable.Range(0, layers).Select(i =>
        {
            long skipCh = i == layers - 1 ? inCh : outCh;
            long resIn = i == 0 ? prevOutCh : outCh;
            return new ResnetBlock2D(resIn + skipCh, outCh, tembCh, c.NormNumGroups, c.NormEps);
        }).ToArray());
        if (cross)
            attentions = nn.ModuleList(Enumerable.Range(0, layers)
                .Select(_ => new Transformer2DModel(outCh, heads, c.CrossAttentionDim, c.NormNumGroups, c.TransformerLayersPerBlock, c.UseLinearProjection)).ToArray());
        if (upsample) upsamplers = nn.ModuleList(new Upsample2D(outCh));
        RegisterComponents();
    }

    internal int Layers => resnets.Count;

    internal Tensor forward(Tensor x, Tensor temb, Tensor context, List<Tensor> skips, long[]? upsampleSize)
    {
        for (int i = 0; i < resnets.Count; i++)
        {
            var skip = skips[^1];
            skips.RemoveAt(skips.Count - 1);
            x = resnets[i].forward(torch.cat(new[] { x, skip }, 1), temb);
            if (attentions is not null) x = attentions[i].forward(x, context);
        }
        if (upsamplers is not null) x = upsamplers[0].forward(x, upsampleSize);
        return x;
    }
}

/// <summary>diffusers <c>UNetMidBlock2DCrossAttn</c>: resnet, transformer, resnet.</summary>
public sealed class SdMidBlock : nn.Module
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Transformer2DModel> attentions;

    internal SdMidBlock(UNet2DConditionConfig c, long ch, long tembCh) : base(nameof(SdMidBlock))
    {
        resnets = nn.ModuleList(new ResnetBlock2D(ch, ch, tembCh, c.NormNumGroups, c.NormEps), new ResnetBlock2D(ch, ch, tembCh, c.NormNumGroups, c.NormEps));
        attentions = nn.ModuleList(new Transformer2DModel(ch, c.AttentionHeads[^1], c.CrossAttentionDim, c.NormNumGroups, c.TransformerLayersPerBlock, c.UseLinearProjection));
        RegisterComponents();
    }

    internal Tensor forward(Tensor x, Tensor temb, Tensor context)
    {
        x = resnets[0].forward(x, temb);
        x = attentions[0].forward(x, context);
        return resnets[1].forward(x, temb);
    }
}

/// <summary>
/// diffusers <c>UNet2DConditionModel</c> for the Stable Diffusion 1.x/2.x family: predicts the noise of a latent
/// given the timestep and the text encoder's hidden states. Parameter names equal the diffusers state-dict keys.
/// </summary>
public sealed class UNet2DConditionModel : nn.Module
{
    private readonly TimestepEmbedding time_embedding;
    private readonly Conv2d conv_in;
    private readonly ModuleList<SdDownBlock> down_blocks;
    private readonly SdMidBlock mid_block;
    private readonly ModuleList<SdUpBlock> up_blocks;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    /// <summary>Builds the model from <paramref name="config"/> (random init).</summary>
    public UNet2DConditionModel(UNet2DConditionConfig config) : base(nameof(UNet2DConditionModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var ch = config.BlockOutChannels;
        int n = ch.Count;
        long tembCh = ch[0] * 4L;
        time_embedding = new TimestepEmbedding(ch[0], tembCh);
        conv_in = nn.Conv2d(config.InChannels, ch[0], 3, padding: 1);

        var downs = new List<SdDownBlock>();
        long output = ch[0];
        for (int i = 0; i < n; i++)
        {
            long input = output;
            output = ch[i];
            downs.Add(new SdDownBlock(config, i, input, output, tembCh, config.DownBlockTypes[i] == "CrossAttnDownBlock2D", i != n - 1));
        }
        down_blocks = nn.ModuleList(downs.ToArray());
        mid_block = new SdMidBlock(config, ch[n - 1], tembCh);

        var ups = new List<SdUpBlock>();
        var rev = ch.Reverse().ToArray();
        var revHeads = config.AttentionHeads.Reverse().ToArray();
        output = rev[0];
        for (int i = 0; i < n; i++)
        {
            long prev = output;
            output = rev[i];
            long input = rev[Math.Min(i + 1, n - 1)];
            ups.Add(new SdUpBlock(config, revHeads[i], input, prev, output, tembCh, config.UpBlockTypes[i] == "CrossAttnUpBlock2D", i != n - 1));
        }
        up_blocks = nn.ModuleList(ups.ToArray());
        conv_norm_out = nn.GroupNorm(config.NormNumGroups, ch[0], config.NormEps);
        conv_out = nn.Conv2d(ch[0], config.OutChannels, 3, padding: 1);
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public UNet2DConditionConfig Config { get; }

    /// <summary>
    /// diffusers <c>Timesteps</c> (<c>get_timestep_embedding</c>): the sinusoid [B, C0] computed in float32 on the timesteps'
    /// device, <c>f = exp(-ln(10000) * arange(half) / (half - freq_shift))</c>, <c>[cos | sin]</c> when flip_sin_to_cos.
    /// </summary>
    public Tensor TimeProjection(Tensor timesteps)
    {
        ArgumentNullException.ThrowIfNull(timesteps);
        return Sinusoid.Adm(timesteps, (int)Config.BlockOutChannels[0], 10000, Config.FlipSinToCos, Config.FreqShift);
    }

    /// <summary>
    /// Predicted noise for latents <paramref name="sample"/> [B, C, H, W] at <paramref name="timesteps"/> ([B] or 0-d,
    /// broadcast to the batch) given <paramref name="encoderHiddenStates"/> [B, 77, cross_attention_dim].
    /// </summary>
    public Tensor forward(Tensor sample, Tensor timesteps, Tensor encoderHiddenStates)
    {
        if (sample.dim() != 4 || sample.shape[1] != Config.InChannels)
            throw new ArgumentException($"UNet2DConditionModel expects latents [B, {Config.InChannels}, H, W]; got [{string.Join(", ", sample.shape)}].");
        if (encoderHiddenStates.dim() != 3 || encoderHiddenStates.shape[2] != Config.CrossAttentionDim || encoderHiddenStates.shape[0] != sample.shape[0])
            throw new ArgumentException($"encoder_hidden_states must be [{sample.shape[0]}, N, {Config.CrossAttentionDim}]; got [{string.Join(", ", encoderHiddenStates.shape)}].");
        long b = sample.shape[0];
        var t = timesteps.dim() == 0 ? timesteps.expand(b) : timesteps;
        if (t.shape[0] != b) throw new ArgumentException($"{t.shape[0]} timesteps for a batch of {b}.");
        var emb = time_embedding.forward(TimeProjection(t).to(sample.dtype));

        // Upsample to the skip's size when the latent is not divisible by 2^(levels-1).
        long factor = 1L << (Config.BlockOutChannels.Count - 1);
        bool forwardUpsampleSize = sample.shape[2] % factor != 0 || sample.shape[3] % factor != 0;

        var x = conv_in.forward(sample);
        var skips = new List<Tensor> { x };
        foreach (var block in down_blocks) x = block.forward(x, emb, encoderHiddenStates, skips);
        x = mid_block.forward(x, emb, encoderHiddenStates);
        for (int i = 0; i < up_blocks.Count; i++)
        {
            var block = up_blocks[i];
            bool last = i == up_blocks.Count - 1;
            long[]? size = null;
            if (!last && forwardUpsampleSize)
            {
                var target = skips[skips.Count - block.Layers - 1];
                size = new[] { target.shape[2], target.shape[3] };
            }
            x = block.forward(x, emb, encoderHiddenStates, skips, size);
        }
        return conv_out.forward(F.silu(conv_norm_out.forward(x)));
    }
}
