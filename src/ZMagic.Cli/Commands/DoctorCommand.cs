using System.CommandLine;
using ZMagic.Cli.CommandLine;
using ZMagic.Core.Native;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic doctor</c>: the numerics self-check, printed.</summary>
internal static class DoctorCommand
{
    private const string Summary = "Check that libtorch computes correct numbers on this CPU (and what was switched off)";

    private const string Details = """
        Compares convolution, transposed convolution, linear and group norm (forward and input gradient, at the layer
        shapes of the built-in networks) in float32 against a float64 reference, each run three times to expose
        non-determinism, and prints the CPU, its vector ISA, the oneDNN version and libtorch's threads. When a check
        fails, it routes around the kernels, narrowest first: convolutions in channels-last layout (oneDNN's brgemm
        kernels), else oneDNN switched off, and checks again; every other command does the same at start (environment
        variable ZMAGIC_ONEDNN=auto|on|channels-last|off, default auto). Takes a few seconds.
        """;

    private const string Epilogue = """
        Exit codes: 0 correct (possibly after a workaround: the output says which), 1 wrong numbers that no
        workaround fixed, 2 bad command line.
        """;

    /// <summary>Every option of <c>zmagic doctor</c>: declared here once, read in <see cref="Run"/>.</summary>
    private sealed class Options(Command c)
    {
        public readonly Option<int> Threads = c.Declare(CommonOptions.Threads(0, 0, "libtorch intra-op threads (0: libtorch's default)"));
    }

    internal static Command Create(CliContext context)
    {
        var command = new Command("doctor", Summary).WithHelp(Details, Epilogue);
        var options = new Options(command);
        command.SetAction(r => Run(r, options, context));
        return command;
    }

    private static int Run(ParseResult p, Options o, CliContext context)
    {
        var (stdout, stderr, ct) = (context.Out, context.Err, context.Cancellation);
        App.SetThreads(p.GetValue(o.Threads));

        // A route chosen by ZMAGIC_ONEDNN (on, channels-last, off) is checked as it is; auto also tries the workarounds.
        bool auto = Numerics.IsAuto;
        var policy = Environment.GetEnvironmentVariable(Numerics.Variable);
        var mkl = NumericsSelfCheck.PinMklMode(); // before any matrix product, as every zmagic command does
        if (!auto) Numerics.Apply(stderr, ct);

        stdout.WriteLine($"CPU:        {LibTorchRuntime.CpuDescription}");
        stdout.WriteLine($"Vector ISA: {LibTorchRuntime.VectorIsa}");
        stdout.WriteLine($"oneDNN:     {LibTorchRuntime.OneDnnVersion ?? "unknown"} ({Enabled(LibTorchRuntime.OneDnnEnabled)})");
        stdout.WriteLine($"oneMKL:     reproducibility mode {LibTorchRuntime.MklReproducibility ?? "unknown"}{MklNote(mkl)}");
        stdout.WriteLine($"Threads:    {LibTorchRuntime.Threads}");
        if (NumericsSelfCheck.ChannelsLastConvolutions) stdout.WriteLine("Layout:     convolutions channels-last");
        foreach (var name in new[] { "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR", Numerics.Variable })
            if (Environment.GetEnvironmentVariable(name) is { Length: > 0 } v) stdout.WriteLine($"{name}={v}");
        stdout.WriteLine();

        var asIs = NumericsSelfCheck.Run(3, cancellationToken: ct);
        Print(stdout, asIs);
        PrintAlignment(stdout, asIs);
        if (!auto)
        {
            stdout.WriteLine(asIs.Healthy
                ? $"All {asIs.Probes.Count} checks passed on the route {Numerics.Variable}={policy} chose."
                : $"{asIs.Failures.Count()} of {asIs.Probes.Count} checks failed on the route {Numerics.Variable}={policy} chose.");
            return asIs.Healthy ? ExitCodes.Ok : ExitCodes.Failure;
        }
        if (asIs.Healthy)
        {
            stdout.WriteLine($"All {asIs.Probes.Count} checks passed in {asIs.Elapsed.TotalSeconds:F1} s; nothing switched off.");
            return ExitCodes.Ok;
        }
        stdout.WriteLine($"{asIs.Failures.Count()} of {asIs.Probes.Count} checks failed.");
        try
        {
            var fixedReport = NumericsSelfCheck.EnsureHealthy(cancellationToken: ct);
            stdout.WriteLine();
            stdout.WriteLine("After the workaround:");
            Print(stdout, fixedReport);
            foreach (var w in fixedReport.Workarounds) stdout.WriteLine($"Workaround: {w}");
            stdout.WriteLine("Every zmagic command applies this workaround by itself (ZMAGIC_ONEDNN=auto); library users call "
                + "NumericsSelfCheck.EnsureHealthy() at start, or the sampler does it before its first guided step.");
            return ExitCodes.Ok;
        }
        catch (NumericsException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitCodes.Failure;
        }
    }

    private static string MklNote(MklModeChange change) => change switch
    {
        MklModeChange.Set => " (set at start: matrix products do not depend on memory alignment)",
        MklModeChange.SetByEnvironment => " (chosen by MKL_CBWR)",
        MklModeChange.TooLate => " (could not be set: oneMKL had already computed)",
        _ => "",
    };

    // Rounding that depends on where an input lies is not wrong, but makes runs irreproducible: say so, not fail.
    private static void PrintAlignment(TextWriter stdout, NumericsReport report)
    {
        var dependent = report.AlignmentDependent.Select(r => r.Name).ToList();
        if (dependent.Count == 0)
        {
            stdout.WriteLine($"Every probe gave the same bits with its input at each 4-byte offset within {NumericsProbe.AlignmentSpanBytes} bytes.");
            return;
        }
        stdout.WriteLine($"Alignment: {dependent.Count} probe(s) round differently when the input lies at another address alignment "
            + $"({string.Join(", ", dependent)}); oneMKL mode {report.MklReproducibility ?? "unknown"}. Results stay within "
            + "float32 precision, but runs whose tensors live in .NET memory may differ in the last bits: start the process "
            + "with MKL_CBWR=AUTO,STRICT (docs/reliability.md).");
    }

    private static string Enabled(bool? enabled) => enabled switch { true => "in use", false => "switched off", null => "switch not found" };

    private static void Print(TextWriter stdout, NumericsReport report)
    {
        foreach (var r in report.Probes)
            stdout.WriteLine($"  {(r.Passed ? "ok  " : "FAIL")}  {r.Name,-34} fwd {r.OutputError,9:E2}  grad {r.InputGradError,9:E2}"
                + (r.Passed ? "" : "  " + r.Describe()));
    }
}
