using System.Globalization;
using System.Text;

namespace ZMagic.Cli;

/// <summary>Makes text from files (tensor names, dtypes, paths) safe to print on a terminal; tells a terminal from a file or pipe.</summary>
public static class Terminal
{
    /// <summary>
    /// Whether <paramref name="writer"/> is the process's stderr or stdout and that stream is a terminal (not redirected
    /// to a file or pipe, and TERM is not <c>dumb</c>). Any other writer (a StringWriter in tests) is not interactive.
    /// </summary>
    public static bool IsInteractive(TextWriter? writer)
    {
        if (writer is null || Environment.GetEnvironmentVariable("TERM") == "dumb") return false;
        if (ReferenceEquals(writer, Console.Error)) return !Console.IsErrorRedirected;
        if (ReferenceEquals(writer, Console.Out)) return !Console.IsOutputRedirected;
        return false;
    }

    /// <summary>
    /// Replaces control characters (C0 except tab, DEL, C1), Unicode format characters (bidirectional overrides,
    /// zero-width characters) and unpaired surrogates by visible escapes (<c>\x1b</c>, <c>\u202e</c>), so a hostile
    /// name cannot move the cursor, change colours, rewrite the title or reorder what the user reads. Newlines are
    /// escaped too: every error stays one line.
    /// </summary>
    public static string Escape(string? text)
    {
        if (string.IsNullOrEmpty(text)) return text ?? "";
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            char ch = text[i];
            bool surrogatePair = char.IsHighSurrogate(ch) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]);
            bool bad = ch != '\t' && (char.IsControl(ch)
                || (!surrogatePair && char.IsSurrogate(ch))
                || CharUnicodeInfo.GetUnicodeCategory(ch) == UnicodeCategory.Format);
            if (!bad)
            {
                sb?.Append(ch);
                if (surrogatePair) { sb?.Append(text[i + 1]); i++; }
                continue;
            }
            sb ??= new StringBuilder(text.Length + 16).Append(text, 0, i);
            sb.Append(ch <= 0xFF ? string.Create(CultureInfo.InvariantCulture, $"\\x{(int)ch:x2}") : string.Create(CultureInfo.InvariantCulture, $"\\u{(int)ch:x4}"));
        }
        return sb?.ToString() ?? text;
    }
}
