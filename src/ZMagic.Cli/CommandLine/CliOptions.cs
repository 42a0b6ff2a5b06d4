using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace ZMagic.Cli.CommandLine;

/// <summary>
/// Typed System.CommandLine options with zmagic's validation messages: a command declares each option once (name,
/// short alias, value name, description, default, range), and its help, its tab completion and its checks all come
/// from that one declaration. Out-of-range and malformed values are parse errors (exit 2) naming the option.
/// </summary>
internal static class CliOptions
{
    /// <summary>Adds <paramref name="option"/> to <paramref name="command"/> and returns it (declare and add in one place).</summary>
    public static T Declare<T>(this Command command, T option) where T : Option
    {
        command.Add(option);
        return option;
    }

    /// <summary>Adds <paramref name="argument"/> to <paramref name="command"/> and returns it.</summary>
    public static Argument<T> Declare<T>(this Command command, Argument<T> argument)
    {
        command.Add(argument);
        return argument;
    }

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>] with a default shown in help.</summary>
    public static Option<int> Int(string name, string description, int defaultValue, int min, int max, string valueName, params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            HelpName = valueName,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseInt(r, name, min, max),
        };

    /// <summary>An integer in [<paramref name="min"/>, <paramref name="max"/>] without a fixed default (null when not given).</summary>
    public static Option<int?> OptionalInt(string name, string description, int min, int max, string valueName, params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            HelpName = valueName,
            CustomParser = r => ParseInt(r, name, min, max),
        };

    /// <summary>A 64-bit integer with a default.</summary>
    public static Option<long> Long(string name, string description, long defaultValue, string valueName, params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            HelpName = valueName,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                string s = Single(r);
                if (long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v)) return v;
                r.AddError($"Option {name} needs an integer; got '{s}'.");
                return 0;
            },
        };

    /// <summary>A finite number with a default.</summary>
    public static Option<double> Double(string name, string description, double defaultValue, string valueName, params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            HelpName = valueName,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r =>
            {
                string s = Single(r);
                if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)) return v;
                r.AddError($"Option {name} needs a finite number; got '{s}'.");
                return 0;
            },
        };

    /// <summary>A text value with a default (or null: not given, and the description says what that means).</summary>
    public static Option<string?> Text(string name, string description, string? defaultValue, string valueName, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases) { Description = description, HelpName = valueName };
        if (defaultValue is not null) o.DefaultValueFactory = _ => defaultValue;
        return NeedsValue(o);
    }

    /// <summary>A text value that must be given.</summary>
    public static Option<string> RequiredText(string name, string description, string valueName, params string[] aliases) =>
        NeedsValue(new Option<string>(name, aliases) { Description = description, HelpName = valueName, Required = true });

    /// <summary>
    /// One of <paramref name="choices"/> (case-insensitive; the value read is the choice's own spelling). Help shows
    /// the choices (or <paramref name="valueName"/> when given), and tab completion offers them.
    /// </summary>
    public static Option<string> Choice(string name, string description, string defaultValue, IReadOnlyList<string> choices, string? valueName = null, params string[] aliases)
    {
        var o = new Option<string>(name, aliases)
        {
            Description = description,
            HelpName = valueName ?? string.Join('|', choices),
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseChoice(r, name, choices),
        };
        o.CompletionSources.Add(choices.ToArray());
        return o;
    }

    /// <summary>Like <see cref="Choice"/> without a fixed default (null when not given; the description says what that means).</summary>
    public static Option<string?> OptionalChoice(string name, string description, IReadOnlyList<string> choices, string? valueName = null, params string[] aliases)
    {
        var o = new Option<string?>(name, aliases)
        {
            Description = description,
            HelpName = valueName ?? string.Join('|', choices),
            CustomParser = r => ParseChoice(r, name, choices),
        };
        o.CompletionSources.Add(choices.ToArray());
        return o;
    }

    /// <summary>A boolean switch (no value).</summary>
    public static Option<bool> Flag(string name, string description, params string[] aliases) =>
        new(name, aliases) { Description = description, Arity = ArgumentArity.Zero };

    /// <summary>A repeatable text option (<c>--condition A --condition B</c>), one value per occurrence.</summary>
    public static Option<string[]> Repeatable(string name, string description, string valueName, params string[] aliases) =>
        NeedsValue(new Option<string[]>(name, aliases) { Description = description, HelpName = valueName, AllowMultipleArgumentsPerToken = false });

    /// <summary>
    /// Refuses a text value that looks like an option (<c>--out --quiet</c>: the folder was forgotten), as zmagic always
    /// has; System.CommandLine alone would take <c>--quiet</c> as the folder's name.
    /// </summary>
    private static T NeedsValue<T>(T option) where T : Option
    {
        option.Validators.Add(r =>
        {
            foreach (var token in r.Tokens)
                if (token.Value.Length > 2 && token.Value.StartsWith("--", StringComparison.Ordinal))
                    r.AddError($"Option {option.Name} needs a value; got the option '{token.Value}'.");
        });
        return option;
    }

    /// <summary>Whether the user gave <paramref name="option"/> (rather than it taking its default).</summary>
    public static bool IsGiven(this ParseResult result, Option option) => result.GetResult(option) is { Implicit: false };

    /// <summary>Checks a value whose allowed range is known only at run time (same message as the parse-time checks).</summary>
    public static int InRange(int value, int min, int max, string name) =>
        value >= min && value <= max ? value : throw new UsageException($"Option {name} must be in [{min}, {max}]; got {value}.");

    private static string ParseChoice(ArgumentResult r, string name, IReadOnlyList<string> choices)
    {
        string s = Single(r);
        var hit = choices.FirstOrDefault(c => string.Equals(c, s, StringComparison.OrdinalIgnoreCase));
        if (hit is null) r.AddError($"Option {name} must be one of {string.Join(", ", choices)}; got '{s}'.");
        return hit ?? s;
    }

    private static int ParseInt(ArgumentResult r, string name, int min, int max)
    {
        string s = Single(r);
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
        {
            r.AddError($"Option {name} needs an integer; got '{s}'.");
            return 0;
        }
        if (v < min || v > max) r.AddError($"Option {name} must be in [{min}, {max}]; got {v}.");
        return v;
    }

    // The arity check (one value per single-valued option) is System.CommandLine's; the last token is the value.
    private static string Single(ArgumentResult r) => r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
}
