using System.Diagnostics;

namespace ZMagic.Guidance.Tests.Packaging;

internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

#if DEBUG
    public const string Configuration = "Debug";
#else
    public const string Configuration = "Release";
#endif

    private static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "ZMagic.sln"))) return d.FullName;
        throw new InvalidOperationException($"ZMagic.sln not found above {AppContext.BaseDirectory}.");
    }

    /// <summary>Runs a process to completion (bounded), returning exit code and combined output.</summary>
    public static (int Code, string Output) Run(string file, string args, string workDir, TimeSpan timeout) =>
        Run(file, args, workDir, timeout, null);

    /// <summary>As <see cref="Run(string, string, string, TimeSpan)"/>, with extra environment variables.</summary>
    public static (int Code, string Output) Run(string file, string args, string workDir, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        // The test host's MSBuild variables must not leak into a nested build.
        foreach (var v in new[] { "MSBuildSDKsPath", "MSBUILD_EXE_PATH", "MSBuildExtensionsPath", "MSBuildLoadMicrosoftTargetsReadOnly", "VSTEST_HOST_DEBUG" })
            psi.Environment.Remove(v);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        if (environment is not null)
            foreach (var (k, v) in environment) psi.Environment[k] = v;
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        var output = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {args} did not finish in {timeout}:\n{output}");
        }
        p.WaitForExit();
        lock (output) return (p.ExitCode, output.ToString());
    }
}
