namespace ZMagic.Cli.Commands;

/// <summary>Placeholder.</summary>
public static class ModelsCommand
{
    /// <summary>Runs the command.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => throw new NotSupportedException("not yet");
}
