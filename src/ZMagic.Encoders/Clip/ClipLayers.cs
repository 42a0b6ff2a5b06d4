using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Clip;

// PyTorch-shaped building blocks of openai/CLIP model.py. Field names are the PyTorch attribute names so that
// state_dict keys match the reference checkpoints unchanged.
#pragma warning disable IDE1006

/// <summary>CLIP's activation, <c>x * sigmoid(1.702 x)</c>.</summary>
internal sealed class QuickGELU : Module<Tensor, Tensor>
{
    /// <summary>Creates the activation.</summary>
    public QuickGELU() : base(nameof(QuickGELU)) { }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => x * torch.sigmoid(x * 1.702);
}

/// <summary>
/// The parameters and math of <c>nn.MultiheadAttention</c> (packed <c>in_proj_weight</c> rows in q, k, v order,
/// <c>out_proj</c>), written out so it runs batch-first and supports double backward.
/// </summary>
internal sealed class ClipAttention : Module<Tensor, Tensor?, Tensor>
{
    private readonly int _heads;
    private readonly int _width;
    private readonly Parameter in_proj_weight;
    private readonly Parameter in_proj_bias;
    private readonly Linear out_proj;

    /// <summary>Creates attention of <paramref name="width"/> channels and <paramref name="heads"/> heads.</summary>
    public ClipAttention(int width, int heads, Device? device = null) : base(nameof(ClipAttention))
    {
        _heads = heads;
        _width = width;
        in_proj_weight = new Parameter(torch.empty(3 * width, width, device: device));
        in_proj_bias = new Parameter(torch.zeros(3 * width, device: device));
        out_proj = Linear(width, width, device: device);
        using (torch.no_grad())
        {
            init.xavier_uniform_(in_proj_weight);
            out_proj.bias!.zero_();
        }
        RegisterComponents();
    }

    /// <summary>Self-attention of <paramref name="x"/> [N, L, D]; <paramref name="mask"/> [L, L] is added to the scores.</summary>
    public override Tensor forward(Tensor x, Tensor? mask)
    {
        long n = x.shape[0], l = x.shape[1];
        int hd = _width / _heads;
        var qkv = functional.linear(x, in_proj_weight, in_proj_bias).chunk(3, -1);
        Tensor Split(Tensor t) => t.reshape(n, l, _heads, hd).transpose(1, 2);
        var q = Split(qkv[0]) * (1.0 / Math.Sqrt(hd));
        var k = Split(qkv[1]);
        var v = Split(qkv[2]);
        var scores = torch.matmul(q, k.transpose(-2, -1));
        if (mask is not null) scores = scores + mask;
        var attn = scores.softmax(-1);
        var o = torch.matmul(attn, v).transpose(1, 2).reshape(n, l, _width);
        return out_proj.forward(o);
    }
}

/// <summary>CLIP's MLP: <c>c_fc</c> (width -> 4 width), QuickGELU, <c>c_proj</c>.</summary>
internal sealed class ClipMlp : Module<Tensor, Tensor>
{
    private readonly Linear c_fc;
    private readonly QuickGELU gelu;
    private readonly Linear c_proj;

    /// <summary>Creates the MLP.</summary>
    public ClipMlp(int width, Device? device = null) : base(nameof(ClipMlp))
    {
        c_fc = Linear(width, 4 * width, device: device);
        gelu = new QuickGELU();
        c_proj = Linear(4 * width, width, device: device);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => c_proj.forward(gelu.forward(c_fc.forward(x)));
}

/// <summary><c>ResidualAttentionBlock</c>: <c>x + attn(ln_1(x))</c>, then <c>x + mlp(ln_2(x))</c>.</summary>
internal sealed class ResidualAttentionBlock : Module<Tensor, Tensor?, Tensor>
{
    private readonly ClipAttention attn;
    private readonly LayerNorm ln_1;
    private readonly ClipMlp mlp;
    private readonly LayerNorm ln_2;

    /// <summary>Creates a block.</summary>
    public ResidualAttentionBlock(int width, int heads, Device? device = null) : base(nameof(ResidualAttentionBlock))
    {
        attn = new ClipAttention(width, heads, device);
        ln_1 = LayerNorm(width, 1e-5, device: device);
        mlp = new ClipMlp(width, device);
        ln_2 = LayerNorm(width, 1e-5, device: device);
        RegisterComponents();
    }

    /// <summary>Runs the block on <paramref name="x"/> [N, L, D] with an optional additive attention mask.</summary>
    public override Tensor forward(Tensor x, Tensor? mask)
    {
        x = x + attn.forward(ln_1.forward(x), mask);
        return x + mlp.forward(ln_2.forward(x));
    }
}

/// <summary>CLIP's <c>Transformer</c>: <c>resblocks.0..N-1</c>.</summary>
internal sealed class ClipTransformer : Module<Tensor, Tensor?, Tensor>
{
    private readonly ModuleList<ResidualAttentionBlock> resblocks;

    /// <summary>Creates <paramref name="layers"/> blocks.</summary>
    public ClipTransformer(int width, int layers, int heads, Device? device = null) : base(nameof(ClipTransformer))
    {
        resblocks = new ModuleList<ResidualAttentionBlock>();
        for (int i = 0; i < layers; i++) resblocks.Add(new ResidualAttentionBlock(width, heads, device));
        RegisterComponents();
    }

    /// <summary>Number of blocks.</summary>
    public int Layers => resblocks.Count;

    /// <inheritdoc />
    public override Tensor forward(Tensor x, Tensor? mask)
    {
        foreach (var b in resblocks) x = b.forward(x, mask);
        return x;
    }

    /// <summary>Runs every block and returns each block's output [N, L, D] besides the last one.</summary>
    public Tensor ForwardWithFeatures(Tensor x, Tensor? mask, List<Tensor> features)
    {
        foreach (var b in resblocks)
        {
            x = b.forward(x, mask);
            features.Add(x);
        }
        return x;
    }
}

/// <summary>CLIP's <c>VisionTransformer</c> (the <c>visual</c> module of ViT models).</summary>
internal sealed class ClipVisionTransformer : Module<Tensor, Tensor>
{
    private readonly int _resolution;
    private readonly Conv2d conv1;
    private readonly Parameter class_embedding;
    private readonly Parameter positional_embedding;
    private readonly LayerNorm ln_pre;
    private readonly ClipTransformer transformer;
    private readonly LayerNorm ln_post;
    private readonly Parameter proj;

    /// <summary>Creates the image tower.</summary>
    public ClipVisionTransformer(int inputResolution, int patchSize, int width, int layers, int heads, int outputDim, Device? device = null)
        : base(nameof(ClipVisionTransformer))
    {
        _resolution = inputResolution;
        int grid = inputResolution / patchSize;
        double scale = Math.Pow(width, -0.5);
        conv1 = Conv2d(3, width, kernel_size: patchSize, stride: patchSize, bias: false, device: device);
        class_embedding = new Parameter(torch.randn(width, device: device) * scale);
        positional_embedding = new Parameter(torch.randn(grid * grid + 1, width, device: device) * scale);
        ln_pre = LayerNorm(width, 1e-5, device: device);
        transformer = new ClipTransformer(width, layers, heads, device);
        ln_post = LayerNorm(width, 1e-5, device: device);
        proj = new Parameter(torch.randn(width, outputDim, device: device) * scale);
        RegisterComponents();
    }

    /// <summary>The input side the positional embedding was built for.</summary>
    public int InputResolution => _resolution;

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => Forward(x, null);

    /// <summary>The projected image embedding [N, embed]; when <paramref name="features"/> is given, each block's tokens [N, L, D] are added.</summary>
    public Tensor Forward(Tensor x, List<Tensor>? features)
    {
        x = conv1.forward(x);
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1);
        var cls = class_embedding.to(x.dtype).expand(x.shape[0], 1, x.shape[^1]);
        x = torch.cat(new[] { cls, x }, 1);
        x = x + positional_embedding.to(x.dtype);
        x = ln_pre.forward(x);
        x = features is null ? transformer.forward(x, null) : transformer.ForwardWithFeatures(x, null, features);
        x = ln_post.forward(x[.., 0, ..]);
        return torch.matmul(x, proj);
    }
}
#pragma warning restore IDE1006
