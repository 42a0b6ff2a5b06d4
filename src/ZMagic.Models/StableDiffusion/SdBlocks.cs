using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Models.StableDiffusion;

// Building blocks of the diffusers Stable Diffusion UNet and VAE. Field names equal diffusers attribute names so that
// `diffusion_pytorch_model.safetensors` state dicts load unchanged.

/// <summary>diffusers <c>ResnetBlock2D</c> (time_embedding_norm "default", output_scale_factor 1).</summary>
public sealed class ResnetBlock2D : nn.Module
{
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly Linear? time_emb_proj;
    private readonly GroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;

    /// <summary>Creates the block; <paramref name="tembChannels"/> 0 means no time embedding (VAE).</summary>
    public ResnetBlock2D(long inChannels, long outChannels, long tembChannels, long groups, double eps) : base(nameof(ResnetBlock2D))
    {
        norm1 = nn.GroupNorm(groups, inChannels, eps);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, padding: 1);
        if (tembChannels > 0) time_emb_proj = nn.Linear(tembChannels, outChannels);
        norm2 = nn.GroupNorm(groups, outChannels, eps);
        conv2 = nn.Conv2d(outChannels, outChannels, 3, padding: 1);
        if (inChannels != outChannels) conv_shortcut = nn.Conv2d(inChannels, outChannels, 1);
        RegisterComponents();
    }

    /// <summary>Forward pass; <paramref name="temb"/> is the time embedding [B, T] or null.</summary>
    public Tensor forward(Tensor x, Tensor? temb)
    {
        var h = conv1.forward(F.silu(norm1.forward(x)));
        if (time_emb_proj is not null && temb is not null)
            h = h + time_emb_proj.forward(F.silu(temb)).unsqueeze(-1).unsqueeze(-1);
        h = conv2.forward(F.silu(norm2.forward(h)));
        var shortcut = conv_shortcut is null ? x : conv_shortcut.forward(x);
        return shortcut + h;
    }
}

/// <summary>
/// diffusers <c>Attention</c> with the classic processor: q/k/v projections, head-major split, scaled dot-product,
/// softmax over keys, merged heads, <c>to_out.0</c>. Used as self/cross attention in the UNet and as the VAE mid-block
/// attention (with group norm, bias, float32 softmax and a residual).
/// </summary>
public sealed class SdAttention : nn.Module
{
    private readonly GroupNorm? group_norm;
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<Linear> to_out;
    private readonly long _heads;
    private readonly long _dimHead;
    private readonly bool _upcastSoftmax;
    private readonly bool _residual;

    /// <summary>Creates the attention.</summary>
    public SdAttention(long queryDim, long? crossDim, long heads, long dimHead, bool bias, bool upcastSoftmax = false,
        long normGroups = 0, double normEps = 1e-6, bool residualConnection = false) : base(nameof(SdAttention))
    {
        long inner = heads * dimHead;
        if (normGroups > 0) group_norm = nn.GroupNorm(normGroups, queryDim, normEps);
        to_q = nn.Linear(queryDim, inner, hasBias: bias);
        to_k = nn.Linear(crossDim ?? queryDim, inner, hasBias: bias);
        to_v = nn.Linear(crossDim ?? queryDim, inner, hasBias: bias);
        to_out = nn.ModuleList(nn.Linear(inner, queryDim, hasBias: true));
        _heads = heads;
        _dimHead = dimHead;
        _upcastSoftmax = upcastSoftmax;
        _residual = residualConnection;
        RegisterComponents();
    }

    /// <summary>
    /// Attention over <paramref name="x"/> [B, N, C] (or [B, C, H, W] for the VAE form), keys and values from
    /// <paramref name="context"/> [B, M, Cc] when given (cross attention), else from x.
    /// </summary>
    public Tensor forward(Tensor x, Tensor? context = null)
    {
        var residual = x;
        long b = x.shape[0], c = 0, hgt = 0, wid = 0;
        bool spatial = x.dim() == 4;
        if (spatial)
        {
            c = x.shape[1]; hgt = x.shape[2]; wid = x.shape[3];
            x = x.view(b, c, hgt * wid).transpose(1, 2);
        }
        if (group_norm is not null) x = group_norm.forward(x.transpose(1, 2)).transpose(1, 2);
        var ctx = context ?? x;
        var q = SplitHeads(to_q.forward(x));
        var k = SplitHeads(to_k.forward(ctx));
        var v = SplitHeads(to_v.forward(ctx));
        var scores = torch.matmul(q, k.transpose(-1, -2)) * Math.Pow(_dimHead, -0.5);
        var probs = _upcastSoftmax ? scores.to(ScalarType.Float32).softmax(-1).to(q.dtype) : scores.softmax(-1);
        var o = torch.matmul(probs, v);
        // [B, heads, N, d] -> [B, N, heads * d] (head-major channels)
        o = o.permute(0, 2, 1, 3).reshape(b, -1, _heads * _dimHead);
        o = to_out[0].forward(o);
        if (spatial) o = o.transpose(-1, -2).reshape(b, c, hgt, wid);
        if (_residual) o = o + residual;
        return o;
    }

    private Tensor SplitHeads(Tensor t) => t.view(t.shape[0], t.shape[1], _heads, _dimHead).permute(0, 2, 1, 3);
}

/// <summary>diffusers <c>GEGLU</c>: <c>h, gate = proj(x).chunk(2); h * gelu(gate)</c> (exact erf GELU).</summary>
public sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    private readonly Linear proj;

    /// <summary>Creates the projection <paramref name="dimIn"/> -> 2 x <paramref name="dimOut"/>.</summary>
    public GEGLU(long dimIn, long dimOut) : base(nameof(GEGLU))
    {
        proj = nn.Linear(dimIn, dimOut * 2);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        var parts = proj.forward(x).chunk(2, -1);
        return parts[0] * F.gelu(parts[1]);
    }
}

/// <summary>diffusers <c>FeedForward</c> with GEGLU: <c>net.0</c> GEGLU, <c>net.1</c> dropout, <c>net.2</c> Linear.</summary>
public sealed class SdFeedForward : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    /// <summary>Creates the feed-forward with inner width 4 x <paramref name="dim"/>.</summary>
    public SdFeedForward(long dim) : base(nameof(SdFeedForward))
    {
        long inner = dim * 4;
        net = nn.ModuleList<nn.Module<Tensor, Tensor>>(new GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim));
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => net[2].forward(net[0].forward(x));
}

/// <summary>diffusers <c>BasicTransformerBlock</c>: self attention, cross attention, GEGLU feed-forward, pre-LayerNorm.</summary>
public sealed class BasicTransformerBlock : nn.Module
{
    private readonly LayerNorm norm1;
    private readonly SdAttention attn1;
    private readonly LayerNorm norm2;
    private readonly SdAttention attn2;
    private readonly LayerNorm norm3;
    private readonly SdFeedForward ff;

    /// <summary>Creates the block.</summary>
    public BasicTransformerBlock(long dim, long heads, long dimHead, long crossDim) : base(nameof(BasicTransformerBlock))
    {
        norm1 = nn.LayerNorm(new[] { dim }, 1e-5);
        attn1 = new SdAttention(dim, null, heads, dimHead, bias: false);
        norm2 = nn.LayerNorm(new[] { dim }, 1e-5);
        attn2 = new SdAttention(dim, crossDim, heads, dimHead, bias: false);
        norm3 = nn.LayerNorm(new[] { dim }, 1e-5);
        ff = new SdFeedForward(dim);
        RegisterComponents();
    }

    /// <summary>Forward over tokens [B, N, C] with text context [B, M, Cc].</summary>
    public Tensor forward(Tensor x, Tensor context)
    {
        x = attn1.forward(norm1.forward(x)) + x;
        x = attn2.forward(norm2.forward(x), context) + x;
        return ff.forward(norm3.forward(x)) + x;
    }
}

/// <summary>diffusers <c>Transformer2DModel</c> (continuous input): GroupNorm, proj_in, transformer blocks, proj_out, residual.</summary>
public sealed class Transformer2DModel : nn.Module
{
    private readonly GroupNorm norm;
    private readonly nn.Module<Tensor, Tensor> proj_in;
    private readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    private readonly nn.Module<Tensor, Tensor> proj_out;
    private readonly bool _linear;

    /// <summary>Creates the model; <paramref name="useLinearProjection"/> selects Linear (SD 2.x) or 1x1 conv (SD 1.x) projections.</summary>
    public Transformer2DModel(long channels, long heads, long crossDim, long groups, int layers, bool useLinearProjection) : base(nameof(Transformer2DModel))
    {
        if (heads < 1 || channels % heads != 0)
            throw new ArgumentException($"Transformer2DModel: {channels} channels are not divisible by {heads} heads.");
        long dimHead = channels / heads;
        norm = nn.GroupNorm(groups, channels, 1e-6);
        _linear = useLinearProjection;
        proj_in = useLinearProjection ? nn.Linear(channels, channels) : nn.Conv2d(channels, channels, 1);
        transformer_blocks = nn.ModuleList(Enumerable.Range(0, layers).Select(_ => new BasicTransformerBlock(channels, heads, dimHead, crossDim)).ToArray());
        proj_out = useLinearProjection ? nn.Linear(channels, channels) : nn.Conv2d(channels, channels, 1);
        RegisterComponents();
    }

    /// <summary>Forward over a feature map [B, C, H, W] with text context.</summary>
    public Tensor forward(Tensor x, Tensor context)
    {
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var residual = x;
        var t = norm.forward(x);
        if (!_linear) t = proj_in.forward(t);
        t = t.permute(0, 2, 3, 1).reshape(b, h * w, c);
        if (_linear) t = proj_in.forward(t);
        foreach (var block in transformer_blocks) t = block.forward(t, context);
        if (_linear) t = proj_out.forward(t);
        t = t.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous();
        if (!_linear) t = proj_out.forward(t);
        return t + residual;
    }
}

/// <summary>diffusers <c>Downsample2D</c> with a conv: stride 2; padding 0 means the VAE's asymmetric (0,1,0,1) pad.</summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly long _padding;

    /// <summary>Creates the downsampler.</summary>
    public Downsample2D(long channels, long padding) : base(nameof(Downsample2D))
    {
        _padding = padding;
        conv = nn.Conv2d(channels, channels, 3, stride: 2, padding: padding);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        if (_padding == 0) x = F.pad(x, new long[] { 0, 1, 0, 1 });
        return conv.forward(x);
    }
}

/// <summary>diffusers <c>Upsample2D</c> with a conv: nearest x2 (or to a given size), then a 3x3 conv.</summary>
public sealed class Upsample2D : nn.Module
{
    private readonly Conv2d conv;

    /// <summary>Creates the upsampler.</summary>
    public Upsample2D(long channels) : base(nameof(Upsample2D))
    {
        conv = nn.Conv2d(channels, channels, 3, padding: 1);
        RegisterComponents();
    }

    /// <summary>Upsamples to <paramref name="size"/> when given (odd latent sizes), else by 2.</summary>
    public Tensor forward(Tensor x, long[]? size = null)
    {
        var up = size is null
            ? F.interpolate(x, scale_factor: new double[] { 2, 2 }, mode: InterpolationMode.Nearest)
            : F.interpolate(x, size: size, mode: InterpolationMode.Nearest);
        return conv.forward(up);
    }
}

/// <summary>diffusers <c>TimestepEmbedding</c>: linear_1, SiLU, linear_2.</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Linear linear_1;
    private readonly Linear linear_2;

    /// <summary>Creates the MLP.</summary>
    public TimestepEmbedding(long inChannels, long dim) : base(nameof(TimestepEmbedding))
    {
        linear_1 = nn.Linear(inChannels, dim);
        linear_2 = nn.Linear(dim, dim);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => linear_2.forward(F.silu(linear_1.forward(x)));
}
