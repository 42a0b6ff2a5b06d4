using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Face;

/// <summary>
/// BiSeNet face parsing of zllrunning/face-parsing.PyTorch (FreeDoM's <c>functions/face_parsing/model.py</c>):
/// <c>BiSeNet(19)</c> loads <c>79999_iter.pth</c> unchanged (keys <c>cp.*</c>, <c>ffm.*</c>, <c>conv_out*</c>; no
/// spatial path).
/// </summary>
/// <remarks>
/// Input: RGB [B, 3, H, W] normalised with ImageNet mean/std (the network was trained at 512x512; see
/// <see cref="FacePreprocessing.ParsingInput"/> for FreeDoM's path from [-1, 1]). Output: three logit maps
/// [B, n_classes, H, W] (main head, aux16, aux32), each bilinearly upsampled with align_corners=true; use the first
/// and take the arg-max over classes. Classes: 0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eye_g,
/// 7 l_ear, 8 r_ear, 9 ear_r, 10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l, 16 cloth, 17 hair, 18 hat.
/// Use in <c>eval()</c> mode.
/// </remarks>
public sealed class BiSeNet : Module<Tensor, (Tensor Main, Tensor Aux16, Tensor Aux32)>
{
    private readonly ContextPath cp;
    private readonly FeatureFusionModule ffm;
    private readonly BiSeNetOutput conv_out;
    private readonly BiSeNetOutput conv_out16;
    private readonly BiSeNetOutput conv_out32;

    /// <summary>The number of classes (19 for <c>79999_iter.pth</c>).</summary>
    public int NumClasses { get; }

    /// <summary>Builds BiSeNet with <paramref name="nClasses"/> output classes.</summary>
    public BiSeNet(int nClasses = 19) : base(nameof(BiSeNet))
    {
        if (nClasses < 1) throw new ArgumentOutOfRangeException(nameof(nClasses), nClasses, "need at least one class.");
        NumClasses = nClasses;
        cp = new ContextPath();
        ffm = new FeatureFusionModule(256, 256);
        conv_out = new BiSeNetOutput(256, 256, nClasses);
        conv_out16 = new BiSeNetOutput(128, 64, nClasses);
        conv_out32 = new BiSeNetOutput(128, 64, nClasses);
        RegisterComponents();
    }

    /// <summary>The three logit maps of ImageNet-normalised RGB images [B, 3, H, W].</summary>
    public override (Tensor Main, Tensor Aux16, Tensor Aux32) forward(Tensor x)
    {
        FaceInput.RequireImageBatch(x, "BiSeNet input");
        if (x.shape[2] < 32 || x.shape[3] < 32)
            throw new ArgumentException($"BiSeNet input: needs H, W >= 32 (five stride-2 stages), got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        long h = x.shape[2], w = x.shape[3];
        var (feat8, cp8, cp16) = cp.call(x);
        var fuse = ffm.Fuse(feat8, cp8);
        var o = Up(conv_out.call(fuse), h, w);
        var o16 = Up(conv_out16.call(cp8), h, w);
        var o32 = Up(conv_out32.call(cp16), h, w);
        return (o.MoveToOuterDisposeScope(), o16.MoveToOuterDisposeScope(), o32.MoveToOuterDisposeScope());
    }

    /// <summary>The main-head logits [B, n_classes, H, W] (FreeDoM's <c>net(x)[0]</c>).</summary>
    public Tensor Logits(Tensor x)
    {
        var (main, a16, a32) = forward(x);
        a16.Dispose();
        a32.Dispose();
        return main;
    }

    /// <summary>The ResNet18 features (stride 8, 16, 32) of the context path, for diagnostics.</summary>
    public (Tensor Feat8, Tensor Feat16, Tensor Feat32) ResNetFeatures(Tensor x) => cp.ResNet(x);

    private static Tensor Up(Tensor t, long h, long w) =>
        functional.interpolate(t, [h, w], mode: InterpolationMode.Bilinear, align_corners: true);
}

/// <summary>Conv (no bias) + BatchNorm + ReLU.</summary>
internal sealed class ConvBNReLU : Module<Tensor, Tensor>
{
    private readonly Conv2d conv;
    private readonly BatchNorm2d bn;

    public ConvBNReLU(int inChannels, int outChannels, int ks = 3, int stride = 1, int padding = 1) : base(nameof(ConvBNReLU))
    {
        conv = Conv2d(inChannels, outChannels, ks, stride: stride, padding: padding, bias: false);
        bn = BatchNorm2d(outChannels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var c = conv.call(x);
        using var b = bn.call(c);
        return functional.relu(b);
    }
}

/// <summary>A head: ConvBNReLU 3x3 then a 1x1 conv to the classes.</summary>
internal sealed class BiSeNetOutput : Module<Tensor, Tensor>
{
    private readonly ConvBNReLU conv;
    private readonly Conv2d conv_out;

    public BiSeNetOutput(int inChannels, int midChannels, int nClasses) : base(nameof(BiSeNetOutput))
    {
        conv = new ConvBNReLU(inChannels, midChannels, 3, 1, 1);
        conv_out = Conv2d(midChannels, nClasses, 1, stride: 1, bias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var h = conv.call(x);
        return conv_out.call(h);
    }
}

/// <summary>ARM: ConvBNReLU, global average pool, 1x1 conv, BN, sigmoid, multiply.</summary>
internal sealed class AttentionRefinementModule : Module<Tensor, Tensor>
{
    private readonly ConvBNReLU conv;
    private readonly Conv2d conv_atten;
    private readonly BatchNorm2d bn_atten;

    public AttentionRefinementModule(int inChannels, int outChannels) : base(nameof(AttentionRefinementModule))
    {
        conv = new ConvBNReLU(inChannels, outChannels, 3, 1, 1);
        conv_atten = Conv2d(outChannels, outChannels, 1, stride: 1, bias: false);
        bn_atten = BatchNorm2d(outChannels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var feat = conv.call(x);
        var atten = functional.sigmoid(bn_atten.call(conv_atten.call(GlobalAvg(feat))));
        return (feat * atten).MoveToOuterDisposeScope();
    }

    internal static Tensor GlobalAvg(Tensor t) => functional.avg_pool2d(t, [t.shape[2], t.shape[3]]);
}

/// <summary>The context path: ResNet18, two ARMs, the global context branch and nearest upsampling.</summary>
internal sealed class ContextPath : Module<Tensor, (Tensor, Tensor, Tensor)>
{
    private readonly Resnet18 resnet;
    private readonly AttentionRefinementModule arm16;
    private readonly AttentionRefinementModule arm32;
    private readonly ConvBNReLU conv_head32;
    private readonly ConvBNReLU conv_head16;
    private readonly ConvBNReLU conv_avg;

    public ContextPath() : base(nameof(ContextPath))
    {
        resnet = new Resnet18();
        arm16 = new AttentionRefinementModule(256, 128);
        arm32 = new AttentionRefinementModule(512, 128);
        conv_head32 = new ConvBNReLU(128, 128, 3, 1, 1);
        conv_head16 = new ConvBNReLU(128, 128, 3, 1, 1);
        conv_avg = new ConvBNReLU(512, 128, 1, 1, 0);
        RegisterComponents();
    }

    public (Tensor, Tensor, Tensor) ResNet(Tensor x) => resnet.call(x);

    /// <summary>Returns (feat8 of the ResNet, refined x8 context, refined x16 context).</summary>
    public override (Tensor, Tensor, Tensor) forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (feat8, feat16, feat32) = resnet.call(x);
        var avg = conv_avg.call(AttentionRefinementModule.GlobalAvg(feat32));
        var avgUp = Nearest(avg, feat32);
        var feat32Sum = arm32.call(feat32) + avgUp;
        var feat32Up = conv_head32.call(Nearest(feat32Sum, feat16));
        var feat16Sum = arm16.call(feat16) + feat32Up;
        var feat16Up = conv_head16.call(Nearest(feat16Sum, feat8));
        return (feat8.MoveToOuterDisposeScope(), feat16Up.MoveToOuterDisposeScope(), feat32Up.MoveToOuterDisposeScope());
    }

    private static Tensor Nearest(Tensor t, Tensor like) =>
        functional.interpolate(t, [like.shape[2], like.shape[3]], mode: InterpolationMode.Nearest);
}

/// <summary>FFM: concat, ConvBNReLU 1x1, SE-like attention, <c>x + x * att</c>.</summary>
internal sealed class FeatureFusionModule : Module<Tensor, Tensor>
{
    private readonly ConvBNReLU convblk;
    private readonly Conv2d conv1;
    private readonly Conv2d conv2;

    public FeatureFusionModule(int inChannels, int outChannels) : base(nameof(FeatureFusionModule))
    {
        convblk = new ConvBNReLU(inChannels, outChannels, 1, 1, 0);
        conv1 = Conv2d(outChannels, outChannels / 4, 1, stride: 1, bias: false);
        conv2 = Conv2d(outChannels / 4, outChannels, 1, stride: 1, bias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("FeatureFusionModule takes two inputs; call Fuse.");

    public Tensor Fuse(Tensor fsp, Tensor fcp)
    {
        using var scope = NewDisposeScope();
        var feat = convblk.call(torch.cat([fsp, fcp], 1));
        var atten = functional.sigmoid(conv2.call(functional.relu(conv1.call(AttentionRefinementModule.GlobalAvg(feat)))));
        return (feat * atten + feat).MoveToOuterDisposeScope();
    }
}

/// <summary>The ResNet18 trunk of the context path, returning the stride-8, -16 and -32 features.</summary>
internal sealed class Resnet18 : Module<Tensor, (Tensor, Tensor, Tensor)>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly MaxPool2d maxpool;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly Sequential layer4;

    public Resnet18() : base(nameof(Resnet18))
    {
        conv1 = Conv2d(3, 64, 7, stride: 2, padding: 3, bias: false);
        bn1 = BatchNorm2d(64);
        maxpool = MaxPool2d(3, 2, 1);
        layer1 = Layer(64, 64, 1);
        layer2 = Layer(64, 128, 2);
        layer3 = Layer(128, 256, 2);
        layer4 = Layer(256, 512, 2);
        RegisterComponents();
    }

    private static Sequential Layer(int cin, int cout, int stride) =>
        Sequential(new BasicBlock(cin, cout, stride), new BasicBlock(cout, cout, 1));

    public override (Tensor, Tensor, Tensor) forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = maxpool.call(functional.relu(bn1.call(conv1.call(x))));
        h = layer1.call(h);
        var feat8 = layer2.call(h);
        var feat16 = layer3.call(feat8);
        var feat32 = layer4.call(feat16);
        return (feat8.MoveToOuterDisposeScope(), feat16.MoveToOuterDisposeScope(), feat32.MoveToOuterDisposeScope());
    }
}

/// <summary>ResNet basic block: conv-BN-ReLU-conv-BN plus shortcut, then ReLU.</summary>
internal sealed class BasicBlock : Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Sequential? downsample;

    public BasicBlock(int cin, int cout, int stride) : base(nameof(BasicBlock))
    {
        conv1 = Conv2d(cin, cout, 3, stride: stride, padding: 1, bias: false);
        bn1 = BatchNorm2d(cout);
        conv2 = Conv2d(cout, cout, 3, stride: 1, padding: 1, bias: false);
        bn2 = BatchNorm2d(cout);
        if (cin != cout || stride != 1)
            downsample = Sequential(Conv2d(cin, cout, 1, stride: stride, bias: false), BatchNorm2d(cout));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var r = bn2.call(conv2.call(functional.relu(bn1.call(conv1.call(x)))));
        var s = downsample is null ? x : downsample.call(x);
        return functional.relu(s + r).MoveToOuterDisposeScope();
    }
}
