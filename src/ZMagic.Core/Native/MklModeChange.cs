namespace ZMagic.Core.Native;

/// <summary>The outcome of <see cref="LibTorchRuntime.TryMakeMklAlignmentIndependent"/>.</summary>
public enum MklModeChange
{
    /// <summary>Set now: oneMKL's results no longer depend on memory alignment.</summary>
    Set,

    /// <summary>A strict mode was already in place.</summary>
    AlreadySet,

    /// <summary>The <c>MKL_CBWR</c> environment variable chose the mode; left as it is.</summary>
    SetByEnvironment,

    /// <summary>oneMKL had already computed in this process and refuses to change mode (call earlier, or set
    /// <c>MKL_CBWR=AUTO,STRICT</c> in the environment).</summary>
    TooLate,

    /// <summary>This libtorch has no oneMKL whose mode can be set (nothing changed).</summary>
    Unavailable,
}
