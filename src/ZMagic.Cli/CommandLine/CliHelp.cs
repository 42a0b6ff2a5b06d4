using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Runtime.CompilerServices;

namespace ZMagic.Cli.CommandLine;

/// <summary>
/// Help comes from System.CommandLine (usage, arguments, every option with its aliases, value name and default); a
/// command adds only prose: <c>details</c> (what it does, what it writes) under its one-line description, and
/// <c>epilogue</c> (examples, exit codes) after the options.
/// </summary>
internal static class CliHelp
{
    private sealed record Notes(string? Details, string? Epilogue);

    private static readonly ConditionalWeakTable<Command, Notes> s_notes = new();

    /// <summary>Attaches prose to <paramref name="command"/>'s help.</summary>
    public static T WithHelp<T>(this T command, string? details, string? epilogue) where T : Command
    {
        s_notes.AddOrUpdate(command, new Notes(Trim(details), Trim(epilogue)));
        return command;
    }

    /// <summary>Makes the help option of <paramref name="root"/> (it applies to every sub-command) print the prose too.</summary>
    public static void Install(RootCommand root)
    {
        var help = root.Options.OfType<HelpOption>().Single();
        help.Action = new HelpWithNotes((HelpAction)help.Action!);
    }

    /// <summary>The command line that names <paramref name="command"/>: <c>zmagic models check</c>.</summary>
    public static string PathOf(System.CommandLine.Parsing.CommandResult command)
    {
        var names = new List<string>();
        for (var c = command; c is not null; c = c.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(c.Command is RootCommand ? "zmagic" : c.Command.Name);
        names.Reverse();
        return string.Join(' ', names);
    }

    private static string? Trim(string? text) => string.IsNullOrWhiteSpace(text) ? null : text.Trim('\r', '\n');

    private sealed class HelpWithNotes(HelpAction inner) : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult)
        {
            var command = parseResult.CommandResult.Command;
            s_notes.TryGetValue(command, out var notes);
            var output = parseResult.InvocationConfiguration.Output;
            // Help goes to a terminal at its width; to a file or pipe (and in tests) at a fixed width.
            inner.MaxWidth = Terminal.IsInteractive(output) && Console.WindowWidth > 40 ? Console.WindowWidth : 120;
            // The details belong under the command's own description, but sub-command lists show the one-line summary:
            // lengthen the description for the duration of this help only.
            string summary = command.Description ?? "";
            if (notes?.Details is { } details) command.Description = summary + Environment.NewLine + Environment.NewLine + details;
            int code;
            try { code = inner.Invoke(parseResult); }
            finally { command.Description = summary; }
            if (notes?.Epilogue is { } epilogue)
            {
                output.WriteLine(epilogue);
                output.WriteLine();
            }
            return code;
        }
    }
}
