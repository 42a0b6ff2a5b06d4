namespace ZMagic.Core.Guidance;

/// <summary>Which published form of the CAGrad dual and its small constants a <see cref="CAGradCombiner"/> uses.</summary>
public enum CAGradVariant
{
    /// <summary>
    /// The exact dual without regularising constants: minimise <c>w . G g0 + c ||g0|| ||g_w||</c> over the simplex,
    /// <c>d = g0 + c ||g0|| / ||g_w|| g_w</c>.
    /// </summary>
    Exact,
    /// <summary>
    /// The Z-Magic research code (HolmesShuan/FreeDoM denoising.py): for 2 tasks its <c>cagrad</c> (= CAGrad toy.py;
    /// constants 1e-4, SciPy bounded Brent, divided by 1 + c); for 3 or more tasks its <c>cagrad_third_order</c>
    /// (= CAGrad nyuv2: <c>c' = c sqrt(mean(GG) + 1e-8) + 1e-8</c>, constants 1e-8, float32-rounded weights,
    /// divided by 1 + c^2). The 3-task SLSQP solve is replaced by the convergent simplex solver.
    /// </summary>
    ResearchCode,
    /// <summary>CAGrad cityscapes/utils.py (2 tasks only): like the toy form with constants 1e-8 and no constant in ||g0||.</summary>
    Cityscapes,
    /// <summary>CAGrad nyuv2/utils.py generalised to K tasks (the research code's 3-task form).</summary>
    NyuV2,
}
