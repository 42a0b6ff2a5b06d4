using TorchSharp;
using ZMagic.Cli.Commands;
using ZMagic.Core.IO;

namespace ZMagic.Cli;

/// <summary>The zmagic command line, callable in-process (tests) or from <c>Program</c>.</summary>
public static class App
{
    /// <summary>Top-level help.</summary>
    public const string Usage = """
        zmagic — training-free multi-attribute guided diffusion (Z-Magic, CVPR 2025) on TorchSharp

        Usage: zmagic <command> [options]     (zmagic <command> --help for details)

        Commands:
          demo       Run the built-in digits demo: unguided, vanilla, zmagic, zmagic+cagrad; pictures and a report
          generate   Generate images with a backbone checkpoint and any set of conditions
          models     List backbone presets; `models check --preset NAME FILE` checks a checkpoint against one
          train      Train the embedded digits networks (`train digits`)
          bench      Time guided steps (JSON)
          doctor     Check that libtorch computes correct numbers on this CPU (and what was switched off)

        Examples:
          zmagic demo --out demo-out
          zmagic generate --preset digits --condition digit:class=3 --condition thickness:ink=0.22 --method zmagic --out out
          zmagic models check --preset digits my-prior.safetensors

        Exit codes: 0 ok, 1 failure while running, 2 bad command line, 3 bad input file, 130 cancelled (Ctrl+C).
        """;

    /// <summary>Runs one command and returns its exit code; never throws for user errors.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
        {
            stdout.WriteLine(Usage);
            return args.Length == 0 ? ExitCodes.Usage : ExitCodes.Ok;
        }
        var rest = args[1..];
        try
        {
            // Every command that runs a network first makes sure the kernels compute correct numbers on this CPU.
            if (args[0] is "demo" or "generate" or "train" or "bench" && !rest.Any(a => a is "--help" or "-h"))
                Numerics.Apply(stderr, cancellationToken);
            return args[0] switch
            {
                "demo" => DemoCommand.Run(rest, stdout, stderr, cancellationToken),
                "generate" => GenerateCommand.Run(rest, stdout, stderr, cancellationToken),
                "models" => ModelsCommand.Run(rest, stdout, stderr),
                "train" => TrainCommand.Run(rest, stdout, stderr, cancellationToken),
                "bench" => BenchCommand.Run(rest, stdout, stderr, cancellationToken),
                "doctor" => DoctorCommand.Run(rest, stdout, stderr, cancellationToken),
                "--version" => Version(stdout),
                _ => throw new UsageException($"Unknown command '{args[0]}'. Commands: demo, generate, models, train, bench, doctor."),
            };
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {Terminal.Escape(e.Message)}");
            stderr.WriteLine($"Run 'zmagic {(args[0] is "demo" or "generate" or "models" or "train" or "bench" or "doctor" ? args[0] + " " : "")}--help' for usage.");
            return ExitCodes.Usage;
        }
        catch (Exception e) when (e is InputException or CheckpointFormatException or NotARegularFileException or FileNotFoundException
                                   or Guidance.Imaging.ImageDecodeException)
        {
            // Messages can carry names read from hostile files (tensor names, dtypes): escaped before printing.
            stderr.WriteLine($"error: {Terminal.Escape(e.Message)}");
            return ExitCodes.Input;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("Cancelled; no output was written and the output folder is as it was.");
            return ExitCodes.Cancelled;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or InvalidDataException or ArgumentException or Core.Guidance.GuidanceException or NotSupportedException or Core.Native.NumericsException)
        {
            stderr.WriteLine($"error: {Terminal.Escape(e.Message)}");
            if (Environment.GetEnvironmentVariable("ZMAGIC_DEBUG") is { Length: > 0 }) stderr.WriteLine(Terminal.Escape(e.ToString()));
            return ExitCodes.Failure;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Anything else (a libtorch error, a malformed JSON config) is still a failure while running, never an
            // unhandled exception: that would abort the process with exit 134 and a stack trace.
            stderr.WriteLine($"error: {Terminal.Escape(e.GetType().Name)}: {Terminal.Escape(e.Message)}");
            if (Environment.GetEnvironmentVariable("ZMAGIC_DEBUG") is { Length: > 0 }) stderr.WriteLine(Terminal.Escape(e.ToString()));
            return ExitCodes.Failure;
        }
    }

    private static int Version(TextWriter stdout)
    {
        stdout.WriteLine(typeof(App).Assembly.GetName().Version?.ToString() ?? "0.0.0");
        return ExitCodes.Ok;
    }

    /// <summary>Limits libtorch to <paramref name="threads"/> intra-op threads (0 keeps the default).</summary>
    internal static void SetThreads(int threads)
    {
        if (threads > 0) torch.set_num_threads(threads);
    }
}
