namespace ZMagic.Core.Guidance;

/// <summary>Options of <see cref="CAGradCombiner"/>.</summary>
public sealed record CAGradOptions
{
    /// <summary>The conflict-aversion radius c in [0, 1) (the research code uses 0.5).</summary>
    public double C { get; init; } = 0.5;

    /// <summary>Solve one dual per channel (dim 1) as the research code does, instead of one for the whole tensor.</summary>
    public bool PerChannel { get; init; }

    /// <summary>Constants and formulas of the dual.</summary>
    public CAGradVariant Variant { get; init; } = CAGradVariant.Exact;

    /// <summary>Output scaling.</summary>
    public CAGradRescale Rescale { get; init; } = CAGradRescale.VariantDefault;

    /// <summary>The two-task solver.</summary>
    public CAGradSolver Solver { get; init; } = CAGradSolver.Auto;

    /// <summary>
    /// Rejects options that <see cref="CAGradCombiner"/> could not honour, naming the options and why; the combiner's
    /// constructor calls it: <see cref="C"/> must be finite and non-negative; <see cref="Solver"/> other than
    /// <see cref="CAGradSolver.Auto"/> conflicts with <see cref="CAGradVariant.NyuV2"/> (that variant solves every task
    /// count, two included, with the simplex method, so the two-task solver would be ignored); every enum value must be
    /// one of its type.
    /// </summary>
    /// <exception cref="ArgumentException">The first problem found (an <see cref="ArgumentOutOfRangeException"/> for c).</exception>
    public void Validate()
    {
        const string n = nameof(CAGradOptions);
        if (!(C >= 0 && double.IsFinite(C)))
            throw new ArgumentOutOfRangeException(nameof(C), C, $"{n}.{nameof(C)}: CAGrad's c must be finite and non-negative (the paper uses c in [0, 1)).");
        Defined(Variant, nameof(Variant));
        Defined(Rescale, nameof(Rescale));
        Defined(Solver, nameof(Solver));
        if (Variant == CAGradVariant.NyuV2 && Solver != CAGradSolver.Auto)
            throw new ArgumentException($"{n}.{nameof(Solver)} = {Solver} conflicts with {n}.{nameof(Variant)} = {nameof(CAGradVariant.NyuV2)}: "
                                        + "that variant solves every task count, two included, with the simplex method, so the two-task solver would be ignored. "
                                        + $"Leave {nameof(Solver)} = {nameof(CAGradSolver.Auto)}.");
    }

    private static void Defined<T>(T value, string name) where T : struct, Enum
    {
        if (!Enum.IsDefined(value))
            throw new ArgumentException($"{nameof(CAGradOptions)}.{name} = {value} is not a {typeof(T).Name} value (known: {string.Join(", ", Enum.GetNames<T>())}).");
    }

    /// <summary>The research code's setting: c = 0.5, per channel, its constants, solvers and rescalings.</summary>
    public static CAGradOptions ResearchCode { get; } = new() { C = 0.5, PerChannel = true, Variant = CAGradVariant.ResearchCode };
}
