namespace ZMagic.Cli;

/// <summary>A usage error: unknown or contradictory options, bad values. Exit code <see cref="ExitCodes.Usage"/>.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>An input problem: a missing or unreadable file, a checkpoint that does not fit. Exit code <see cref="ExitCodes.Input"/>.</summary>
public sealed class InputException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Process exit codes (documented in docs/cli.md).</summary>
public static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Ok = 0;
    /// <summary>A failure while running (guidance diverged, I/O error while writing, ...).</summary>
    public const int Failure = 1;
    /// <summary>Bad command line: unknown command or option, bad value, contradictory options.</summary>
    public const int Usage = 2;
    /// <summary>Bad input file: missing, unreadable, wrong format, or not fitting the preset.</summary>
    public const int Input = 3;
    /// <summary>Cancelled by Ctrl+C (SIGINT); nothing partial was written.</summary>
    public const int Cancelled = 130;
}
