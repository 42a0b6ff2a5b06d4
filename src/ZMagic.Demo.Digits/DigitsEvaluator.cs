using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>What a digits request asks for and how success is judged.</summary>
/// <param name="TargetClass">Wanted digit (judged by the judge classifier, never by the guide).</param>
/// <param name="TargetInk">Wanted ink mass (mean of (x + 1) / 2).</param>
/// <param name="InkTolerance">Accepted |ink - target|.</param>
/// <param name="StyleThreshold">Accepted style distance (<see cref="DigitStyleCondition"/>'s energy).</param>
public sealed record DigitsCriteria(int TargetClass, double TargetInk, double InkTolerance, double StyleThreshold);

/// <summary>Per-image evaluation of one sample.</summary>
/// <param name="JudgedClass">The judge's argmax.</param>
/// <param name="Ink">Ink mass.</param>
/// <param name="StyleDistance">Gram distance to the reference.</param>
/// <param name="ClassOk">Judged class is the target.</param>
/// <param name="InkOk">Ink within tolerance.</param>
/// <param name="StyleOk">Style distance under the threshold.</param>
public sealed record DigitScore(int JudgedClass, double Ink, double StyleDistance, bool ClassOk, bool InkOk, bool StyleOk)
{
    /// <summary>All three at once.</summary>
    public bool Joint => ClassOk && InkOk && StyleOk;
}

/// <summary>Scores samples against a request: class by the judge, thickness by ink mass, style by Gram distance.</summary>
public sealed class DigitsEvaluator
{
    private readonly JudgeClassifier _judge;
    private readonly DigitStyleCondition _style;

    /// <summary>Creates the evaluator.</summary>
    /// <param name="judge">The judge classifier.</param>
    /// <param name="style">The style condition whose energy is the style distance.</param>
    /// <param name="criteria">Targets and thresholds.</param>
    public DigitsEvaluator(JudgeClassifier judge, DigitStyleCondition style, DigitsCriteria criteria)
    {
        _judge = judge ?? throw new ArgumentNullException(nameof(judge));
        _style = style ?? throw new ArgumentNullException(nameof(style));
        Criteria = criteria ?? throw new ArgumentNullException(nameof(criteria));
        DigitsModels.Freeze(_judge);
    }

    /// <summary>Targets and thresholds.</summary>
    public DigitsCriteria Criteria { get; }

    /// <summary>Scores images [B, 1, 32, 32] (clamped to [-1, 1] first, as they would be saved).</summary>
    public IReadOnlyList<DigitScore> Score(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = images.detach().to(ScalarType.Float32).clamp(-1, 1);
        var cls = _judge.forward(x).argmax(1).data<long>().ToArray();
        var ink = StrokeThicknessCondition.Ink(x).to(ScalarType.Float64).data<double>().ToArray();
        var style = _style.Energy(x).to(ScalarType.Float64).data<double>().ToArray();
        var result = new List<DigitScore>(cls.Length);
        for (int i = 0; i < cls.Length; i++)
            result.Add(new DigitScore((int)cls[i], ink[i], style[i], cls[i] == Criteria.TargetClass,
                Math.Abs(ink[i] - Criteria.TargetInk) <= Criteria.InkTolerance, style[i] <= Criteria.StyleThreshold));
        return result;
    }
}
