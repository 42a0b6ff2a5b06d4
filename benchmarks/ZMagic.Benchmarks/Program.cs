using BenchmarkDotNet.Running;

namespace ZMagic.Benchmarks;

/// <summary>
/// Entry point: <c>dotnet run -c Release --project benchmarks/ZMagic.Benchmarks -- --filter '*' --inProcess</c>.
/// Run in-process so the build's GLIBCXX fix of libLibTorchSharp.so applies (the default out-of-process toolchain
/// rebuilds a generated project without it).
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmarks selected on the command line ("sd-memory ..." runs <see cref="SdMemoryProbe"/>).</summary>
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "sd-memory") return SdMemoryProbe.Run(args[1..]);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
