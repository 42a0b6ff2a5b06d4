namespace ZMagic.Core.Guidance;

/// <summary>A condition's step-size rule and guidance window.</summary>
/// <param name="StepSize">How the step size rho is computed at each step.</param>
/// <param name="Window">The timesteps where the condition acts; <see cref="GuidanceWindow.Always"/> by default.</param>
public sealed record GuidanceSchedule(IStepSizeRule StepSize, GuidanceWindow? Window = null)
{
    /// <summary>The effective window.</summary>
    public GuidanceWindow EffectiveWindow => Window ?? GuidanceWindow.Always;
}
