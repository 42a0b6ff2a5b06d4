namespace ZMagic.Core.Guidance;

/// <summary>How three or more conditions are chained.</summary>
public enum ZMagicChaining
{
    /// <summary>Every later condition is evaluated at the proposal of the first condition (c1->c2, c1->c3). The default.</summary>
    Star,
    /// <summary>
    /// Each later condition is evaluated at the previous condition's proposal (c1->c2->c3): the proposal is moved by
    /// each evaluated condition's own gradient at it, <c>p_{k+1} = p_k - rho_k gh_k</c>. Every pull-back goes through
    /// the first step (gh treated as constants, as in <see cref="ZMagicJacobian.ResearchCode"/>).
    /// </summary>
    Chain,
}
