using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>Helpers for per-item step sizes.</summary>
public static class StepSizeRules
{
    /// <summary>The batch size a context describes (the leading dimension of its epsilon).</summary>
    public static int Items(in StepSizeContext context) => context.Epsilon.dim() == 0 ? 1 : (int)context.Epsilon.shape[0];

    /// <summary>One value for every item (rules that look at neither epsilon nor the gradient).</summary>
    public static double[] Uniform(double value, in StepSizeContext context)
    {
        var r = new double[Items(context)];
        Array.Fill(r, value);
        return r;
    }

    /// <summary>
    /// <paramref name="rule"/>'s <see cref="IStepSizeRule.StepSize"/> on each item's slices ([1, ...] of the epsilon,
    /// the gradient and the CFG correction; an empty gradient stays empty). With one item the context is passed on unchanged.
    /// </summary>
    public static double[] PerItem(IStepSizeRule rule, in StepSizeContext context)
    {
        ArgumentNullException.ThrowIfNull(rule);
        int b = Items(context);
        if (b == 1) return new[] { rule.StepSize(context) };
        var r = new double[b];
        bool hasGradient = context.Gradient.numel() > 0;
        for (int i = 0; i < b; i++)
        {
            using var scope = NewDisposeScope();
            var item = context with
            {
                Epsilon = context.Epsilon.narrow(0, i, 1),
                Gradient = hasGradient ? context.Gradient.narrow(0, i, 1) : context.Gradient,
                CfgCorrection = context.CfgCorrection?.narrow(0, i, 1),
            };
            r[i] = rule.StepSize(item);
        }
        return r;
    }
}
