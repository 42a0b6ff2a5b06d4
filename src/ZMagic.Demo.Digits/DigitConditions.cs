using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>
/// Digit class: the guide classifier's cross-entropy <c>-log p(class | x0)</c> of the target class. Low when the guide
/// reads x0 as the target digit.
/// </summary>
public sealed class DigitClassCondition : IGuidanceCondition
{
    private readonly GuideClassifier _guide;

    /// <summary>Creates the condition.</summary>
    /// <param name="guide">The guide classifier (put in eval mode, parameters frozen).</param>
    /// <param name="targetClass">The wanted digit, 0..9.</param>
    /// <param name="schedule">Step size and window.</param>
    /// <param name="name">Name in traces (default "digit").</param>
    public DigitClassCondition(GuideClassifier guide, int targetClass, GuidanceSchedule schedule, string name = "digit")
    {
        _guide = guide ?? throw new ArgumentNullException(nameof(guide));
        if (targetClass is < 0 or > 9) throw new ArgumentOutOfRangeException(nameof(targetClass), targetClass, "The digit class must be 0..9.");
        TargetClass = targetClass;
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        Name = name;
        DigitsModels.Freeze(_guide);
    }

    /// <summary>The wanted digit.</summary>
    public int TargetClass { get; }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <inheritdoc />
    public Tensor Energy(Tensor x0)
    {
        ArgumentNullException.ThrowIfNull(x0);
        var logits = _guide.forward(x0);
        return -nn.functional.log_softmax(logits, 1).select(1, TargetClass);
    }
}

/// <summary>
/// Stroke thickness through ink mass: <c>ink(x0) = mean((x0 + 1) / 2)</c> over the image, and the pseudo-Huber energy
/// <c>sqrt(1 + ((ink - target) / tolerance)^2) - 1</c>: quadratic near the target, linear far from it, so its gradient
/// stays bounded (by 1 / (tolerance * pixels)) even on the wild clean estimates of the noisiest steps. An energy below
/// sqrt(2) - 1 means "within tolerance".
/// </summary>
public sealed class StrokeThicknessCondition : IGuidanceCondition
{
    /// <summary>Creates the condition.</summary>
    /// <param name="targetInk">Wanted ink mass in [0, 1] (MNIST digits padded to 32x32 average about 0.10).</param>
    /// <param name="tolerance">Half-width of the accepted band (energy 1 at its edge).</param>
    /// <param name="schedule">Step size and window.</param>
    /// <param name="name">Name in traces (default "thickness").</param>
    public StrokeThicknessCondition(double targetInk, double tolerance, GuidanceSchedule schedule, string name = "thickness")
    {
        if (!(targetInk > 0 && targetInk < 1)) throw new ArgumentOutOfRangeException(nameof(targetInk), targetInk, "The target ink mass must be in (0, 1).");
        if (!(tolerance > 0)) throw new ArgumentOutOfRangeException(nameof(tolerance), tolerance, "The tolerance must be positive.");
        TargetInk = targetInk;
        Tolerance = tolerance;
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        Name = name;
    }

    /// <summary>Wanted ink mass.</summary>
    public double TargetInk { get; }

    /// <summary>Accepted deviation.</summary>
    public double Tolerance { get; }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <summary>Ink mass per item [B]: the mean of (x + 1) / 2 over channels and pixels.</summary>
    public static Tensor Ink(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        return ((x + 1) * 0.5).flatten(1).mean(new long[] { 1 });
    }

    /// <inheritdoc />
    public Tensor Energy(Tensor x0) => (((Ink(x0) - TargetInk) / Tolerance).square() + 1).sqrt() - 1;
}

/// <summary>
/// Style: the squared Frobenius distance between the Gram matrices (Gatys et al.) of the guide classifier's two
/// intermediate feature maps for x0 and for a reference digit, each Gram matrix normalised to unit Frobenius norm
/// (so the energy lies in [0, 8], compares the pattern of feature co-activations rather than their overall magnitude,
/// and its gradient stays bounded on wild clean estimates), summed over the two layers. The reference is encoded once.
/// </summary>
public sealed class DigitStyleCondition : IGuidanceCondition
{
    private readonly GuideClassifier _guide;
    private readonly Tensor _gram1;
    private readonly Tensor _gram2;

    /// <summary>Creates the condition.</summary>
    /// <param name="guide">The guide classifier (eval mode, frozen).</param>
    /// <param name="reference">One reference digit [1, 1, 32, 32] or [1, 32, 32] in [-1, 1].</param>
    /// <param name="schedule">Step size and window.</param>
    /// <param name="name">Name in traces (default "style").</param>
    public DigitStyleCondition(GuideClassifier guide, Tensor reference, GuidanceSchedule schedule, string name = "style")
    {
        _guide = guide ?? throw new ArgumentNullException(nameof(guide));
        ArgumentNullException.ThrowIfNull(reference);
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        Name = name;
        DigitsModels.Freeze(_guide);
        var r = reference.dim() == 3 ? reference.unsqueeze(0) : reference;
        if (r.dim() != 4 || r.shape[0] != 1 || r.shape[1] != 1 || r.shape[2] != MnistData.Size || r.shape[3] != MnistData.Size)
            throw new ArgumentException($"The style reference must be one digit [1, 1, {MnistData.Size}, {MnistData.Size}]; got [{string.Join(", ", reference.shape)}].", nameof(reference));
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (f1, f2, _) = _guide.Features(r.to(ScalarType.Float32));
        _gram1 = Normalised(Gram(f1)).MoveToOuterDisposeScope();
        _gram2 = Normalised(Gram(f2)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <summary>Gram matrices [B, C, C] of feature maps [B, C, H, W], normalised by C*H*W.</summary>
    public static Tensor Gram(Tensor features)
    {
        ArgumentNullException.ThrowIfNull(features);
        long b = features.shape[0], c = features.shape[1], n = features.shape[2] * features.shape[3];
        var f = features.reshape(b, c, n);
        return bmm(f, f.transpose(1, 2)) / (c * n);
    }

    private static Tensor Normalised(Tensor gram) =>
        gram / (gram.square().sum(new long[] { 1, 2 }, keepdim: true) + 1e-12).sqrt();

    /// <inheritdoc />
    public Tensor Energy(Tensor x0)
    {
        ArgumentNullException.ThrowIfNull(x0);
        var (f1, f2, _) = _guide.Features(x0);
        var d1 = (Normalised(Gram(f1)) - _gram1).square().sum(new long[] { 1, 2 });
        var d2 = (Normalised(Gram(f2)) - _gram2).square().sum(new long[] { 1, 2 });
        return d1 + d2;
    }
}
