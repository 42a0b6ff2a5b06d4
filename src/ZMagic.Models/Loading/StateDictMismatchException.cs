using ZMagic.Core.IO;

namespace ZMagic.Models.Loading;

/// <summary>One key whose tensor shape differs between a checkpoint and the module.</summary>
/// <param name="Key">State-dict key.</param>
/// <param name="Expected">Shape the module has.</param>
/// <param name="Actual">Shape stored in the checkpoint.</param>
public sealed record ShapeMismatch(string Key, long[] Expected, long[] Actual)
{
    /// <inheritdoc />
    public override string ToString() => $"{Key}: expected [{string.Join(", ", Expected)}], got [{string.Join(", ", Actual)}]";
}

/// <summary>
/// A checkpoint does not fit the architecture: lists every missing, unexpected and shape-mismatched key.
/// Nothing was copied into the module when this is thrown.
/// </summary>
public sealed class StateDictMismatchException : CheckpointFormatException
{
    /// <summary>Creates the exception; the message lists the keys (the first 20 of each kind) and counts.</summary>
    public StateDictMismatchException(string source, string architecture, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
        IReadOnlyList<ShapeMismatch> mismatched, string? hint = null)
        : base(source, Describe(architecture, missing, unexpected, mismatched, hint))
    {
        Missing = missing;
        Unexpected = unexpected;
        Mismatched = mismatched;
    }

    /// <summary>Keys the module has and the checkpoint lacks.</summary>
    public IReadOnlyList<string> Missing { get; }

    /// <summary>Keys the checkpoint has and the module lacks.</summary>
    public IReadOnlyList<string> Unexpected { get; }

    /// <summary>Keys present in both with different shapes.</summary>
    public IReadOnlyList<ShapeMismatch> Mismatched { get; }

    private static string Describe(string arch, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<ShapeMismatch> mismatched, string? hint)
    {
        static string List<T>(IReadOnlyList<T> items) =>
            string.Join("; ", items.Take(20)) + (items.Count > 20 ? $"; ... ({items.Count - 20} more)" : "");
        var parts = new List<string> { $"checkpoint does not fit the {arch}" };
        if (hint is not null) parts.Add(hint);
        if (missing.Count > 0) parts.Add($"{missing.Count} missing key(s): {List(missing)}");
        if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected key(s): {List(unexpected)}");
        if (mismatched.Count > 0) parts.Add($"{mismatched.Count} shape mismatch(es): {List(mismatched)}");
        return string.Join(". ", parts) + ".";
    }
}
