namespace ZMagic.Cli.Commands;

/// <summary>Placeholder.</summary>
public static class GenerateCommand
{
    /// <summary>Runs the command.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct) => throw new NotSupportedException("not yet");
}
