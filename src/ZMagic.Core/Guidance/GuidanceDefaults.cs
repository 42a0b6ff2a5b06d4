namespace ZMagic.Core.Guidance;

/// <summary>Defaults used when options leave a choice open.</summary>
internal static class GuidanceDefaults
{
    /// <summary>The strategy used when conditions are given but no strategy is chosen: Vanilla (FreeDoM).</summary>
    public static IGuidanceStrategy Strategy() => new VanillaStrategy();
}
