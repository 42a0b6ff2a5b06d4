using BenchmarkDotNet.Running;

namespace ZMagic.Benchmarks;

/// <summary>
/// Entry point: <c>dotnet run -c Release --project benchmarks/ZMagic.Benchmarks -- --filter '*' --inProcess</c>.
/// Run in-process so the build's GLIBCXX fix of libLibTorchSharp.so applies (the default out-of-process toolchain
/// rebuilds a generated project without it).
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmarks selected on the command line.</summary>
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
