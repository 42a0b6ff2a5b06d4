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

/// <summary>A test class with a temporary folder of its own, deleted when the class's test ends.</summary>
public abstract class TempFolderTests : IDisposable
{
    /// <summary>The folder.</summary>
    protected string Root { get; } = CliRunner.TempDir();

    /// <summary>Writes a file into <see cref="Root"/> and returns its path.</summary>
    protected string Write(string name, byte[] data)
    {
        string path = Path.Combine(Root, name);
        File.WriteAllBytes(path, data);
        return path;
    }

    public void Dispose()
    {
        try { Directory.Delete(Root, true); } catch (IOException) { }
        GC.SuppressFinalize(this);
    }
}
