namespace ZMagic.Core.Guidance;

/// <summary>How the dual is solved for two tasks.</summary>
public enum CAGradSolver
{
    /// <summary>Bounded Brent for the ResearchCode and Cityscapes variants (parity), exact bisection otherwise.</summary>
    Auto,
    /// <summary>The port of SciPy's bounded Brent (xatol 1e-5): the research code's numbers, not the exact optimum.</summary>
    BoundedBrent,
    /// <summary>The exact minimiser (bisection on the derivative of the convex 1-D dual, to machine precision).</summary>
    Exact,
}
