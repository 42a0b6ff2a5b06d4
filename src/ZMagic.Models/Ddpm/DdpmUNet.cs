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
    /// <c>f_k = exp(-k ln(10000) / (dim/2 - 1))</c>, computed in float32 whatever the dtype of <paramref name="t"/>; odd dims get a zero column.
    /// The float32 exp/sin/cos round exactly as PyTorch's CPU kernels (SLEEF, AVX2) do, so the result equals the reference bit for bit
    /// (computed on the host: the embedding is a constant for autograd).
    /// </summary>
    /// <param name="t">Timesteps [B] (any numeric dtype).</param>
    /// <param name="dim">Embedding width (at least 4).</param>
    /// <returns>A float32 [B, dim] tensor on the device of <paramref name="t"/>.</returns>
    public static Tensor TimestepEmbedding(Tensor t, int dim)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.dim() != 1) throw new ArgumentException($"Timesteps must be 1-D [B]; got shape [{string.Join(", ", t.shape)}].", nameof(t));
        if (dim < 4) throw new ArgumentOutOfRangeException(nameof(dim), dim, "The DDPM timestep embedding needs at least 4 channels.");
        int half = dim / 2;
        var freqs = Frequencies(half);
        float[] tf;
        using (var tc = t.detach().to(ScalarType.Float32).cpu()) tf = tc.data<float>().ToArray();
        int b = tf.Length;
        var args = new float[b * half];
        for (int i = 0; i < b; i++)
            for (int k = 0; k < half; k++) args[i * half + k] = tf[i] * freqs[k];
        var sin = SleefTrigF.Sin(args);
        var cos = SleefTrigF.Cos(args);
        var emb = new float[b * dim];
        for (int i = 0; i < b; i++)
        {
            Array.Copy(sin, i * half, emb, i * dim, half);
            Array.Copy(cos, i * half, emb, i * dim + half, half);
        }
        return torch.tensor(emb, new long[] { b, dim }, device: t.device);
    }

    /// <summary>
    /// <c>exp(k * float32(-ln(10000)/(half-1)))</c> for k = 0..half-1, with the float32 product and SLEEF's float32 exp rounding, i.e.
    /// the values PyTorch's vectorised CPU kernels give for <c>torch.exp(torch.arange(half, dtype=float32) * -emb)</c>.
    /// </summary>
    internal static float[] Frequencies(int half)
    {
        float minusStep = (float)(-(Math.Log(10000) / (half - 1)));
        var f = new float[half];
        int vecEnd = half / (2 * SleefTrigF.Lanes) * (2 * SleefTrigF.Lanes); // the scalar tail uses std::exp
        for (int k = 0; k < half; k++) f[k] = k < vecEnd ? SleefExpF.Exp(k * minusStep) : (float)Math.Exp(k * minusStep);
        return f;
    }

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
        var emb = TimestepEmbedding(t, (int)c.Ch).to(dense0.weight!.dtype);
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
