using ZMagic.Cli;

namespace ZMagic.Cli.Tests;

/// <summary>Runs the CLI in-process and captures its output.</summary>
internal static class CliRunner
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = App.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    public static string TempDir() => Directory.CreateTempSubdirectory("zmagic-cli-").FullName;
}
