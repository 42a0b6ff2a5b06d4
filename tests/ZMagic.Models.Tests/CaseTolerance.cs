using System.Text.Json;

namespace ZMagic.Models.Tests;

/// <summary>Reads per-output tolerances from a golden case.json.</summary>
internal static class CaseTolerance
{
    /// <summary>(abs, rel) for <paramref name="output"/>, or the case-wide pair when the tolerance is not per output.</summary>
    public static (double Abs, double Rel) Get(JsonElement caseJson, string? output = null)
    {
        var tol = caseJson.GetProperty("tolerance");
        if (output is not null && tol.TryGetProperty(output, out var per) && per.ValueKind == JsonValueKind.Object) tol = per;
        double abs = tol.TryGetProperty("abs", out var a) ? a.GetDouble() : 0;
        double rel = tol.TryGetProperty("rel", out var r) ? r.GetDouble() : 0;
        if (abs == 0 && rel == 0) throw new InvalidOperationException($"No abs/rel tolerance for '{output}' in case.json.");
        return (abs, rel);
    }
}
