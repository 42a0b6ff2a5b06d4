namespace ZMagic.Core.Guidance;

/// <summary>Where later conditions get their noise prediction at the proposal.</summary>
public enum ZMagicProposal
{
    /// <summary>A second denoiser forward at the proposal, at the same t (the method as published). The default.</summary>
    Exact,
    /// <summary>
    /// Cheaper: reuse the first call's eps at the proposal, <c>x0(p) = (p - sqrt(1 - abar) eps(x_t)) / sqrt(abar)</c>
    /// (one forward; the later gradients then only pass through the encoders and the pull-back).
    /// </summary>
    ReuseFirstForward,
}
