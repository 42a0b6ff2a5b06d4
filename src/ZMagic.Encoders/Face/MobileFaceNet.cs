using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Face;

/// <summary>
/// MobileFaceNet with the GDC head as used for 68-point landmarks by cunjian/pytorch_face_landmark and FreeDoM's
/// <c>FaceLandMarkTool</c>: <c>MobileFaceNet([112, 112], 136)</c> loads <c>mobilefacenet_model_best.pth.tar</c>'s
/// <c>state_dict</c> unchanged.
/// </summary>
/// <remarks>
/// Input: faces [B, 3, 112, 112] in [0, 1], no mean/std normalisation (the original pipeline feeds BGR from cv2;
/// FreeDoM feeds the generated image as RGB). Output: (landmarks [B, 136] as interleaved x0, y0, x1, y1, ... in [0, 1]
/// relative to the crop, conv features [B, 512, 7, 7]). Use in <c>eval()</c> mode.
/// </remarks>
public sealed class MobileFaceNet : Module<Tensor, (Tensor Landmarks, Tensor Features)>
{
    private readonly ConvBlock conv1;
    private readonly ConvBlock conv2_dw;
    private readonly DepthWise conv_23;
    private readonly ResidualStack conv_3;
    private readonly DepthWise conv_34;
    private readonly ResidualStack conv_4;
    private readonly DepthWise conv_45;
    private readonly ResidualStack conv_5;
    private readonly ConvBlock conv_6_sep;
    private readonly GdcHead output_layer;

    /// <summary>The output size (136 = 68 landmarks x 2).</summary>
    public int EmbeddingSize { get; }

    /// <summary>Builds MobileFaceNet for 112x112 inputs with a GDC head of <paramref name="embeddingSize"/> outputs.</summary>
    public MobileFaceNet(int embeddingSize = 136) : base(nameof(MobileFaceNet))
    {
        if (embeddingSize < 1) throw new ArgumentOutOfRangeException(nameof(embeddingSize), embeddingSize, "embedding size must be positive.");
        EmbeddingSize = embeddingSize;
        conv1 = new ConvBlock(3, 64, 3, 2, 1, 1);
        conv2_dw = new ConvBlock(64, 64, 3, 1, 1, 64);
        conv_23 = new DepthWise(64, 64, false, 3, 2, 1, 128);
        conv_3 = new ResidualStack(64, 4, 128);
        conv_34 = new DepthWise(64, 128, false, 3, 2, 1, 256);
        conv_4 = new ResidualStack(128, 6, 256);
        conv_45 = new DepthWise(128, 128, false, 3, 2, 1, 512);
        conv_5 = new ResidualStack(128, 2, 256);
        conv_6_sep = new ConvBlock(128, 512, 1, 1, 0, 1);
        output_layer = new GdcHead(embeddingSize);
        RegisterComponents();
    }

    /// <summary>Landmarks [B, 136] and conv features [B, 512, 7, 7] of faces [B, 3, 112, 112] in [0, 1].</summary>
    public override (Tensor Landmarks, Tensor Features) forward(Tensor x)
    {
        FaceInput.RequireImageBatch(x, "MobileFaceNet input");
        if (x.shape[2] != 112 || x.shape[3] != 112)
            throw new ArgumentException($"MobileFaceNet input: expected [B, 3, 112, 112], got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        var h = conv2_dw.call(conv1.call(x));
        h = conv_5.call(conv_45.call(conv_4.call(conv_34.call(conv_3.call(conv_23.call(h))))));
        var features = conv_6_sep.call(h);
        var landmarks = output_layer.call(features);
        return (landmarks.MoveToOuterDisposeScope(), features.MoveToOuterDisposeScope());
    }
}

/// <summary>Conv (no bias) + BN + PReLU (<c>Conv_block</c>).</summary>
internal sealed class ConvBlock : Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly BatchNorm2d bn;
    private readonly PReLU prelu;

    public ConvBlock(int cin, int cout, int kernel, int stride, int padding, int groups) : base("Conv_block")
    {
        conv = Conv2d(cin, cout, kernel, stride: stride, padding: padding, groups: groups, bias: false);
        bn = BatchNorm2d(cout);
        prelu = PReLU(cout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var c = conv.call(x);
        using var b = bn.call(c);
        return prelu.call(b);
    }
}

/// <summary>Conv (no bias) + BN, no activation (<c>Linear_block</c>).</summary>
internal sealed class LinearBlock : Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly BatchNorm2d bn;

    public LinearBlock(int cin, int cout, int kernel, int stride, int padding, int groups) : base("Linear_block")
    {
        conv = Conv2d(cin, cout, kernel, stride: stride, padding: padding, groups: groups, bias: false);
        bn = BatchNorm2d(cout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var c = conv.call(x);
        return bn.call(c);
    }
}

/// <summary>Expand 1x1, depthwise kxk (stride), project 1x1; optionally residual (<c>Depth_Wise</c>).</summary>
internal sealed class DepthWise : Module<Tensor, Tensor>
{
    private readonly ConvBlock conv;
    private readonly ConvBlock conv_dw;
    private readonly LinearBlock project;
    private readonly bool _residual;

    public DepthWise(int cin, int cout, bool residual, int kernel, int stride, int padding, int groups) : base("Depth_Wise")
    {
        conv = new ConvBlock(cin, groups, 1, 1, 0, 1);
        conv_dw = new ConvBlock(groups, groups, kernel, stride, padding, groups);
        project = new LinearBlock(groups, cout, 1, 1, 0, 1);
        _residual = residual;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = project.call(conv_dw.call(conv.call(x)));
        return (_residual ? x + h : h).MoveToOuterDisposeScope();
    }
}

/// <summary><c>Residual</c>: a Sequential <c>model</c> of residual DepthWise blocks.</summary>
internal sealed class ResidualStack : Module<Tensor, Tensor>
{
    private readonly Sequential model;

    public ResidualStack(int c, int numBlocks, int groups) : base("Residual")
    {
        var blocks = new List<Module<Tensor, Tensor>>();
        for (int i = 0; i < numBlocks; i++) blocks.Add(new DepthWise(c, c, true, 3, 1, 1, groups));
        model = Sequential(blocks);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => model.call(x);
}

/// <summary>GDC head: 7x7 depthwise LinearBlock, flatten, Linear (no bias), BatchNorm1d.</summary>
internal sealed class GdcHead : Module<Tensor, Tensor>
{
    private readonly LinearBlock conv_6_dw;
    private readonly Linear linear;
    private readonly BatchNorm1d bn;

    public GdcHead(int embeddingSize) : base("GDC")
    {
        conv_6_dw = new LinearBlock(512, 512, 7, 1, 0, 512);
        linear = Linear(512, embeddingSize, hasBias: false);
        bn = BatchNorm1d(embeddingSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = conv_6_dw.call(x).flatten(1);
        return bn.call(linear.call(h)).MoveToOuterDisposeScope();
    }
}
