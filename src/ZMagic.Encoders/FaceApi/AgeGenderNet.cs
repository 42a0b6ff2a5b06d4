using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>The outputs of <see cref="AgeGenderNet"/>.</summary>
/// <param name="Age">Age in years (regression), [B].</param>
/// <param name="GenderLogits">[B, 2] logits: index 0 male, 1 female (softmax gives the package's probabilities).</param>
public sealed record AgeGenderOutput(Tensor Age, Tensor GenderLogits);

/// <summary>
/// face-api AgeGenderNet: TinyXception (2 main blocks) on the preprocessed [B, 3, 112, 112] input
/// (<see cref="TfOps.ToNetInput"/>, face mean), avgPool 7 s2, then <c>fc/age</c> and <c>fc/gender</c>.
/// </summary>
public sealed class AgeGenderNet : FaceApiNetwork<AgeGenderOutput>
{
    private readonly EntryFlow entry_flow;
    private readonly MiddleFlow middle_flow;
    private readonly ExitFlow exit_flow;
    private readonly AgeGenderHeads fc;

    /// <summary>Creates the net (zero weights until loaded).</summary>
    public AgeGenderNet() : base(nameof(AgeGenderNet))
    {
        entry_flow = new EntryFlow();
        middle_flow = new MiddleFlow();
        exit_flow = new ExitFlow();
        fc = new AgeGenderHeads();
        RegisterComponents();
    }

    /// <inheritdoc />
    public override string ModelName => "age_gender_model";

    /// <inheritdoc />
    public override long InputSize => 112;

    /// <summary>The TinyXception output after avgPool 7 s2, [B, 512], which feeds both heads.</summary>
    public Tensor Pooled(Tensor input)
    {
        CheckInput(input);
        using var scope = NewDisposeScope();
        var x = entry_flow.forward(input);
        x = middle_flow.forward(x);
        x = exit_flow.forward(x);
        x = F.avg_pool2d(x, new[] { 7L, 7L }, new[] { 2L, 2L });
        return x.flatten(1).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override AgeGenderOutput forward(Tensor input)
    {
        using var pooled = Pooled(input);
        return fc.Heads(pooled);
    }

    private sealed class EntryFlow : nn.Module<Tensor, Tensor>
    {
        private readonly TfConv2d conv_in;
        private readonly ReductionBlock reduction_block_0;
        private readonly ReductionBlock reduction_block_1;

        public EntryFlow() : base("entry_flow")
        {
            conv_in = new TfConv2d(3, 32, 3, 2, TfPadding.Same);
            reduction_block_0 = new ReductionBlock(32, 64, activateInput: false);
            reduction_block_1 = new ReductionBlock(64, 128, activateInput: true);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var h = F.relu(conv_in.forward(x));
            h = reduction_block_0.forward(h);
            return reduction_block_1.forward(h).MoveToOuterDisposeScope();
        }
    }

    private sealed class MiddleFlow : nn.Module<Tensor, Tensor>
    {
        private readonly MainBlock main_block_0;
        private readonly MainBlock main_block_1;

        public MiddleFlow() : base("middle_flow")
        {
            main_block_0 = new MainBlock(128);
            main_block_1 = new MainBlock(128);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var h = main_block_0.forward(x);
            return main_block_1.forward(h);
        }
    }

    private sealed class ExitFlow : nn.Module<Tensor, Tensor>
    {
        private readonly ReductionBlock reduction_block;
        private readonly TfSeparableConv2d separable_conv;

        public ExitFlow() : base("exit_flow")
        {
            reduction_block = new ReductionBlock(128, 256, activateInput: true);
            separable_conv = new TfSeparableConv2d(256, 512, 1);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var h = reduction_block.forward(x);
            return F.relu(separable_conv.forward(h)).MoveToOuterDisposeScope();
        }
    }

    /// <summary>(relu?) -> sep0 -> relu -> sep1 -> maxPool 3 s2 same, plus a 1x1 s2 expansion conv of the block input.</summary>
    private sealed class ReductionBlock : nn.Module<Tensor, Tensor>
    {
        private readonly TfSeparableConv2d separable_conv0;
        private readonly TfSeparableConv2d separable_conv1;
        private readonly TfConv2d expansion_conv;
        private readonly bool _activateInput;

        public ReductionBlock(long inC, long outC, bool activateInput) : base("reduction_block")
        {
            separable_conv0 = new TfSeparableConv2d(inC, outC, 1);
            separable_conv1 = new TfSeparableConv2d(outC, outC, 1);
            expansion_conv = new TfConv2d(inC, outC, 1, 2, TfPadding.Same);
            _activateInput = activateInput;
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var h = _activateInput ? F.relu(x) : x;
            h = separable_conv0.forward(h);
            h = separable_conv1.forward(F.relu(h));
            h = TfOps.MaxPoolSame(h, 3, 2);
            return (h + expansion_conv.forward(x)).MoveToOuterDisposeScope();
        }
    }

    /// <summary>Three times (relu -> sep), plus the input.</summary>
    private sealed class MainBlock : nn.Module<Tensor, Tensor>
    {
        private readonly TfSeparableConv2d separable_conv0;
        private readonly TfSeparableConv2d separable_conv1;
        private readonly TfSeparableConv2d separable_conv2;

        public MainBlock(long c) : base("main_block")
        {
            separable_conv0 = new TfSeparableConv2d(c, c, 1);
            separable_conv1 = new TfSeparableConv2d(c, c, 1);
            separable_conv2 = new TfSeparableConv2d(c, c, 1);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            var h = separable_conv0.forward(F.relu(x));
            h = separable_conv1.forward(F.relu(h));
            h = separable_conv2.forward(F.relu(h));
            return (h + x).MoveToOuterDisposeScope();
        }
    }

    private sealed class AgeGenderHeads : nn.Module<Tensor, Tensor>
    {
        private readonly TfFullyConnected age;
        private readonly TfFullyConnected gender;

        public AgeGenderHeads() : base("fc")
        {
            age = new TfFullyConnected(512, 1);
            gender = new TfFullyConnected(512, 2);
            RegisterComponents();
        }

        public AgeGenderOutput Heads(Tensor pooled)
        {
            using var a = age.forward(pooled);
            return new AgeGenderOutput(a.reshape(pooled.shape[0]), gender.forward(pooled));
        }

        public override Tensor forward(Tensor x) => throw new NotSupportedException("use Heads");
    }
}

/// <summary>The AgeGenderNet's gender classes, in the order of its outputs.</summary>
public enum FaceGender
{
    /// <summary>Male (output index 0).</summary>
    Male = 0,

    /// <summary>Female (output index 1).</summary>
    Female = 1,
}
