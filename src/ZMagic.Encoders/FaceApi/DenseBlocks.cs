using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>
/// face-api's <c>denseBlock3</c>/<c>denseBlock4</c>: conv0 (plain 3x3 s2 conv in the first block, separable s2
/// otherwise) + ReLU = out1; each further separable conv (stride 1) sees the ReLU of the sum of all earlier outputs;
/// the block returns the ReLU of the sum of all outputs.
/// </summary>
internal sealed class FaceApiDenseBlock : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> conv0;
    private readonly TfSeparableConv2d conv1;
    private readonly TfSeparableConv2d conv2;
    private readonly TfSeparableConv2d? conv3;

    /// <summary>Creates a block of 3 (<paramref name="four"/> false) or 4 convolutions.</summary>
    public FaceApiDenseBlock(long inChannels, long outChannels, bool isFirstLayer, bool four) : base("FaceApiDenseBlock")
    {
        conv0 = isFirstLayer
            ? new TfConv2d(inChannels, outChannels, 3, 2, TfPadding.Same)
            : new TfSeparableConv2d(inChannels, outChannels, 2);
        conv1 = new TfSeparableConv2d(outChannels, outChannels, 1);
        conv2 = new TfSeparableConv2d(outChannels, outChannels, 1);
        conv3 = four ? new TfSeparableConv2d(outChannels, outChannels, 1) : null;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var out1 = F.relu(conv0.forward(x));
        var out2 = conv1.forward(out1);
        var out3 = conv2.forward(F.relu(out1 + out2));
        Tensor result;
        if (conv3 is null)
        {
            result = F.relu(out1 + (out2 + out3));
        }
        else
        {
            var out4 = conv3.forward(F.relu(out1 + (out2 + out3)));
            result = F.relu(out1 + (out2 + (out3 + out4)));
        }
        return result.MoveToOuterDisposeScope();
    }
}
