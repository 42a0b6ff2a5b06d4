namespace ZMagic.Core.Guidance;

/// <summary>What the Jacobian J = d proposal / d x_t of Z-Magic's pull-back contains.</summary>
public enum ZMagicJacobian
{
    /// <summary>
    /// As the research code: the sampler step and the denoiser, but not the Hessian of the first energy (g1 is
    /// taken without create_graph). One vector-Jacobian product per later condition. The default.
    /// </summary>
    ResearchCode,
    /// <summary>The paper's formula: J also contains <c>-rho_1 Hessian(E_1)</c> (g1 with create_graph; double backward).</summary>
    Full,
    /// <summary>First-order shortcut: J = identity, <c>d_k = gh_k</c>; no vector-Jacobian product.</summary>
    FirstOrder,
}
