using TorchSharp;
using TorchSharp.Modules;
using ZMagic.Models.Nn;
using static TorchSharp.torch;

namespace ZMagic.Models.Ddpm;

/// <summary>
/// The ermongroup DDPM UNet (<c>models/diffusion.py</c> class <c>Model</c>, as used by SDEdit, DDRM, DDNM and FreeDoM):
/// <c>forward(x, t)</c> returns epsilon. State-dict keys equal the reference (<c>temb.dense.0.weight</c>, <c>conv_in.weight</c>,
/// <c>down.0.block.0.norm1.weight</c>, <c>mid.attn_1.q.weight</c>, <c>up.5.upsample.conv.weight</c>, <c>norm_out.weight</c>, <c>conv_out.weight</c>, ...).
/// </summary>
/// <remarks>
/// GroupNorm(32, eps 1e-6), swish, timestep embedding [sin, cos] with frequencies <c>exp(-k ln(10000)/(half-1))</c> computed in
/// float32 (as the reference hard-codes) and cast to the parameter dtype, asymmetric (0,1,0,1) downsample padding, nearest 2x
/// upsampling. Works in float32 and float64 and is twice differentiable with respect to <c>x</c>.
/// </remarks>
public sealed class DdpmUNet : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE0044, CS0414 // fields are read by TorchSharp's reflection-based registration
    private readonly Parameter? logvar;
    private readonly DdpmTemb temb;
    private readonly Conv2d conv_in;
    private readonly ModuleList<DdpmLevel> down;
    private readonly DdpmMid mid;
    private readonly ModuleList<DdpmLevel> up;
    private readonly GroupNormF norm_out;
    private readonly Conv2d conv_out;
#pragma warning restore IDE0044, CS0414

    /// <summary>Builds the network for <paramref name="config"/> with PyTorch default initialisation.</summary>
    /// <param name="config">Architecture.</param>
    /// <param name="device">Where to allocate the parameters (CPU by default; the "meta" device allocates nothing).</param>
    public DdpmUNet(DdpmUNetConfig config, Device? device = null) : base("Model")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        long ch = config.Ch, tembCh = ch * 4;
        int levels = config.ChMult.Count;
        var attnRes = new HashSet<int>(config.AttnResolutions);

        if (config.ModelType == "bayesian") logvar = new Parameter(torch.zeros(config.NumDiffusionTimesteps, device: device));
        temb = new DdpmTemb(ch, tembCh, device);
        conv_in = nn.Conv2d(config.InChannels, ch, 3, stride: 1, padding: 1, device: device);

        int currRes = config.Resolution;
        var inChMult = new[] { 1 }.Concat(config.ChMult).ToArray();
        long blockIn = ch;
        var downLevels = new DdpmLevel[levels];
        for (int level = 0; level < levels; level++)
        {
            var blocks = new List<DdpmResnetBlock>();
            var attns = new List<DdpmAttnBlock>();
            blockIn = ch * inChMult[level];
            long blockOut = ch * config.ChMult[level];
            for (int b = 0; b < config.NumResBlocks; b++)
            {
                blocks.Add(new DdpmResnetBlock(blockIn, blockOut, tembCh, config.Dropout, false, device));
                blockIn = blockOut;
                if (attnRes.Contains(currRes)) attns.Add(new DdpmAttnBlock(blockIn, device));
            }
            DdpmDownsample? ds = null;
            if (level != levels - 1)
            {
                ds = new DdpmDownsample(blockIn, config.ResampWithConv, device);
                currRes /= 2;
            }
            downLevels[level] = new DdpmLevel([.. blocks], [.. attns], ds, null);
        }
        down = new ModuleList<DdpmLevel>(downLevels);

        mid = new DdpmMid(blockIn, tembCh, config.Dropout, device);

        var upLevels = new DdpmLevel[levels];
        for (int level = levels - 1; level >= 0; level--)
        {
            var blocks = new List<DdpmResnetBlock>();
            var attns = new List<DdpmAttnBlock>();
            long blockOut = ch * config.ChMult[level];
            long skipIn = ch * config.ChMult[level];
            for (int b = 0; b <= config.NumResBlocks; b++)
            {
                if (b == config.NumResBlocks) skipIn = ch * inChMult[level];
                blocks.Add(new DdpmResnetBlock(blockIn + skipIn, blockOut, tembCh, config.Dropout, false, device));
                blockIn = blockOut;
                if (attnRes.Contains(currRes)) attns.Add(new DdpmAttnBlock(blockIn, device));
            }
            DdpmUpsample? us = null;
            if (level != 0)
            {
                us = new DdpmUpsample(blockIn, config.ResampWithConv, device);
                currRes *= 2;
            }
            upLevels[level] = new DdpmLevel([.. blocks], [.. attns], null, us);
        }
        up = new ModuleList<DdpmLevel>(upLevels);

        norm_out = DdpmLayers.Normalize(blockIn, device);
        conv_out = nn.Conv2d(blockIn, config.OutCh, 3, stride: 1, padding: 1, device: device);
        RegisterComponents();
    }

    /// <summary>The architecture this network was built for.</summary>
    public DdpmUNetConfig Config { get; }

    /// <summary>
    /// The reference <c>get_timestep_embedding(t, dim)</c>: <c>cat(sin(t f), cos(t f))</c> with
    /// <c>f = exp(arange(dim/2) * -(ln(10000) / (dim/2 - 1)))</c>, computed in float32 whatever the dtype of <paramref name="t"/>,
    /// as torch ops on its device (no copy to the host); odd dims get a zero column. The float32 steps are the reference's, so the
    /// result differs from it only by the device's exp/sin/cos rounding (about an ulp).
    /// </summary>
    /// <param name="t">Timesteps [B] (any numeric dtype; may be fractional).</param>
    /// <param name="dim">Embedding width (at least 4).</param>
    /// <returns>A float32 [B, dim] tensor on the device of <paramref name="t"/>.</returns>
    public static Tensor TimestepEmbedding(Tensor t, int dim)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.dim() != 1) throw new ArgumentException($"Timesteps must be 1-D [B]; got shape [{string.Join(", ", t.shape)}].", nameof(t));
        if (dim < 4) throw new ArgumentOutOfRangeException(nameof(dim), dim, "The DDPM timestep embedding needs at least 4 channels.");
        return Sinusoid.Ddpm(t, dim);
    }

    /// <summary>
    /// Test seam: when set, replaces <see cref="TimestepEmbedding"/> in <see cref="forward"/> (same contract: float32 [B, dim]).
    /// The float64 golden tests feed the reference's own CPU sinusoid through it, because their tolerances (1e-10) sit far below
    /// what one float32 ulp of a sin/cos value does to a float64 output (about 1e-7).
    /// </summary>
    internal Func<Tensor, int, Tensor>? SinusoidOverride { get; set; }

    /// <summary>epsilon(x, t) for x [B, in_channels, R, R] and t [B].</summary>
    /// <exception cref="ArgumentException">The shapes do not fit the config.</exception>
    public override Tensor forward(Tensor x, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        var c = Config;
        if (x.dim() != 4 || x.shape[1] != c.InChannels || x.shape[2] != c.Resolution || x.shape[3] != c.Resolution)
            throw new ArgumentException($"DDPM UNet expects x of shape [B, {c.InChannels}, {c.Resolution}, {c.Resolution}]; got [{string.Join(", ", x.shape)}].", nameof(x));
        if (t.dim() != 1 || t.shape[0] != x.shape[0])
            throw new ArgumentException($"DDPM UNet expects t of shape [{x.shape[0]}] (one timestep per item); got [{string.Join(", ", t.shape)}].", nameof(t));

        using var scope = torch.NewDisposeScope();
        var dense0 = temb.dense[0];
        var sinusoid = SinusoidOverride is { } custom ? custom(t, (int)c.Ch) : TimestepEmbedding(t, (int)c.Ch);
        var emb = sinusoid.to(dense0.weight!.dtype);
        emb = temb.dense[1].forward(Act.Swish(dense0.forward(emb)));

        var hs = new List<Tensor> { conv_in.forward(x) };
        int levels = c.ChMult.Count;
        for (int level = 0; level < levels; level++)
        {
            var lv = down[level];
            for (int b = 0; b < c.NumResBlocks; b++)
            {
                var h = lv.block[b].forward(hs[^1], emb);
                if (lv.attn.Count > 0) h = lv.attn[b].forward(h);
                hs.Add(h);
            }
            if (level != levels - 1) hs.Add(lv.downsample!.forward(hs[^1]));
        }

        var hm = hs[^1];
        hm = mid.block_1.forward(hm, emb);
        hm = mid.attn_1.forward(hm);
        hm = mid.block_2.forward(hm, emb);

        for (int level = levels - 1; level >= 0; level--)
        {
            var lv = up[level];
            for (int b = 0; b <= c.NumResBlocks; b++)
            {
                var skip = hs[^1];
                hs.RemoveAt(hs.Count - 1);
                hm = lv.block[b].forward(torch.cat([hm, skip], 1), emb);
                if (lv.attn.Count > 0) hm = lv.attn[b].forward(hm);
            }
            if (level != 0) hm = lv.upsample!.forward(hm);
        }

        hm = conv_out.forward(Act.Swish(norm_out.forward(hm)));
        return hm.MoveToOuterDisposeScope();
    }
}
