using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Demo.Digits;

/// <summary>
/// The "guide" digit classifier that the digit conditions differentiate through: four 3x3 convolutions with SiLU and
/// average pooling (smooth, so its input gradients are informative), then two linear layers. Input [B, 1, 32, 32] in
/// [-1, 1]; output logits [B, 10].
/// </summary>
public sealed class GuideClassifier : Module<Tensor, Tensor>
{
#pragma warning disable IDE0044 // fields are registered by reflection, names are the checkpoint keys
    private Conv2d conv1;
    private Conv2d conv2;
    private Conv2d conv3;
    private Conv2d conv4;
    private Linear fc1;
    private Linear fc2;
#pragma warning restore IDE0044

    /// <summary>Creates an untrained classifier.</summary>
    public GuideClassifier() : base("digits_guide")
    {
        conv1 = Conv2d(1, 16, 3, padding: 1);
        conv2 = Conv2d(16, 16, 3, padding: 1);
        conv3 = Conv2d(16, 32, 3, padding: 1);
        conv4 = Conv2d(32, 32, 3, padding: 1);
        fc1 = Linear(32 * 8 * 8, 128);
        fc2 = Linear(128, 10);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => Features(input).Logits;

    /// <summary>
    /// The logits plus the two intermediate feature maps used for style: after the first block [B, 16, 32, 32] and after
    /// the second [B, 32, 16, 16].
    /// </summary>
    public (Tensor Block1, Tensor Block2, Tensor Logits) Features(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 4 || input.shape[1] != 1 || input.shape[2] != MnistData.Size || input.shape[3] != MnistData.Size)
            throw new ArgumentException($"Digit classifiers take [B, 1, {MnistData.Size}, {MnistData.Size}]; got [{string.Join(", ", input.shape)}].", nameof(input));
        var f1 = functional.silu(conv2.forward(functional.silu(conv1.forward(input))));
        var h = functional.avg_pool2d(f1, 2);
        var f2 = functional.silu(conv4.forward(functional.silu(conv3.forward(h))));
        h = functional.avg_pool2d(f2, 2).flatten(1);
        var logits = fc2.forward(functional.silu(fc1.forward(h)));
        return (f1, f2, logits);
    }
}

/// <summary>
/// The "judge" digit classifier, used only to evaluate samples, never to guide them: a LeNet-5-like network (5x5
/// convolutions, ReLU, max pooling, dropout), a different architecture and seed from the guide so that guidance cannot
/// simply fool the evaluator. Input [B, 1, 32, 32] in [-1, 1]; output logits [B, 10].
/// </summary>
public sealed class JudgeClassifier : Module<Tensor, Tensor>
{
#pragma warning disable IDE0044
    private Conv2d c1;
    private Conv2d c2;
    private Linear f1;
    private Linear f2;
    private Dropout drop;
#pragma warning restore IDE0044

    /// <summary>Creates an untrained judge.</summary>
    public JudgeClassifier() : base("digits_judge")
    {
        c1 = Conv2d(1, 16, 5);
        c2 = Conv2d(16, 32, 5);
        f1 = Linear(32 * 5 * 5, 120);
        f2 = Linear(120, 10);
        drop = Dropout(0.3);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input) => f2.forward(drop.forward(Features(input)));

    /// <summary>
    /// The judge's 120 penultimate features (after the ReLU, before dropout) of [B, 1, 32, 32] images: the feature
    /// space of the prior's Frechet distance (<see cref="DigitsPriorEvaluation"/>).
    /// </summary>
    public Tensor Features(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 4 || input.shape[1] != 1 || input.shape[2] != MnistData.Size || input.shape[3] != MnistData.Size)
            throw new ArgumentException($"Digit classifiers take [B, 1, {MnistData.Size}, {MnistData.Size}]; got [{string.Join(", ", input.shape)}].", nameof(input));
        var h = functional.max_pool2d(functional.relu(c1.forward(input)), 2);
        h = functional.max_pool2d(functional.relu(c2.forward(h)), 2).flatten(1);
        return functional.relu(f1.forward(h));
    }
}
