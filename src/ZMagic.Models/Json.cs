using System.Globalization;
using System.Text.Json;

namespace ZMagic.Models;

/// <summary>Lenient readers for Python-made JSON configs (ints written as 1.0, lists or comma strings, null).</summary>
internal static class Json
{
    public static bool Has(JsonElement o, string key) =>
        o.TryGetProperty(key, out var v) && v.ValueKind is not (JsonValueKind.Null or JsonValueKind.Undefined);

    public static int Int(JsonElement o, string key, int fallback)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return ToInt(v, key);
    }

    public static int? NullableInt(JsonElement o, string key)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return ToInt(v, key);
    }

    public static double Double(JsonElement o, string key, double fallback)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind == JsonValueKind.Number) return v.GetDouble();
        if (v.ValueKind == JsonValueKind.String && double.TryParse(v.GetString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d)) return d;
        throw new FormatException($"Config key '{key}' must be a number; got {v.GetRawText()}.");
    }

    public static bool Bool(JsonElement o, string key, bool fallback)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number => v.GetDouble() != 0,
            JsonValueKind.String when bool.TryParse(v.GetString(), out var b) => b,
            _ => throw new FormatException($"Config key '{key}' must be a boolean; got {v.GetRawText()}."),
        };
    }

    public static string? String(JsonElement o, string key, string? fallback)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : v.GetRawText();
    }

    /// <summary>A list of numbers given as a JSON array, a single number, or a comma-separated string ("" = empty).</summary>
    public static double[]? Numbers(JsonElement o, string key)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        switch (v.ValueKind)
        {
            case JsonValueKind.Array:
                return v.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetDouble()
                    : throw new FormatException($"Config key '{key}' must list numbers; got {v.GetRawText()}.")).ToArray();
            case JsonValueKind.Number:
                return [v.GetDouble()];
            case JsonValueKind.String:
                var s = v.GetString()!.Trim().Trim('(', ')', '[', ']');
                if (s.Length == 0) return [];
                return s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d
                        : throw new FormatException($"Config key '{key}': '{p}' is not a number.")).ToArray();
            default:
                throw new FormatException($"Config key '{key}' must be a list of numbers; got {v.GetRawText()}.");
        }
    }

    public static int[]? Ints(JsonElement o, string key) => Numbers(o, key)?.Select(d => ToInt(d, key)).ToArray();

    private static int ToInt(JsonElement v, string key)
    {
        if (v.ValueKind == JsonValueKind.Number) return ToInt(v.GetDouble(), key);
        if (v.ValueKind == JsonValueKind.String && int.TryParse(v.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var i)) return i;
        throw new FormatException($"Config key '{key}' must be an integer; got {v.GetRawText()}.");
    }

    private static int ToInt(double d, string key)
    {
        if (d != Math.Floor(d) || d < int.MinValue || d > int.MaxValue) throw new FormatException($"Config key '{key}' must be an integer; got {d}.");
        return (int)d;
    }
}
