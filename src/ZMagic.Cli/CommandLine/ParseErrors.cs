using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace ZMagic.Cli.CommandLine;

/// <summary>
/// Prints System.CommandLine's parse errors the zmagic way: one <c>error: ...</c> line each (escaped), unknown options
/// and commands named as such with the closest valid spelling, then where to find help. Exit code 2.
/// </summary>
internal static class ParseErrors
{
    /// <summary>Writes the errors of <paramref name="result"/> and returns <see cref="ExitCodes.Usage"/>.</summary>
    public static int Report(ParseResult result, TextWriter stderr)
    {
        var command = result.CommandResult.Command;
        var unmatched = result.UnmatchedTokens;
        var reported = new HashSet<string>(StringComparer.Ordinal);
        string? previousUnknownOption = null;
        foreach (var token in unmatched)
        {
            if (!reported.Add(token)) continue;
            if (IsOption(token))
            {
                stderr.WriteLine($"error: Unknown option '{Terminal.Escape(token)}'.{Suggest(token, OptionNames(result.CommandResult))}");
                previousUnknownOption = token;
            }
            else if (previousUnknownOption is not null)
            {
                previousUnknownOption = null; // most likely the value of the unknown option: one error is enough
            }
            else if (command.Subcommands.Count > 0)
            {
                stderr.WriteLine($"error: Unknown command '{Terminal.Escape(token)}'. Commands: {string.Join(", ", command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name))}."
                    + Suggest(token, command.Subcommands.Select(c => c.Name)));
            }
            else
            {
                stderr.WriteLine($"error: Unexpected argument '{Terminal.Escape(token)}'.");
            }
        }
        foreach (var error in result.Errors)
        {
            // System.CommandLine reports every unmatched token as an error of the command; those are written above.
            if (error.SymbolResult is CommandResult && unmatched.Any(t => error.Message.Contains($"'{t}'", StringComparison.Ordinal))) continue;
            stderr.WriteLine($"error: {Terminal.Escape(string.Join(' ', error.Message.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)))}");
        }
        stderr.WriteLine($"Run '{CliHelp.PathOf(result.CommandResult)} --help' for usage.");
        return ExitCodes.Usage;
    }

    private static bool IsOption(string token) =>
        token.Length > 1 && token[0] == '-' && !double.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    /// <summary>Every spelling of every option the command accepts (its own and the recursive ones of its parents).</summary>
    private static IEnumerable<string> OptionNames(CommandResult command)
    {
        for (SymbolResult? r = command; r is not null; r = r.Parent)
        {
            if (r is not CommandResult c) continue;
            foreach (var o in c.Command.Options)
                if (ReferenceEquals(c, command) || o.Recursive)
                    foreach (var name in o.Aliases.Prepend(o.Name)) yield return name;
        }
    }

    /// <summary>" Did you mean '--samples'?" when one candidate is close to <paramref name="typed"/>, else "".</summary>
    internal static string Suggest(string typed, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (var c in candidates.Distinct())
        {
            int d = c.StartsWith(typed, StringComparison.OrdinalIgnoreCase) && typed.TrimStart('-').Length >= 2 ? 1 : Distance(typed, c);
            if (d < bestDistance) (best, bestDistance) = (c, d);
        }
        int allowed = Math.Max(1, typed.TrimStart('-').Length / 3);
        return best is not null && bestDistance <= allowed ? $" Did you mean '{best}'?" : "";
    }

    /// <summary>Optimal string alignment distance (Levenshtein with transpositions), case-insensitive.</summary>
    private static int Distance(string a, string b)
    {
        a = a.ToLowerInvariant();
        b = b.ToLowerInvariant();
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        }
        return d[a.Length, b.Length];
    }
}
