namespace ZMagic.Core.Guidance;

/// <summary>How the CAGrad direction is scaled.</summary>
public enum CAGradRescale
{
    /// <summary>The variant's own scaling: Exact -> <see cref="SumScale"/>; ResearchCode -> 1/(1+c) for 2 tasks, 1/(1+c^2) for more; Cityscapes/NyuV2 -> 1/(1+c^2) (their trainers' default).</summary>
    VariantDefault,
    /// <summary><c>K / (1 + c)</c>: equals the plain sum of the tasks when they all agree (the library's default).</summary>
    SumScale,
    /// <summary>No rescaling: <c>d = g0 + lambda g_w</c> (mean scale; CAGrad's "rescale 0").</summary>
    None,
    /// <summary><c>d / (1 + c)</c> (CAGrad toy.py, cityscapes "rescale 2"): equals the mean when all tasks agree.</summary>
    OnePlusC,
    /// <summary><c>d / (1 + c^2)</c> (cityscapes/nyuv2 "rescale 1", mtrl).</summary>
    OnePlusCSquared,
}
