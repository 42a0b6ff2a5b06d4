using System.Text.Json;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Models.StableDiffusion;

/// <summary>The diffusers <c>AutoencoderKL</c> config (SD 1.x VAE by default).</summary>
public sealed record AutoencoderKLConfig
{
    /// <summary>Image channels in.</summary>
    public int InChannels { get; init; } = 3;
    /// <summary>Image channels out.</summary>
    public int OutChannels { get; init; } = 3;
    /// <summary>Channels per level.</summary>
    public IReadOnlyList<int> BlockOutChannels { get; init; } = new[] { 128, 256, 512, 512 };
    /// <summary>Resnets per encoder block (decoder blocks have one more).</summary>
    public int LayersPerBlock { get; init; } = 2;
    /// <summary>Latent channels.</summary>
    public int LatentChannels { get; init; } = 4;
    /// <summary>GroupNorm groups.</summary>
    public int NormNumGroups { get; init; } = 32;
    /// <summary>Image size it was trained at.</summary>
    public int SampleSize { get; init; } = 512;
    /// <summary>Latent scaling factor the pipeline applies (0.18215 for SD 1.x).</summary>
    public double ScalingFactor { get; init; } = 0.18215;

    /// <summary>The SD v1.5 VAE.</summary>
    public static AutoencoderKLConfig Sd15 { get; } = new();

    /// <summary>Parses a diffusers <c>vae/config.json</c> object.</summary>
    public static AutoencoderKLConfig FromJson(JsonElement json, string source = "config.json")
    {
        var c = new AutoencoderKLConfig();
        int Int(string name, int def) => json.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt32() : def;
        foreach (var key in new[] { "down_block_types", "up_block_types" })
            if (json.TryGetProperty(key, out var types) && types.ValueKind == JsonValueKind.Array)
                foreach (var t in types.EnumerateArray())
                    if (t.GetString() is not ("DownEncoderBlock2D" or "UpDecoderBlock2D"))
                        throw new FormatException($"{source}: {key} entry '{t.GetString()}' is not supported.");
        c = c with
        {
            InChannels = Int("in_channels", c.InChannels),
            OutChannels = Int("out_channels", c.OutChannels),
            BlockOutChannels = json.TryGetProperty("block_out_channels", out var b) && b.ValueKind == JsonValueKind.Array
                ? b.EnumerateArray().Select(e => e.GetInt32()).ToArray() : c.BlockOutChannels,
            LayersPerBlock = Int("layers_per_block", c.LayersPerBlock),
            LatentChannels = Int("latent_channels", c.LatentChannels),
            NormNumGroups = Int("norm_num_groups", c.NormNumGroups),
            SampleSize = Int("sample_size", c.SampleSize),
            ScalingFactor = json.TryGetProperty("scaling_factor", out var s) && s.ValueKind == JsonValueKind.Number ? s.GetDouble() : c.ScalingFactor,
        };
        if (c.BlockOutChannels.Count == 0) throw new FormatException($"{source}: block_out_channels is empty.");
        return c;
    }
}

/// <summary>VAE mid block (<c>UNetMidBlock2D</c>): resnet, single-head attention with group norm, resnet.</summary>
public sealed class VaeMidBlock : nn.Module
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<SdAttention> attentions;

    internal VaeMidBlock(long ch, long groups) : base(nameof(VaeMidBlock))
    {
        resnets = nn.ModuleList(new ResnetBlock2D(ch, ch, 0, groups, 1e-6), new ResnetBlock2D(ch, ch, 0, groups, 1e-6));
        attentions = nn.ModuleList(new SdAttention(ch, null, 1, ch, bias: true, upcastSoftmax: true, normGroups: groups, normEps: 1e-6, residualConnection: true));
        RegisterComponents();
    }

    internal Tensor forward(Tensor x) => resnets[1].forward(attentions[0].forward(resnets[0].forward(x, null)), null);
}

/// <summary>VAE encoder/decoder level: resnets and an optional down- or up-sampler.</summary>
public sealed class VaeBlock : nn.Module
{
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Downsample2D>? downsamplers;
    private readonly ModuleList<Upsample2D>? upsamplers;

    internal VaeBlock(long inCh, long outCh, int layers, long groups, bool down, bool up) : base(nameof(VaeBlock))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, layers).Select(i => new ResnetBlock2D(i == 0 ? inCh : outCh, outCh, 0, groups, 1e-6)).ToArray());
        if (down) downsamplers = nn.ModuleList(new Downsample2D(outCh, 0));
        if (up) upsamplers = nn.ModuleList(new Upsample2D(outCh));
        RegisterComponents();
    }

    internal Tensor forward(Tensor x)
    {
        foreach (var r in resnets) x = r.forward(x, null);
        if (downsamplers is not null) x = downsamplers[0].forward(x);
        if (upsamplers is not null) x = upsamplers[0].forward(x);
        return x;
    }
}

/// <summary>The VAE encoder (image -> 2 x latent channels of moments before quant_conv).</summary>
public sealed class VaeEncoder : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv_in;
    private readonly ModuleList<VaeBlock> down_blocks;
    private readonly VaeMidBlock mid_block;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    internal VaeEncoder(AutoencoderKLConfig c) : base(nameof(VaeEncoder))
    {
        var ch = c.BlockOutChannels;
        conv_in = nn.Conv2d(c.InChannels, ch[0], 3, padding: 1);
        var blocks = new List<VaeBlock>();
        long output = ch[0];
        for (int i = 0; i < ch.Count; i++)
        {
            long input = output;
            output = ch[i];
            blocks.Add(new VaeBlock(input, output, c.LayersPerBlock, c.NormNumGroups, down: i != ch.Count - 1, up: false));
        }
        down_blocks = nn.ModuleList(blocks.ToArray());
        mid_block = new VaeMidBlock(ch[^1], c.NormNumGroups);
        conv_norm_out = nn.GroupNorm(c.NormNumGroups, ch[^1], 1e-6);
        conv_out = nn.Conv2d(ch[^1], 2L * c.LatentChannels, 3, padding: 1);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        x = conv_in.forward(x);
        foreach (var b in down_blocks) x = b.forward(x);
        x = mid_block.forward(x);
        return conv_out.forward(F.silu(conv_norm_out.forward(x)));
    }
}

/// <summary>The VAE decoder (latent after post_quant_conv -> image).</summary>
public sealed class VaeDecoder : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv_in;
    private readonly VaeMidBlock mid_block;
    private readonly ModuleList<VaeBlock> up_blocks;
    private readonly GroupNorm conv_norm_out;
    private readonly Conv2d conv_out;

    internal VaeDecoder(AutoencoderKLConfig c) : base(nameof(VaeDecoder))
    {
        var rev = c.BlockOutChannels.Reverse().ToArray();
        conv_in = nn.Conv2d(c.LatentChannels, rev[0], 3, padding: 1);
        mid_block = new VaeMidBlock(rev[0], c.NormNumGroups);
        var blocks = new List<VaeBlock>();
        long output = rev[0];
        for (int i = 0; i < rev.Length; i++)
        {
            long prev = output;
            output = rev[i];
            blocks.Add(new VaeBlock(prev, output, c.LayersPerBlock + 1, c.NormNumGroups, down: false, up: i != rev.Length - 1));
        }
        up_blocks = nn.ModuleList(blocks.ToArray());
        conv_norm_out = nn.GroupNorm(c.NormNumGroups, rev[^1], 1e-6);
        conv_out = nn.Conv2d(rev[^1], c.OutChannels, 3, padding: 1);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor z)
    {
        var x = conv_in.forward(z);
        x = mid_block.forward(x);
        foreach (var b in up_blocks) x = b.forward(x);
        return conv_out.forward(F.silu(conv_norm_out.forward(x)));
    }
}

/// <summary>
/// diffusers <c>AutoencoderKL</c> (the Stable Diffusion VAE). Parameter names equal the current diffusers keys; the
/// legacy mid-block attention names of the public SD 1.5 file map through <see cref="LegacyKeyAliases"/>.
/// </summary>
public sealed class AutoencoderKL : nn.Module
{
    private readonly VaeEncoder encoder;
    private readonly VaeDecoder decoder;
    private readonly Conv2d quant_conv;
    private readonly Conv2d post_quant_conv;

    /// <summary>Builds the VAE from <paramref name="config"/> (random init).</summary>
    public AutoencoderKL(AutoencoderKLConfig config) : base(nameof(AutoencoderKL))
    {
        ArgumentNullException.ThrowIfNull(config);
        Config = config;
        encoder = new VaeEncoder(config);
        decoder = new VaeDecoder(config);
        quant_conv = nn.Conv2d(2L * config.LatentChannels, 2L * config.LatentChannels, 1);
        post_quant_conv = nn.Conv2d(config.LatentChannels, config.LatentChannels, 1);
        RegisterComponents();
    }

    /// <summary>The architecture.</summary>
    public AutoencoderKLConfig Config { get; }

    /// <summary>Spatial downsampling factor image -> latent (2^(levels-1)).</summary>
    public int DownsampleFactor => 1 << (Config.BlockOutChannels.Count - 1);

    /// <summary>The moments [mean | logvar] (before clamping) of the posterior of <paramref name="image"/> in [-1, 1].</summary>
    public Tensor EncodeMoments(Tensor image)
    {
        if (image.dim() != 4 || image.shape[1] != Config.InChannels)
            throw new ArgumentException($"AutoencoderKL expects images [B, {Config.InChannels}, H, W]; got [{string.Join(", ", image.shape)}].");
        if (image.shape[2] % DownsampleFactor != 0 || image.shape[3] % DownsampleFactor != 0)
            throw new ArgumentException($"Image size {image.shape[2]}x{image.shape[3]} is not divisible by the VAE factor {DownsampleFactor}.");
        return quant_conv.forward(encoder.forward(image));
    }

    /// <summary>The posterior mean and log-variance (clamped to [-30, 20]).</summary>
    public (Tensor Mean, Tensor LogVar) Encode(Tensor image)
    {
        var parts = EncodeMoments(image).chunk(2, 1);
        return (parts[0], parts[1].clamp(-30, 20));
    }

    /// <summary>Decodes unscaled latents [B, latent_channels, h, w] to images (roughly [-1, 1]).</summary>
    public Tensor Decode(Tensor latent)
    {
        if (latent.dim() != 4 || latent.shape[1] != Config.LatentChannels)
            throw new ArgumentException($"AutoencoderKL.Decode expects latents [B, {Config.LatentChannels}, h, w]; got [{string.Join(", ", latent.shape)}].");
        return decoder.forward(post_quant_conv.forward(latent));
    }

    /// <summary>
    /// Legacy (diffusers &lt; 0.17) mid-block attention key names of the public SD 1.5 VAE file -> current names:
    /// query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0, for the encoder and decoder mid blocks.
    /// </summary>
    public static IReadOnlyDictionary<string, string> LegacyKeyAliases { get; } = BuildAliases();

    private static Dictionary<string, string> BuildAliases()
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in new[] { "encoder", "decoder" })
            foreach (var (legacy, current) in new[] { ("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0") })
                foreach (var p in new[] { "weight", "bias" })
                    map[$"{part}.mid_block.attentions.0.{legacy}.{p}"] = $"{part}.mid_block.attentions.0.{current}.{p}";
        return map;
    }
}
