using TorchSharp;
using TorchSharp.Modules;
using ZMagic.Models.Nn;
using static TorchSharp.torch;

namespace ZMagic.Models.Adm;

/// <summary>
/// OpenAI guided-diffusion's <c>UNetModel</c> (unet.py; the copy FreeDoM ships is identical) with every constructor option.
/// State-dict keys equal the reference: <c>time_embed.0.weight</c>, <c>label_emb.weight</c>, <c>input_blocks.0.0.weight</c>,
/// <c>input_blocks.1.0.in_layers.0.weight</c>, <c>middle_block.1.qkv.weight</c>, <c>output_blocks.2.2.*</c>, <c>out.2.weight</c>, ...
/// </summary>
/// <remarks>
/// Timestep embedding <c>cat(cos, sin)</c> (cos first), <c>freqs = exp(-ln(max_period) k / half)</c> in float32; GroupNorm(32, eps 1e-5)
/// computed in at least float32; SiLU; scale-shift norm <c>norm(h) (1 + scale) + shift</c>; attention scale <c>ch^-1/4</c> on q and k with a
/// float32-or-wider softmax. The torso runs in the parameters' dtype: fp16 checkpoints are loaded into float32 modules.
/// Differentiable (twice) with respect to <c>x</c>.
/// </remarks>
public sealed class AdmUNet : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE0044 // fields are read by TorchSharp's reflection-based registration
    private readonly Sequential time_embed;
    private readonly Embedding? label_emb;
    private readonly ModuleList<TimestepEmbedSequential> input_blocks;
    private readonly TimestepEmbedSequential middle_block;
    private readonly ModuleList<TimestepEmbedSequential> output_blocks;
    private readonly Sequential @out;
#pragma warning restore IDE0044
    private readonly Linear[] _timeEmbed0 = new Linear[1]; // alias (arrays are not registered)

    /// <summary>Builds the network for <paramref name="config"/> with PyTorch default initialisation.</summary>
    /// <param name="config">Architecture.</param>
    /// <param name="device">Where to allocate the parameters (CPU by default; the "meta" device allocates nothing).</param>
    public AdmUNet(AdmUNetConfig config, Device? device = null) : base("UNetModel")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int dims = config.Dims;
        long mc = config.ModelChannels, ted = mc * 4;
        var attn = new HashSet<int>(config.AttentionResolutions);

        _timeEmbed0[0] = nn.Linear(mc, ted, device: device);
        time_embed = nn.Sequential(("0", _timeEmbed0[0]), ("1", nn.SiLU()), ("2", nn.Linear(ted, ted, device: device)));
        if (config.NumClasses is int nc) label_emb = nn.Embedding(nc, ted, device: device);

        long ch = config.LevelChannels(0), inputCh = ch;
        var inputs = new List<TimestepEmbedSequential> { new(AdmLayers.ConvNd(dims, config.InChannels, ch, 3, 1, 1, device)) };
        var chans = new List<long> { ch };
        int ds = 1;
        for (int level = 0; level < config.ChannelMult.Count; level++)
        {
            long levelCh = config.LevelChannels(level);
            for (int r = 0; r < config.NumResBlocks; r++)
            {
                var layers = new List<nn.Module>
                {
                    new AdmResBlock(ch, ted, config.Dropout, levelCh, false, config.UseScaleShiftNorm, dims, false, false, device),
                };
                ch = levelCh;
                if (attn.Contains(ds))
                    layers.Add(new AdmAttentionBlock(ch, config.NumHeads, config.NumHeadChannels, config.UseNewAttentionOrder, device));
                inputs.Add(new TimestepEmbedSequential([.. layers]));
                chans.Add(ch);
            }
            if (level != config.ChannelMult.Count - 1)
            {
                long outCh = ch;
                nn.Module down = config.ResblockUpdown
                    ? new AdmResBlock(ch, ted, config.Dropout, outCh, false, config.UseScaleShiftNorm, dims, false, true, device)
                    : new AdmDownsample(ch, config.ConvResample, dims, outCh, device);
                inputs.Add(new TimestepEmbedSequential(down));
                ch = outCh;
                chans.Add(ch);
                ds *= 2;
            }
        }
        input_blocks = new ModuleList<TimestepEmbedSequential>([.. inputs]);

        middle_block = new TimestepEmbedSequential(
            new AdmResBlock(ch, ted, config.Dropout, null, false, config.UseScaleShiftNorm, dims, false, false, device),
            new AdmAttentionBlock(ch, config.NumHeads, config.NumHeadChannels, config.UseNewAttentionOrder, device),
            new AdmResBlock(ch, ted, config.Dropout, null, false, config.UseScaleShiftNorm, dims, false, false, device));

        var outputs = new List<TimestepEmbedSequential>();
        int headsUp = config.NumHeadsUpsample == -1 ? config.NumHeads : config.NumHeadsUpsample;
        for (int level = config.ChannelMult.Count - 1; level >= 0; level--)
        {
            long levelCh = config.LevelChannels(level);
            for (int i = 0; i <= config.NumResBlocks; i++)
            {
                long ich = chans[^1];
                chans.RemoveAt(chans.Count - 1);
                var layers = new List<nn.Module>
                {
                    new AdmResBlock(ch + ich, ted, config.Dropout, levelCh, false, config.UseScaleShiftNorm, dims, false, false, device),
                };
                ch = levelCh;
                if (attn.Contains(ds))
                    layers.Add(new AdmAttentionBlock(ch, headsUp, config.NumHeadChannels, config.UseNewAttentionOrder, device));
                if (level != 0 && i == config.NumResBlocks)
                {
                    long outCh = ch;
                    layers.Add(config.ResblockUpdown
                        ? new AdmResBlock(ch, ted, config.Dropout, outCh, false, config.UseScaleShiftNorm, dims, true, false, device)
                        : new AdmUpsample(ch, config.ConvResample, dims, outCh, device));
                    ds /= 2;
                }
                outputs.Add(new TimestepEmbedSequential([.. layers]));
            }
        }
        output_blocks = new ModuleList<TimestepEmbedSequential>([.. outputs]);

        @out = nn.Sequential(("0", AdmLayers.Normalization(ch, device)), ("1", nn.SiLU()),
            ("2", AdmLayers.ConvNd(dims, inputCh, config.OutChannels, 3, 1, 1, device)));
        RegisterComponents();
    }

    /// <summary>The architecture this network was built for.</summary>
    public AdmUNetConfig Config { get; }

    /// <summary>
    /// The reference <c>timestep_embedding(t, dim, max_period)</c>: <c>cat(cos(t f), sin(t f))</c> with
    /// <c>f = exp(-ln(max_period) * arange(half) / half)</c>, in float32, as torch ops on the device of <paramref name="t"/> (no
    /// copy to the host); odd dims get a zero column. The float32 steps are the reference's, so the result differs from it only
    /// by the device's exp/sin/cos rounding (about an ulp).
    /// </summary>
    /// <param name="t">Timesteps [N] (may be fractional).</param>
    /// <param name="dim">Embedding width.</param>
    /// <param name="maxPeriod">Controls the minimum frequency.</param>
    /// <returns>A float32 [N, dim] tensor on the device of <paramref name="t"/>.</returns>
    public static Tensor TimestepEmbedding(Tensor t, int dim, double maxPeriod = 10000)
    {
        ArgumentNullException.ThrowIfNull(t);
        if (t.dim() != 1) throw new ArgumentException($"Timesteps must be 1-D [N]; got shape [{string.Join(", ", t.shape)}].", nameof(t));
        if (dim < 2) throw new ArgumentOutOfRangeException(nameof(dim), dim, "The timestep embedding needs at least 2 channels.");
        return Sinusoid.Adm(t, dim, maxPeriod);
    }

    /// <summary>Output [N, out_channels, ...] for an unconditional model.</summary>
    public override Tensor forward(Tensor x, Tensor timesteps) => forward(x, timesteps, null);

    /// <summary>Output [N, out_channels, ...]; <paramref name="y"/> [N] (int64 labels) is required exactly when the model is class-conditional.</summary>
    /// <exception cref="ArgumentException">Shapes do not fit, or labels are given/missing wrongly.</exception>
    public Tensor forward(Tensor x, Tensor timesteps, Tensor? y)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(timesteps);
        var c = Config;
        if (x.dim() != c.Dims + 2 || x.shape[1] != c.InChannels)
            throw new ArgumentException($"UNetModel expects x of shape [N, {c.InChannels}, ...] with {c.Dims} spatial dims; got [{string.Join(", ", x.shape)}].", nameof(x));
        int divisor = 1 << (c.ChannelMult.Count - 1);
        for (int d = c.Dims == 3 ? 3 : 2; d < x.dim(); d++)
            if (x.shape[d] % divisor != 0)
                throw new ArgumentException($"UNetModel with {c.ChannelMult.Count} levels needs spatial sizes divisible by {divisor}; got [{string.Join(", ", x.shape)}].", nameof(x));
        if (timesteps.dim() != 1 || timesteps.shape[0] != x.shape[0])
            throw new ArgumentException($"timesteps must have shape [{x.shape[0]}]; got [{string.Join(", ", timesteps.shape)}].", nameof(timesteps));
        if ((y is not null) != (c.NumClasses is not null))
            throw new ArgumentException("must specify y if and only if the model is class-conditional", nameof(y));
        if (y is not null && (y.dim() != 1 || y.shape[0] != x.shape[0]))
            throw new ArgumentException($"y must have shape [{x.shape[0]}]; got [{string.Join(", ", y.shape)}].", nameof(y));

        using var scope = torch.NewDisposeScope();
        var emb = time_embed.forward(TimestepEmbedding(timesteps, (int)c.ModelChannels).to(_timeEmbed0[0].weight!.dtype));
        if (label_emb is not null) emb = emb + label_emb.forward(y!.to(ScalarType.Int64));

        var hs = new List<Tensor>();
        var h = x;
        foreach (var block in input_blocks)
        {
            h = block.forward(h, emb);
            hs.Add(h);
        }
        h = middle_block.forward(h, emb);
        foreach (var block in output_blocks)
        {
            var skip = hs[^1];
            hs.RemoveAt(hs.Count - 1);
            h = block.forward(torch.cat([h, skip], 1), emb);
        }
        return @out.forward(h.to(x.dtype)).MoveToOuterDisposeScope();
    }
}
