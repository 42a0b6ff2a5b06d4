using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>
/// face-api FaceRecognitionNet (dlib's ResNet-29 face descriptor, "ResNet-34-like"): the preprocessed
/// [B, 3, 150, 150] input (<see cref="TfOps.ToNetInput"/>, face mean) -> an unnormalised 128-d descriptor [B, 128].
/// Two faces are the same person when the Euclidean distance of their descriptors is below about 0.6.
/// </summary>
public sealed class FaceRecognitionNet : FaceApiNetwork<Tensor>
{
    /// <summary>The package's same-person threshold on the descriptor distance.</summary>
    public const double SamePersonThreshold = 0.6;

    private readonly ConvLayer conv32_down;
    private readonly Residual conv32_1, conv32_2, conv32_3;
    private readonly Residual conv64_down, conv64_1, conv64_2, conv64_3;
    private readonly Residual conv128_down, conv128_1, conv128_2;
    private readonly Residual conv256_down, conv256_1, conv256_2, conv256_down_out;
    private readonly Parameter fc;

    /// <summary>Creates the net (zero weights until loaded).</summary>
    public FaceRecognitionNet() : base(nameof(FaceRecognitionNet))
    {
        conv32_down = new ConvLayer(3, 32, 7);
        conv32_1 = new Residual(32, 32, false);
        conv32_2 = new Residual(32, 32, false);
        conv32_3 = new Residual(32, 32, false);
        conv64_down = new Residual(32, 64, true);
        conv64_1 = new Residual(64, 64, false);
        conv64_2 = new Residual(64, 64, false);
        conv64_3 = new Residual(64, 64, false);
        conv128_down = new Residual(64, 128, true);
        conv128_1 = new Residual(128, 128, false);
        conv128_2 = new Residual(128, 128, false);
        conv256_down = new Residual(128, 256, true);
        conv256_1 = new Residual(256, 256, false);
        conv256_2 = new Residual(256, 256, false);
        conv256_down_out = new Residual(256, 256, true);
        fc = new Parameter(zeros(256, 128), requires_grad: false);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override string ModelName => "face_recognition_model";

    /// <inheritdoc />
    public override long InputSize => 150;

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        CheckInput(input);
        using var scope = NewDisposeScope();
        var x = F.relu(conv32_down.Forward(input, 2, TfPadding.Valid));
        x = F.max_pool2d(x, new[] { 3L, 3L }, new[] { 2L, 2L });
        foreach (var block in new[] { conv32_1, conv32_2, conv32_3, conv64_down, conv64_1, conv64_2, conv64_3,
                     conv128_down, conv128_1, conv128_2, conv256_down, conv256_1, conv256_2, conv256_down_out })
            x = block.forward(x);
        var mean = x.mean(new long[] { 2, 3 });
        return mean.matmul(fc).MoveToOuterDisposeScope();
    }

    /// <summary>conv (+bias) then the folded-BN scale layer <c>x * scale/weights + scale/biases</c>.</summary>
    private sealed class ConvLayer : nn.Module<Tensor, Tensor>
    {
        private readonly ConvParams conv;
        private readonly ScaleParams scale;

        public ConvLayer(long inC, long outC, long k) : base("conv_layer")
        {
            conv = new ConvParams(inC, outC, k);
            scale = new ScaleParams(outC);
            RegisterComponents();
        }

        public Tensor Forward(Tensor x, long stride, TfPadding padding)
        {
            using var c = conv.Forward(x, stride, padding);
            return scale.forward(c);
        }

        public override Tensor forward(Tensor x) => Forward(x, 1, TfPadding.Same);
    }

    private sealed class ConvParams : nn.Module<Tensor, Tensor>
    {
        private readonly Parameter filters;
        private readonly Parameter bias;

        public ConvParams(long inC, long outC, long k) : base("conv")
        {
            filters = new Parameter(zeros(outC, inC, k, k), requires_grad: false);
            bias = new Parameter(zeros(outC), requires_grad: false);
            RegisterComponents();
        }

        public Tensor Forward(Tensor x, long stride, TfPadding padding)
        {
            using var padded = padding == TfPadding.Same ? TfOps.PadSame(x, filters.shape[2], stride) : x.alias();
            return F.conv2d(padded, filters, bias, strides: new[] { stride, stride });
        }

        public override Tensor forward(Tensor x) => Forward(x, 1, TfPadding.Same);
    }

    private sealed class ScaleParams : nn.Module<Tensor, Tensor>
    {
        private readonly Parameter weights;
        private readonly Parameter biases;

        public ScaleParams(long c) : base("scale")
        {
            weights = new Parameter(zeros(c), requires_grad: false);
            biases = new Parameter(zeros(c), requires_grad: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var m = x * weights.view(1, -1, 1, 1);
            return m + biases.view(1, -1, 1, 1);
        }
    }

    /// <summary>
    /// <c>residual</c>: conv3x3 same + ReLU, conv3x3 same, + x, ReLU. <c>residualDown</c>: conv1 is 3x3 s2 valid; the
    /// shortcut is avgPool 2 s2 valid, zero-padded in channels; when sizes differ the main branch gets one zero row at
    /// the bottom and one zero column at the right.
    /// </summary>
    private sealed class Residual : nn.Module<Tensor, Tensor>
    {
        private readonly ConvLayer conv1;
        private readonly ConvLayer conv2;
        private readonly bool _down;

        public Residual(long inC, long outC, bool down) : base("residual")
        {
            conv1 = new ConvLayer(inC, outC, 3);
            conv2 = new ConvLayer(outC, outC, 3);
            _down = down;
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            Tensor result;
            if (!_down)
            {
                var h = F.relu(conv1.Forward(x, 1, TfPadding.Same));
                h = conv2.Forward(h, 1, TfPadding.Same);
                result = F.relu(h + x);
            }
            else
            {
                var h = F.relu(conv1.Forward(x, 2, TfPadding.Valid));
                h = conv2.Forward(h, 1, TfPadding.Same);
                var pooled = F.avg_pool2d(x, new[] { 2L, 2L }, new[] { 2L, 2L });
                if (pooled.shape[2] != h.shape[2] || pooled.shape[3] != h.shape[3])
                    h = F.pad(h, new long[] { 0, pooled.shape[3] - h.shape[3], 0, pooled.shape[2] - h.shape[2] });
                if (pooled.shape[1] != h.shape[1])
                    pooled = F.pad(pooled, new long[] { 0, 0, 0, 0, 0, h.shape[1] - pooled.shape[1] });
                result = F.relu(pooled + h);
            }
            return result.MoveToOuterDisposeScope();
        }
    }
}
