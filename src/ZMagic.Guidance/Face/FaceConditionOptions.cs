using ZMagic.Core.Guidance;

namespace ZMagic.Guidance.Face;

/// <summary>
/// What every face condition is configured with: its scale, step-size rule, window and name. Defaults follow
/// FreeDoM's <c>Face-GD/run.sh</c> for the CelebA-HQ 256 DDPM with 100 DDIM steps.
/// </summary>
public abstract record FaceConditionOptions
{
    /// <summary>Sets the FreeDoM defaults of one condition type.</summary>
    protected FaceConditionOptions(double scale, int stop, string name)
    {
        Scale = scale;
        Window = new GuidanceWindow(Stop: stop);
        Name = name;
    }

    /// <summary>The guidance scale (FreeDoM's <c>rho_scale</c>).</summary>
    public double Scale { get; init; }

    /// <summary>The step-size rule; null uses FreeDoM's face rule <c>rho = sqrt(abar_t) * Scale</c>.</summary>
    public IStepSizeRule? StepSize { get; init; }

    /// <summary>Where the condition acts (FreeDoM: <c>if not i &lt;= stop</c>).</summary>
    public GuidanceWindow Window { get; init; }

    /// <summary>The condition's name in traces.</summary>
    public string Name { get; init; }

    /// <summary>The schedule these options describe.</summary>
    public GuidanceSchedule ToSchedule()
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(Name);
        if (StepSize is null && !double.IsFinite(Scale))
            throw new ArgumentOutOfRangeException(nameof(Scale), Scale, $"condition '{Name}': the scale must be finite.");
        return new GuidanceSchedule(StepSize ?? new SqrtAlphaBarStepSize(Scale), Window ?? GuidanceWindow.Always);
    }
}

/// <summary>How an identity condition compares embeddings.</summary>
public enum IdentityDistance
{
    /// <summary>FreeDoM: the L2 norm of <c>ref_feat - img_feat</c> (IR-SE50 embeddings are unit vectors).</summary>
    L2,

    /// <summary><c>1 - cos(ref_feat, img_feat)</c>, in [0, 2]; independent of the embeddings' norms (useful for iresnet).</summary>
    Cosine,
}

/// <summary>Options of <see cref="IdentityCondition"/>. FreeDoM defaults: scale 100, stop 100.</summary>
public sealed record IdentityOptions() : FaceConditionOptions(100, 100, "identity")
{
    /// <summary>The distance between the reference and generated embeddings.</summary>
    public IdentityDistance Distance { get; init; } = IdentityDistance.L2;
}

/// <summary>Options of <see cref="LandmarksCondition"/>. FreeDoM defaults: scale 500, stop 200.</summary>
public sealed record LandmarksOptions() : FaceConditionOptions(500, 200, "landmarks")
{
    /// <summary>
    /// Feed the reference face with its channels reversed (BGR), as FreeDoM does through cv2 while the generated image
    /// goes in as RGB. Off by default: both branches then see RGB. Turn on only for parity with FreeDoM's results.
    /// </summary>
    public bool ReferenceAsBgr { get; init; }
}

/// <summary>How a target label map is turned into an energy.</summary>
public enum ParsingLabelLoss
{
    /// <summary>Per item, the mean over pixels of the cross-entropy <c>-log softmax(logits)[label]</c>.</summary>
    CrossEntropy,

    /// <summary>Per item, the L2 norm of <c>one_hot(label) - softmax(logits)</c> over classes and pixels.</summary>
    OneHotResidual,
}

/// <summary>Options of <see cref="ParsingCondition"/>. FreeDoM defaults: scale 0.2, stop 200, parsing at 512x512.</summary>
public sealed record ParsingOptions() : FaceConditionOptions(0.2, 200, "parsing")
{
    /// <summary>The side the image is bicubically resized to before BiSeNet (FreeDoM: 512, the training size).</summary>
    public int InputSize { get; init; } = 512;

    /// <summary>The loss used with a target label map (<see cref="ParsingCondition.FromLabelMap"/>).</summary>
    public ParsingLabelLoss LabelLoss { get; init; } = ParsingLabelLoss.CrossEntropy;
}
