using System.Globalization;

namespace ZMagic.Cli;

/// <summary>A usage error: unknown or contradictory options, bad values. Exit code <see cref="ExitCodes.Usage"/>.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>An input problem: a missing or unreadable file, a checkpoint that does not fit. Exit code <see cref="ExitCodes.Input"/>.</summary>
public sealed class InputException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Process exit codes (documented in docs/cli.md).</summary>
public static class ExitCodes
{
    /// <summary>Success.</summary>
    public const int Ok = 0;
    /// <summary>A failure while running (guidance diverged, I/O error while writing, ...).</summary>
    public const int Failure = 1;
    /// <summary>Bad command line: unknown command or option, bad value, contradictory options.</summary>
    public const int Usage = 2;
    /// <summary>Bad input file: missing, unreadable, wrong format, or not fitting the preset.</summary>
    public const int Input = 3;
    /// <summary>Cancelled by Ctrl+C (SIGINT); nothing partial was written.</summary>
    public const int Cancelled = 130;
}

/// <summary>
/// A small, strict parser: <c>--name value</c>, <c>--name=value</c>, boolean <c>--flag</c>, repeatable options, and
/// positionals. Every option must be declared by the command; unknown ones are usage errors.
/// </summary>
public sealed class ParsedArgs
{
    private readonly Dictionary<string, List<string>> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _flags = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    /// <summary>Positional arguments in order.</summary>
    public List<string> Positionals { get; } = new();

    /// <summary>Whether --help or -h was given.</summary>
    public bool Help { get; private set; }

    /// <summary>Parses <paramref name="args"/> given the command's value options and flags.</summary>
    public static ParsedArgs Parse(IEnumerable<string> args, IReadOnlyCollection<string> valueOptions, IReadOnlyCollection<string> flags)
    {
        var p = new ParsedArgs();
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            string a = list[i];
            if (a is "--help" or "-h") { p.Help = true; continue; }
            if (a == "--") { p.Positionals.AddRange(list.Skip(i + 1)); break; }
            if (!a.StartsWith("--", StringComparison.Ordinal) || a.Length == 2)
            {
                if (a.StartsWith('-') && a.Length > 1 && !double.TryParse(a, NumberStyles.Float, CultureInfo.InvariantCulture, out _))
                    throw new UsageException($"Unknown option '{a}'.");
                p.Positionals.Add(a);
                continue;
            }
            string name = a[2..];
            string? value = null;
            int eq = name.IndexOf('=', StringComparison.Ordinal);
            if (eq >= 0) { value = name[(eq + 1)..]; name = name[..eq]; }
            if (flags.Contains(name))
            {
                if (value is not null) throw new UsageException($"Option --{name} takes no value.");
                p._flags.Add(name);
                continue;
            }
            if (!valueOptions.Contains(name))
                throw new UsageException($"Unknown option '--{name}'.");
            if (value is null)
            {
                if (i + 1 >= list.Count || (list[i + 1].StartsWith("--", StringComparison.Ordinal) && list[i + 1].Length > 2))
                    throw new UsageException($"Option --{name} needs a value.");
                value = list[++i];
            }
            if (!p._values.TryGetValue(name, out var vs)) p._values[name] = vs = new List<string>();
            vs.Add(value);
        }
        return p;
    }

    /// <summary>Whether a flag is set.</summary>
    public bool Flag(string name) => _flags.Contains(name);

    /// <summary>Whether a value option was given.</summary>
    public bool Has(string name) => _values.ContainsKey(name);

    /// <summary>All values of a repeatable option.</summary>
    public IReadOnlyList<string> All(string name) => _values.TryGetValue(name, out var v) ? v : Array.Empty<string>();

    /// <summary>The single value of an option, or null. Giving it twice is a usage error.</summary>
    public string? String(string name)
    {
        if (!_values.TryGetValue(name, out var v)) return null;
        if (v.Count > 1) throw new UsageException($"Option --{name} was given {v.Count} times; give it once.");
        return v[0];
    }

    /// <summary>An integer option within [min, max].</summary>
    public int Int(string name, int fallback, int min = int.MinValue, int max = int.MaxValue)
    {
        var s = String(name);
        if (s is null) return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
            throw new UsageException($"Option --{name} needs an integer; got '{s}'.");
        if (v < min || v > max) throw new UsageException($"Option --{name} must be in [{min}, {max}]; got {v}.");
        return v;
    }

    /// <summary>A 64-bit integer option.</summary>
    public long Long(string name, long fallback)
    {
        var s = String(name);
        if (s is null) return fallback;
        if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
            throw new UsageException($"Option --{name} needs an integer; got '{s}'.");
        return v;
    }

    /// <summary>A finite floating-point option.</summary>
    public double Double(string name, double fallback)
    {
        var s = String(name);
        if (s is null) return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new UsageException($"Option --{name} needs a finite number; got '{s}'.");
        return v;
    }

    /// <summary>One of a fixed set of choices (case-insensitive).</summary>
    public string Choice(string name, string fallback, params string[] choices)
    {
        var s = String(name) ?? fallback;
        var hit = choices.FirstOrDefault(c => string.Equals(c, s, StringComparison.OrdinalIgnoreCase));
        return hit ?? throw new UsageException($"Option --{name} must be one of {string.Join(", ", choices)}; got '{s}'.");
    }
}
