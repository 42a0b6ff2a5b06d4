using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Face;

/// <summary>
/// insightface arcface_torch's IResNet (<c>recognition/arcface_torch/backbones/iresnet.py</c>), a second identity
/// backbone: <see cref="IResNet50"/> and <see cref="IResNet100"/> load <c>backbone.pth</c> (e.g.
/// <c>ms1mv3_arcface_r50_fp16</c>) unchanged.
/// </summary>
/// <remarks>
/// Input: RGB faces [B, 3, 112, 112] normalised as <c>(x / 255 - 0.5) / 0.5</c>, i.e. [-1, 1]. Output: the 512-d
/// feature after the <c>features</c> BatchNorm1d, <b>not</b> l2-normalised (unlike <see cref="IrSeBackbone"/>).
/// All BatchNorm eps are 1e-5. Use in <c>eval()</c> mode.
/// </remarks>
public sealed class IResNet : Module<Tensor, Tensor>, IFaceEmbedder
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly PReLU prelu;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly Sequential layer4;
    private readonly BatchNorm2d bn2;
    private readonly Dropout dropout;
    private readonly Linear fc;
    private readonly BatchNorm1d features;

    /// <summary>Blocks per stage, e.g. [3, 4, 14, 3] for iresnet50.</summary>
    public IReadOnlyList<int> Layers { get; }

    /// <summary>Builds an IResNet with <paramref name="layers"/> IBasicBlocks per stage.</summary>
    /// <param name="layers">Four stage depths.</param>
    /// <param name="numFeatures">Embedding size (512 for the released models).</param>
    /// <param name="dropout">Dropout before <c>fc</c> (inactive in eval mode).</param>
    public IResNet(IReadOnlyList<int> layers, int numFeatures = 512, double dropout = 0.0) : base(nameof(IResNet))
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count != 4 || layers.Any(n => n < 1))
            throw new ArgumentException($"IResNet needs four positive stage depths, got [{string.Join(", ", layers)}].", nameof(layers));
        Layers = layers.ToArray();
        conv1 = Conv2d(3, 64, 3, stride: 1, padding: 1, bias: false);
        bn1 = BatchNorm2d(64, eps: 1e-5);
        prelu = PReLU(64);
        int inplanes = 64;
        layer1 = MakeLayer(ref inplanes, 64, layers[0]);
        layer2 = MakeLayer(ref inplanes, 128, layers[1]);
        layer3 = MakeLayer(ref inplanes, 256, layers[2]);
        layer4 = MakeLayer(ref inplanes, 512, layers[3]);
        bn2 = BatchNorm2d(512, eps: 1e-5);
        this.dropout = Dropout(dropout);
        fc = Linear(512 * 7 * 7, numFeatures);
        features = BatchNorm1d(numFeatures, eps: 1e-5);
        EmbeddingSize = numFeatures;
        RegisterComponents();
        using (no_grad()) features.weight!.fill_(1.0);
        features.weight!.requires_grad = false;
    }

    /// <summary>iresnet50: [3, 4, 14, 3] blocks (475 state-dict entries).</summary>
    public static IResNet IResNet50() => new([3, 4, 14, 3]);

    /// <summary>iresnet100: [3, 13, 30, 3] blocks (925 state-dict entries).</summary>
    public static IResNet IResNet100() => new([3, 13, 30, 3]);

    private static Sequential MakeLayer(ref int inplanes, int planes, int blocks)
    {
        // Every stage starts with stride 2, so the first block always has a downsample branch.
        var list = new List<Module<Tensor, Tensor>> { new IBasicBlock(inplanes, planes, 2, withDownsample: true) };
        inplanes = planes;
        for (int i = 1; i < blocks; i++) list.Add(new IBasicBlock(planes, planes, 1, withDownsample: false));
        return Sequential(list);
    }

    /// <summary>The unnormalised 512-d feature of faces [B, 3, 112, 112] in [-1, 1].</summary>
    public override Tensor forward(Tensor x)
    {
        FaceInput.RequireImageBatch(x, "IResNet input");
        if (x.shape[2] != 112 || x.shape[3] != 112)
            throw new ArgumentException($"IResNet input: expected [B, 3, 112, 112], got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        var h = prelu.call(bn1.call(conv1.call(x)));
        h = layer4.call(layer3.call(layer2.call(layer1.call(h))));
        h = dropout.call(bn2.call(h).flatten(1));
        return features.call(fc.call(h)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public long FaceSize => 112;

    /// <inheritdoc />
    public long EmbeddingSize { get; }

    /// <inheritdoc />
    public Tensor Embed(Tensor faces) => forward(faces);
}

/// <summary>insightface's IBasicBlock: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus identity or downsample.</summary>
internal sealed class IBasicBlock : Module<Tensor, Tensor>
{
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn2;
    private readonly PReLU prelu;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn3;
    private readonly Sequential? downsample;

    public IBasicBlock(int inplanes, int planes, int stride, bool withDownsample) : base(nameof(IBasicBlock))
    {
        bn1 = BatchNorm2d(inplanes, eps: 1e-5);
        conv1 = Conv2d(inplanes, planes, 3, stride: 1, padding: 1, bias: false);
        bn2 = BatchNorm2d(planes, eps: 1e-5);
        prelu = PReLU(planes);
        conv2 = Conv2d(planes, planes, 3, stride: stride, padding: 1, bias: false);
        bn3 = BatchNorm2d(planes, eps: 1e-5);
        if (withDownsample)
            downsample = Sequential(Conv2d(inplanes, planes, 1, stride: stride, bias: false), BatchNorm2d(planes, eps: 1e-5));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = bn3.call(conv2.call(prelu.call(bn2.call(conv1.call(bn1.call(x))))));
        var identity = downsample is null ? x : downsample.call(x);
        return (h + identity).MoveToOuterDisposeScope();
    }
}
