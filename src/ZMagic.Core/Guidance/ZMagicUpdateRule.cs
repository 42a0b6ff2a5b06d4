namespace ZMagic.Core.Guidance;

/// <summary>How the combined update is applied.</summary>
public enum ZMagicUpdateRule
{
    /// <summary>The paper's reading: <c>x_t' = S(x_t) - u</c>, the combined update u replacing the individual terms. The default.</summary>
    Replacement,
    /// <summary>
    /// The research code's rule (for parity): the individual terms are subtracted once into the sequential state,
    /// then again together with the combined update: <c>x_t' = S(x_t) - 2 sum_k D_k - u</c>.
    /// </summary>
    ResearchCode,
}
