using ZMagic.Core.Guidance;
using ZMagic.Encoders.FaceApi;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Guidance.FaceAttributes;

/// <summary>
/// Shared plumbing of the face-api conditions: the fixed face crop of x0 (in [-1, 1], [B, 3, H, W]; the box in pixels
/// of x0) and the schedule. The networks run in float32 on the device of their weights; x0 must be on that device.
/// </summary>
public abstract class FaceApiCondition : IGuidanceCondition
{
    /// <summary>FreeDoM's scale-free step rule (0.02), used when no schedule is given.</summary>
    public static GuidanceSchedule DefaultSchedule { get; } = new(new NormRelativeStepSize(0.02));

    /// <summary>Sets the crop, name and schedule.</summary>
    protected FaceApiCondition(FaceBox box, string name, GuidanceSchedule? schedule)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        Crop = new FaceCrop(box);
        Name = name;
        Schedule = schedule ?? DefaultSchedule;
    }

    /// <summary>The face crop applied to every x0.</summary>
    public FaceCrop Crop { get; }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <inheritdoc />
    public abstract Tensor Energy(Tensor x0);
}

/// <summary>
/// Target age: energy <c>(age(x0) - target)^2</c> (years squared) from face-api's AgeGenderNet on the face crop.
/// </summary>
public sealed class TargetAgeCondition : FaceApiCondition
{
    private readonly AgeGenderNet _net;

    /// <summary>Creates the condition.</summary>
    /// <param name="net">A loaded AgeGenderNet.</param>
    /// <param name="box">The face box in pixels of x0 (e.g. <see cref="FaceBoxFinder.Find"/> on a reference image).</param>
    /// <param name="targetAge">The wanted age in years (0..120).</param>
    /// <param name="schedule">Step rule and window (default <see cref="FaceApiCondition.DefaultSchedule"/>).</param>
    /// <param name="name">Name in traces.</param>
    public TargetAgeCondition(AgeGenderNet net, FaceBox box, double targetAge, GuidanceSchedule? schedule = null, string name = "age")
        : base(box, name, schedule)
    {
        _net = net ?? throw new ArgumentNullException(nameof(net));
        if (!double.IsFinite(targetAge) || targetAge < 0 || targetAge > 120)
            throw new ArgumentOutOfRangeException(nameof(targetAge), targetAge, "target age must be in 0..120 years.");
        TargetAge = targetAge;
    }

    /// <summary>The wanted age.</summary>
    public double TargetAge { get; }

    /// <summary>The predicted ages [B] of the faces in x0.</summary>
    public Tensor PredictAge(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var o = _net.forward(Crop.NetInput(x0, _net.InputSize, Name));
        return o.Age.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var age = PredictAge(x0);
        return (age - TargetAge).square().MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Target gender: energy = cross-entropy <c>-log p(target)</c> of face-api's AgeGenderNet gender head on the face crop.
/// </summary>
public sealed class TargetGenderCondition : FaceApiCondition
{
    private readonly AgeGenderNet _net;

    /// <summary>Creates the condition (see <see cref="TargetAgeCondition"/> for the parameters).</summary>
    public TargetGenderCondition(AgeGenderNet net, FaceBox box, FaceGender target, GuidanceSchedule? schedule = null, string name = "gender")
        : base(box, name, schedule)
    {
        _net = net ?? throw new ArgumentNullException(nameof(net));
        if (!Enum.IsDefined(target)) throw new ArgumentOutOfRangeException(nameof(target), target, "unknown gender class.");
        Target = target;
    }

    /// <summary>The wanted class.</summary>
    public FaceGender Target { get; }

    /// <summary>Gender probabilities [B, 2] (male, female) of the faces in x0.</summary>
    public Tensor Probabilities(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var o = _net.forward(Crop.NetInput(x0, _net.InputSize, Name));
        return o.GenderLogits.softmax(1).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var o = _net.forward(Crop.NetInput(x0, _net.InputSize, Name));
        return (-F.log_softmax(o.GenderLogits, 1)[.., (int)Target]).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Target expression: energy = cross-entropy <c>-log p(target)</c> of face-api's FaceExpressionNet on the face crop.
/// </summary>
public sealed class TargetExpressionCondition : FaceApiCondition
{
    private readonly FaceExpressionNet _net;

    /// <summary>Creates the condition (see <see cref="TargetAgeCondition"/> for the parameters).</summary>
    public TargetExpressionCondition(FaceExpressionNet net, FaceBox box, FaceExpression target, GuidanceSchedule? schedule = null, string name = "expression")
        : base(box, name, schedule)
    {
        _net = net ?? throw new ArgumentNullException(nameof(net));
        if (!Enum.IsDefined(target)) throw new ArgumentOutOfRangeException(nameof(target), target, "unknown expression.");
        Target = target;
    }

    /// <summary>The wanted expression.</summary>
    public FaceExpression Target { get; }

    /// <summary>Expression probabilities [B, 7] (order of <see cref="FaceExpression"/>) of the faces in x0.</summary>
    public Tensor Probabilities(Tensor x0)
    {
        using var scope = NewDisposeScope();
        return _net.forward(Crop.NetInput(x0, _net.InputSize, Name)).softmax(1).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var logits = _net.forward(Crop.NetInput(x0, _net.InputSize, Name));
        return (-F.log_softmax(logits, 1)[.., (int)Target]).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// 68-point landmarks (face-api FaceLandmark68Net): energy = L2 norm (per item) of the difference between the raw
/// landmarks of x0's face crop and those of the reference's, both in units of the 112-pixel net input (raw * 112).
/// The reference is encoded once, at construction, with the same box.
/// </summary>
public sealed class FaceApiLandmarksCondition : FaceApiCondition
{
    private readonly FaceLandmark68Net _net;
    private readonly Tensor _reference;

    /// <summary>Creates the condition.</summary>
    /// <param name="net">A loaded FaceLandmark68Net.</param>
    /// <param name="box">The face box (e.g. found by the detector on <paramref name="reference"/>).</param>
    /// <param name="reference">The reference image [1, 3, H, W] in [-1, 1] with the same size as x0.</param>
    /// <param name="schedule">Step rule and window.</param>
    /// <param name="name">Name in traces.</param>
    public FaceApiLandmarksCondition(FaceLandmark68Net net, FaceBox box, Tensor reference, GuidanceSchedule? schedule = null, string name = "faceapi-landmarks")
        : base(box, name, schedule)
    {
        _net = net ?? throw new ArgumentNullException(nameof(net));
        FaceCrop.CheckReferenceRange(reference, name);
        if (reference.dim() != 4 || reference.shape[0] != 1)
            throw new ArgumentException($"{name}: the reference must be one image [1, 3, H, W], got [{string.Join(", ", reference.shape)}].", nameof(reference));
        using var _ = no_grad();
        // Kept for the condition's lifetime: out of any caller's dispose scope.
        _reference = Landmarks(reference.detach()).detach().DetachFromDisposeScope();
    }

    /// <summary>The reference's landmarks [1, 136] (x, y interleaved, in pixels of the 112 net input).</summary>
    public Tensor ReferenceLandmarks => _reference;

    /// <summary>The landmarks [B, 136] of x0's face, in pixels of the 112 net input.</summary>
    public Tensor Landmarks(Tensor x0)
    {
        using var scope = NewDisposeScope();
        return (_net.forward(Crop.NetInput(x0, _net.InputSize, Name)) * 112f).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var lm = Landmarks(x0);
        return (lm - _reference.to(lm.device)).square().sum(1).add(1e-12).sqrt().MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Identity by face-api's 128-d descriptor (FaceRecognitionNet, dlib ResNet): energy = Euclidean distance between the
/// descriptors of x0's face crop and of the reference face (same person below about 0.6).
/// </summary>
public sealed class FaceDescriptorIdentityCondition : FaceApiCondition
{
    private readonly FaceRecognitionNet _net;
    private readonly Tensor _reference;

    /// <summary>Creates the condition.</summary>
    /// <param name="net">A loaded FaceRecognitionNet.</param>
    /// <param name="box">The face box in x0.</param>
    /// <param name="reference">The reference image [1, 3, H, W] in [-1, 1].</param>
    /// <param name="referenceBox">The face box in the reference (default: <paramref name="box"/>).</param>
    /// <param name="schedule">Step rule and window.</param>
    /// <param name="name">Name in traces.</param>
    public FaceDescriptorIdentityCondition(FaceRecognitionNet net, FaceBox box, Tensor reference, FaceBox? referenceBox = null,
        GuidanceSchedule? schedule = null, string name = "faceapi-identity")
        : base(box, name, schedule)
    {
        _net = net ?? throw new ArgumentNullException(nameof(net));
        FaceCrop.CheckReferenceRange(reference, name);
        if (reference.dim() != 4 || reference.shape[0] != 1)
            throw new ArgumentException($"{name}: the reference must be one image [1, 3, H, W], got [{string.Join(", ", reference.shape)}].", nameof(reference));
        var refCrop = new FaceCrop(referenceBox ?? box);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        _reference = _net.forward(refCrop.NetInput(reference.detach(), _net.InputSize, name)).detach().DetachFromDisposeScope();
    }

    /// <summary>The reference descriptor [1, 128].</summary>
    public Tensor ReferenceDescriptor => _reference;

    /// <summary>Descriptors [B, 128] of x0's faces.</summary>
    public Tensor Descriptor(Tensor x0)
    {
        using var scope = NewDisposeScope();
        return _net.forward(Crop.NetInput(x0, _net.InputSize, Name)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var d = Descriptor(x0);
        return (d - _reference.to(d.device)).square().sum(1).add(1e-12).sqrt().MoveToOuterDisposeScope();
    }
}
