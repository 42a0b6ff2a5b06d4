using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Face;

/// <summary>Unit type of a TreB1eN-style ArcFace backbone.</summary>
public enum IrMode
{
    /// <summary>Improved residual unit (<c>bottleneck_IR</c>).</summary>
    Ir,

    /// <summary>Improved residual unit with squeeze-and-excitation (<c>bottleneck_IR_SE</c>), as in <c>model_ir_se50.pth</c>.</summary>
    IrSe,
}

/// <summary>
/// The ArcFace IR / IR-SE backbone of TreB1eN's InsightFace_Pytorch, as FreeDoM's <c>IDLoss</c> builds it
/// (<c>Backbone(112, 50, 'ir_se', drop_ratio=0.6, affine=True)</c> loads <c>model_ir_se50.pth</c> unchanged).
/// </summary>
/// <remarks>
/// Input: RGB faces [B, 3, 112, 112] in [-1, 1] (no mean/std normalisation). Output: the l2-normalised 512-d
/// embedding. Parameter names equal the checkpoint keys (<c>input_layer.*</c>, <c>body.N.res_layer.*</c>,
/// <c>body.N.shortcut_layer.*</c>, <c>output_layer.*</c>). Put it in <c>eval()</c> mode before use: the output
/// layer holds a Dropout and BatchNorms.
/// </remarks>
public sealed class IrSeBackbone : Module<Tensor, Tensor>, IFaceEmbedder
{
    private readonly Sequential input_layer;
    private readonly Sequential body;
    private readonly Sequential output_layer;

    /// <summary>The input side length the backbone was built for (112 or 224).</summary>
    public int InputSize { get; }

    /// <summary>Builds the backbone.</summary>
    /// <param name="inputSize">112 (7x7 final map) or 224 (14x14).</param>
    /// <param name="numLayers">50, 100 or 152.</param>
    /// <param name="mode">IR or IR-SE units.</param>
    /// <param name="dropRatio">Dropout before the final linear layer (inactive in eval mode).</param>
    /// <param name="affine">Whether the final BatchNorm1d has weight and bias (true for <c>model_ir_se50.pth</c>).</param>
    public IrSeBackbone(int inputSize = 112, int numLayers = 50, IrMode mode = IrMode.IrSe, double dropRatio = 0.6, bool affine = true)
        : base(nameof(IrSeBackbone))
    {
        if (inputSize is not (112 or 224)) throw new ArgumentOutOfRangeException(nameof(inputSize), inputSize, "input size must be 112 or 224.");
        int[] units = numLayers switch
        {
            50 => [3, 4, 14, 3],
            100 => [3, 13, 30, 3],
            152 => [3, 8, 36, 3],
            _ => throw new ArgumentOutOfRangeException(nameof(numLayers), numLayers, "number of layers must be 50, 100 or 152."),
        };
        InputSize = inputSize;
        input_layer = Sequential(Conv2d(3, 64, 3, stride: 1, padding: 1, bias: false), BatchNorm2d(64), PReLU(64));
        long spatial = inputSize == 112 ? 7 : 14;
        output_layer = Sequential(
            BatchNorm2d(512),
            Dropout(dropRatio),
            Flatten(),
            Linear(512 * spatial * spatial, 512),
            BatchNorm1d(512, affine: affine));

        var modules = new List<Module<Tensor, Tensor>>();
        int[] depths = [64, 128, 256, 512];
        int inChannels = 64;
        for (int stage = 0; stage < 4; stage++)
        {
            for (int u = 0; u < units[stage]; u++)
            {
                int cin = u == 0 ? inChannels : depths[stage];
                int stride = u == 0 ? 2 : 1;
                modules.Add(new BottleneckIr(cin, depths[stage], stride, mode == IrMode.IrSe));
            }
            inChannels = depths[stage];
        }
        body = Sequential(modules);
        RegisterComponents();
    }

    /// <summary>The l2-normalised embedding [B, 512] of faces [B, 3, S, S] in [-1, 1].</summary>
    public override Tensor forward(Tensor x) => Forward(x).Embedding;

    /// <summary>The embedding with its intermediate stages (for diagnostics and parity tests).</summary>
    public IrSeOutputs Forward(Tensor x)
    {
        FaceInput.RequireImageBatch(x, "IrSeBackbone input");
        if (x.shape[2] != InputSize || x.shape[3] != InputSize)
            throw new ArgumentException($"IrSeBackbone input: expected [B, 3, {InputSize}, {InputSize}], got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        var bodyOut = body.call(input_layer.call(x));
        var raw = output_layer.call(bodyOut);
        var embedding = raw / raw.norm(1, keepdim: true);
        return new IrSeOutputs(bodyOut.MoveToOuterDisposeScope(), raw.MoveToOuterDisposeScope(), embedding.MoveToOuterDisposeScope());
    }

    /// <inheritdoc />
    public long FaceSize => InputSize;

    /// <inheritdoc />
    public long EmbeddingSize => 512;

    /// <inheritdoc />
    public Tensor Embed(Tensor faces) => forward(faces);
}

/// <summary>The stages of an <see cref="IrSeBackbone"/> forward pass.</summary>
/// <param name="Body">The body output [B, 512, 7, 7].</param>
/// <param name="Unnormalized">The output layer's result before l2 normalisation [B, 512].</param>
/// <param name="Embedding">The l2-normalised embedding [B, 512].</param>
public sealed record IrSeOutputs(Tensor Body, Tensor Unnormalized, Tensor Embedding);

/// <summary>One IR / IR-SE unit: BN, conv3x3, PReLU, conv3x3 (stride), BN, [SE], plus a shortcut.</summary>
internal sealed class BottleneckIr : Module<Tensor, Tensor>
{
    private readonly Module<Tensor, Tensor> shortcut_layer;
    private readonly Sequential res_layer;

    public BottleneckIr(int inChannels, int depth, int stride, bool squeezeExcite) : base(squeezeExcite ? "bottleneck_IR_SE" : "bottleneck_IR")
    {
        shortcut_layer = inChannels == depth
            ? MaxPool2d(1, stride)
            : Sequential(Conv2d(inChannels, depth, 1, stride: stride, bias: false), BatchNorm2d(depth));
        var layers = new List<Module<Tensor, Tensor>>
        {
            BatchNorm2d(inChannels),
            Conv2d(inChannels, depth, 3, stride: 1, padding: 1, bias: false),
            PReLU(depth),
            Conv2d(depth, depth, 3, stride: stride, padding: 1, bias: false),
            BatchNorm2d(depth),
        };
        if (squeezeExcite) layers.Add(new SEModule(depth, 16));
        res_layer = Sequential(layers);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var shortcut = shortcut_layer.call(x);
        using var res = res_layer.call(x);
        return res + shortcut;
    }
}

/// <summary>Squeeze-and-excitation: global average pool, 1x1 conv, ReLU, 1x1 conv, sigmoid, multiply.</summary>
internal sealed class SEModule : Module<Tensor, Tensor>
{
    private readonly Conv2d fc1;
    private readonly Conv2d fc2;

    public SEModule(int channels, int reduction) : base(nameof(SEModule))
    {
        fc1 = Conv2d(channels, channels / reduction, 1, bias: false);
        fc2 = Conv2d(channels / reduction, channels, 1, bias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var w = functional.adaptive_avg_pool2d(x, [1, 1]);
        w = functional.sigmoid(fc2.call(functional.relu(fc1.call(w))));
        return (x * w).MoveToOuterDisposeScope();
    }
}
