using System.CommandLine;
using System.CommandLine.Invocation;
using System.Reflection;
using TorchSharp;
using ZMagic.Cli.CommandLine;
using ZMagic.Cli.Commands;
using ZMagic.Core.IO;

namespace ZMagic.Cli;

/// <summary>The zmagic command line, callable in-process (tests) or from <c>Program</c>.</summary>
public static class App
{
    private const string Summary = "zmagic — training-free multi-attribute guided diffusion (Z-Magic, CVPR 2025) on TorchSharp";

    private const string Epilogue = """
        Examples:
          zmagic demo --out demo-out
          zmagic generate --preset digits --condition digit:class=3 --condition thickness:ink=0.22 --method zmagic --out out
          zmagic models check --preset digits my-prior.safetensors

        Exit codes: 0 ok, 1 failure while running, 2 bad command line, 3 bad input file, 130 cancelled (Ctrl+C).
        Tab completion: dotnet-suggest (docs/cli.md).
        """;

    // Response files (@file) stay off: an argument such as --prompt "@alice" is text, not a file to read.
    private static readonly ParserConfiguration ParserSettings = new() { ResponseFileTokenReplacer = null };

    /// <summary>The version <c>zmagic --version</c> prints: the assembly's informational version without build metadata.</summary>
    public static string Version
    {
        get
        {
            var assembly = typeof(App).Assembly;
            string v = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
                ?? assembly.GetName().Version?.ToString() ?? "0.0.0";
            int plus = v.IndexOf('+', StringComparison.Ordinal);
            return plus >= 0 ? v[..plus] : v;
        }
    }

    /// <summary>Runs one command and returns its exit code; never throws for user errors.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(stdout);
        ArgumentNullException.ThrowIfNull(stderr);
        // `zmagic help [command]` is `zmagic [command] --help`.
        if (args is ["help", .. var rest]) args = [.. rest, "--help"];
        var context = new CliContext(stdout, stderr, cancellationToken, args);
        var parse = CreateRootCommand(context, SdGenerateCommand.Handles(args), RecipeCommand.Handles(args)).Parse(args, ParserSettings);
        try
        {
            if (parse.Errors.Count > 0) return ParseErrors.Report(parse, stderr);
            return parse.Invoke(new InvocationConfiguration
            {
                Output = stdout,
                Error = stderr,
                // Exceptions reach the handlers below (exit codes 1, 2, 3, 130); Ctrl+C is Program's.
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
            });
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"error: {Terminal.Escape(e.Message)}");
            stderr.WriteLine($"Run '{CliHelp.PathOf(parse.CommandResult)} --help' for usage.");
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

    /// <summary>
    /// The whole command line as System.CommandLine definitions: every command, option, default and help text. Each
    /// command declares its options in one place (its <c>Options</c> class).
    /// </summary>
    /// <param name="context">Where commands write and what cancels them.</param>
    /// <param name="stableDiffusion">
    /// Whether <c>generate</c> is the Stable Diffusion variant (<c>--preset sd15</c>: its own options and defaults).
    /// </param>
    /// <param name="recipe">Whether <c>generate</c> is the recipe variant (<c>--recipe</c> or a face/text condition option).</param>
    internal static RootCommand CreateRootCommand(CliContext context, bool stableDiffusion = false, bool recipe = false)
    {
        var root = new RootCommand(Summary)
        {
            DemoCommand.Create(context),
            recipe ? RecipeCommand.Create(context) : stableDiffusion ? SdGenerateCommand.Create(context) : GenerateCommand.Create(context),
            ModelsCommand.Create(context),
            TrainCommand.Create(context),
            BenchCommand.Create(context),
            DoctorCommand.Create(context),
        };
        root.WithHelp(null, Epilogue);
        CliHelp.Install(root);
        root.Options.OfType<VersionOption>().Single().Action = new PrintVersion();
        // `zmagic` alone: the help, and exit 2 (a command is needed).
        root.SetAction(r =>
        {
            root.Parse(["--help"], ParserSettings).Invoke(r.InvocationConfiguration);
            return ExitCodes.Usage;
        });
        return root;
    }

    /// <summary>Limits libtorch to <paramref name="threads"/> intra-op threads (0 keeps the default).</summary>
    internal static void SetThreads(int threads)
    {
        if (threads > 0) torch.set_num_threads(threads);
    }

    // System.CommandLine's own version action reads the entry assembly, which is the test host in tests.
    private sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine(Version);
            return ExitCodes.Ok;
        }
    }
}

/// <summary>What every command needs from the process: its output streams, cancellation and the raw arguments.</summary>
internal sealed record CliContext(TextWriter Out, TextWriter Err, CancellationToken Cancellation, IReadOnlyList<string> Args)
{
    /// <summary>
    /// Every command that runs a network first makes sure the kernels compute correct numbers on this CPU (after the
    /// command line parsed, so a typo costs no self-check).
    /// </summary>
    public void CheckNumerics() => Numerics.Apply(Err, Cancellation);
}
