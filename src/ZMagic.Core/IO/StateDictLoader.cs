using System.Text;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.IO;

/// <summary>How <see cref="StateDictLoader.Load"/> matches checkpoint keys to a module's state dict.</summary>
public sealed class StateDictLoadOptions
{
    /// <summary>The default optional-key patterns: BatchNorm <c>num_batches_tracked</c> (absent from files saved by
    /// PyTorch ≤ 0.4) and <c>position_ids</c> buffers (absent or present depending on the transformers version).</summary>
    public static readonly IReadOnlyList<string> DefaultOptionalKeys = new[] { "*num_batches_tracked", "*position_ids" };

    /// <summary>Names the checkpoint (normally its path) in messages and exceptions.</summary>
    public string? SourceName { get; init; }

    /// <summary>Strip a leading <c>module.</c> (DataParallel) from keys that the module does not have as is. Default true.</summary>
    public bool StripModulePrefix { get; init; } = true;

    /// <summary>Further prefixes to strip (e.g. <c>model.</c>), applied after <c>module.</c>, each only when the key
    /// does not match as is.</summary>
    public IReadOnlyList<string> StripPrefixes { get; init; } = Array.Empty<string>();

    /// <summary>Legacy-name table: checkpoint key (after prefix stripping) → module key.</summary>
    public IReadOnlyDictionary<string, string>? KeyAliases { get; init; }

    /// <summary>A general key map applied after <see cref="KeyAliases"/>: returns the module key, or null to drop the
    /// checkpoint entry (it is then reported as ignored, not unexpected).</summary>
    public Func<string, string?>? KeyMap { get; init; }

    /// <summary>Module keys that may be missing from the checkpoint (glob patterns, <c>*</c> matches anything),
    /// in addition to <see cref="DefaultOptionalKeys"/> when <see cref="UseDefaultOptionalKeys"/> is set.</summary>
    public IReadOnlyList<string> OptionalKeys { get; init; } = Array.Empty<string>();

    /// <summary>Whether <see cref="DefaultOptionalKeys"/> apply. Default true.</summary>
    public bool UseDefaultOptionalKeys { get; init; } = true;

    /// <summary>Checkpoint keys (after mapping) that are silently ignored when the module lacks them (glob patterns).</summary>
    public IReadOnlyList<string> IgnoreUnexpected { get; init; } = Array.Empty<string>();

    /// <summary>Allow required module keys to be missing (a partial load); they keep their current values.</summary>
    public bool AllowPartial { get; init; }

    /// <summary>Allow checkpoint keys the module does not have (they are reported and skipped).</summary>
    public bool AllowUnexpected { get; init; }
}

/// <summary>A module key whose checkpoint tensor has another shape.</summary>
/// <param name="Key">The module's key.</param>
/// <param name="Expected">The module's shape.</param>
/// <param name="Actual">The checkpoint's shape.</param>
public sealed record ShapeMismatch(string Key, long[] Expected, long[] Actual)
{
    /// <inheritdoc />
    public override string ToString() => $"{Key}: expected [{string.Join(", ", Expected)}], checkpoint has [{string.Join(", ", Actual)}]";
}

/// <summary>A module key whose checkpoint tensor has a dtype that cannot be converted (e.g. float into int64).</summary>
/// <param name="Key">The module's key.</param>
/// <param name="Expected">The module's dtype.</param>
/// <param name="Actual">The checkpoint's dtype.</param>
public sealed record DTypeMismatch(string Key, ScalarType Expected, ScalarType Actual)
{
    /// <inheritdoc />
    public override string ToString() => $"{Key}: module dtype {Expected}, checkpoint dtype {Actual}";
}

/// <summary>What a state-dict load matched, converted, skipped and found wrong.</summary>
public sealed class StateDictLoadReport
{
    internal StateDictLoadReport(string source) => Source = source;

    /// <summary>The checkpoint's name.</summary>
    public string Source { get; }

    /// <summary>Module keys that received a value.</summary>
    public List<string> Loaded { get; } = new();

    /// <summary>Required module keys the checkpoint lacks.</summary>
    public List<string> Missing { get; } = new();

    /// <summary>Optional module keys the checkpoint lacks (not an error).</summary>
    public List<string> MissingOptional { get; } = new();

    /// <summary>Checkpoint keys (as in the file) the module does not have.</summary>
    public List<string> Unexpected { get; } = new();

    /// <summary>Checkpoint keys skipped by <see cref="StateDictLoadOptions.IgnoreUnexpected"/> or dropped by the key map.</summary>
    public List<string> Ignored { get; } = new();

    /// <summary>Keys whose shapes differ.</summary>
    public List<ShapeMismatch> ShapeMismatches { get; } = new();

    /// <summary>Keys whose dtypes cannot be converted.</summary>
    public List<DTypeMismatch> DTypeMismatches { get; } = new();

    /// <summary>Two checkpoint keys that map to the same module key.</summary>
    public List<string> Duplicates { get; } = new();

    /// <summary>Checkpoint key → module key, for every key that was renamed by prefix stripping, alias or map.</summary>
    public Dictionary<string, string> Renamed { get; } = new(StringComparer.Ordinal);

    /// <summary>Module keys whose values were converted from another dtype (e.g. fp16 → fp32).</summary>
    public List<string> Converted { get; } = new();

    /// <summary>True when every module key was loaded (optional ones aside) and nothing is wrong or unexpected.</summary>
    public bool IsComplete => Missing.Count == 0 && Unexpected.Count == 0 && ShapeMismatches.Count == 0 && DTypeMismatches.Count == 0 && Duplicates.Count == 0;

    /// <summary>A multi-line description of every problem (empty when complete).</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        void Section(string title, IEnumerable<string> items)
        {
            var list = items.ToList();
            if (list.Count == 0) return;
            sb.Append("  ").Append(title).Append(" (").Append(list.Count).Append("):\n");
            foreach (var i in list) sb.Append("    ").Append(i).Append('\n');
        }
        Section("missing keys", Missing);
        Section("unexpected keys", Unexpected);
        Section("shape mismatches", ShapeMismatches.Select(m => m.ToString()));
        Section("dtype mismatches", DTypeMismatches.Select(m => m.ToString()));
        Section("duplicate keys after renaming", Duplicates);
        return sb.ToString();
    }
}

/// <summary>The checkpoint does not fit the module: every missing, unexpected and mismatched key is listed.</summary>
public class StateDictMismatchException : CheckpointFormatException
{
    /// <summary>Creates the exception from a load report.</summary>
    public StateDictMismatchException(StateDictLoadReport report)
        : base(report?.Source ?? "<state dict>", "checkpoint does not match the module; nothing was loaded.\n" + report?.Describe())
    {
        Report = report!;
    }

    /// <summary>The full report.</summary>
    public StateDictLoadReport Report { get; }
}

/// <summary>
/// Loads a state dict into a module with a complete report. Everything is validated before anything is copied,
/// so a checkpoint that does not fit leaves the module untouched.
/// </summary>
public static class StateDictLoader
{
    /// <summary>
    /// Matches <paramref name="stateDict"/> to <paramref name="module"/>'s state dict, validates keys, shapes and
    /// dtypes, then copies the values (converted to each module tensor's dtype and device) under no_grad.
    /// </summary>
    /// <exception cref="StateDictMismatchException">A required key is missing (unless AllowPartial), a key is
    /// unexpected (unless ignored or AllowUnexpected), or a shape/dtype does not fit. Nothing was copied.</exception>
    public static StateDictLoadReport Load(nn.Module module, IReadOnlyDictionary<string, Tensor> stateDict, StateDictLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(stateDict);
        options ??= new StateDictLoadOptions();
        var target = module.state_dict();
        var report = new StateDictLoadReport(options.SourceName ?? "<state dict>");

        var optional = (options.UseDefaultOptionalKeys ? StateDictLoadOptions.DefaultOptionalKeys : Array.Empty<string>())
            .Concat(options.OptionalKeys).Select(GlobToRegex).ToList();
        var ignore = options.IgnoreUnexpected.Select(GlobToRegex).ToList();

        // 1. Map every checkpoint key to a module key.
        var matched = new Dictionary<string, (string SourceKey, Tensor Value)>(StringComparer.Ordinal);
        foreach (var (sourceKey, value) in stateDict.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            string? key = MapKey(sourceKey, target, options);
            if (key is null)
            {
                report.Ignored.Add(sourceKey);
                continue;
            }
            if (key != sourceKey) report.Renamed[sourceKey] = key;
            if (!target.ContainsKey(key))
            {
                if (ignore.Any(r => r.IsMatch(key)) || ignore.Any(r => r.IsMatch(sourceKey))) report.Ignored.Add(sourceKey);
                else report.Unexpected.Add(sourceKey);
                continue;
            }
            if (matched.TryGetValue(key, out var previous))
            {
                report.Duplicates.Add($"{previous.SourceKey} and {sourceKey} both map to {key}");
                continue;
            }
            if (value is null || value.IsInvalid)
                throw new ArgumentException($"{report.Source}: the tensor for '{sourceKey}' is null or disposed.", nameof(stateDict));
            matched[key] = (sourceKey, value);
        }

        // 2. Validate shapes and dtypes; find missing keys.
        foreach (var (key, dest) in target)
        {
            if (!matched.TryGetValue(key, out var src))
            {
                if (optional.Any(r => r.IsMatch(key))) report.MissingOptional.Add(key);
                else report.Missing.Add(key);
                continue;
            }
            var v = src.Value;
            if (!v.shape.SequenceEqual(dest.shape))
            {
                report.ShapeMismatches.Add(new ShapeMismatch(key, dest.shape, v.shape));
                continue;
            }
            if (!Convertible(v.dtype, dest.dtype))
            {
                report.DTypeMismatches.Add(new DTypeMismatch(key, dest.dtype, v.dtype));
                continue;
            }
        }

        bool fail = report.ShapeMismatches.Count > 0 || report.DTypeMismatches.Count > 0 || report.Duplicates.Count > 0
            || (report.Missing.Count > 0 && !options.AllowPartial)
            || (report.Unexpected.Count > 0 && !options.AllowUnexpected);
        if (fail) throw new StateDictMismatchException(report);

        // 3. Copy (only now that everything is known to fit).
        using (torch.no_grad())
        {
            foreach (var (key, dest) in target)
            {
                if (!matched.TryGetValue(key, out var src)) continue;
                if (src.Value.dtype != dest.dtype) report.Converted.Add(key);
                dest.copy_(src.Value);
                report.Loaded.Add(key);
            }
        }
        // On a CPU whose direct convolution kernels failed the numerics self-check, convolutions run channels-last.
        Native.NumericsSelfCheck.ApplyConvolutionLayout(module);
        return report;
    }

    /// <summary>
    /// Reads a checkpoint file (<see cref="Checkpoint.LoadStateDict(string)"/>) and loads it into <paramref name="module"/>;
    /// the file's tensors are released afterwards. The file path names the source in errors unless the options set one.
    /// </summary>
    public static StateDictLoadReport LoadFile(nn.Module module, string path, StateDictLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        var sd = Checkpoint.LoadStateDict(path);
        try
        {
            options ??= new StateDictLoadOptions();
            if (options.SourceName is null)
                options = new StateDictLoadOptions
                {
                    SourceName = path,
                    StripModulePrefix = options.StripModulePrefix,
                    StripPrefixes = options.StripPrefixes,
                    KeyAliases = options.KeyAliases,
                    KeyMap = options.KeyMap,
                    OptionalKeys = options.OptionalKeys,
                    UseDefaultOptionalKeys = options.UseDefaultOptionalKeys,
                    IgnoreUnexpected = options.IgnoreUnexpected,
                    AllowPartial = options.AllowPartial,
                    AllowUnexpected = options.AllowUnexpected,
                };
            return Load(module, sd, options);
        }
        finally
        {
            foreach (var t in sd.Values) t.Dispose();
        }
    }

    private static string? MapKey(string sourceKey, Dictionary<string, Tensor> target, StateDictLoadOptions options)
    {
        string key = sourceKey;
        if (options.StripModulePrefix && !target.ContainsKey(key) && key.StartsWith("module.", StringComparison.Ordinal))
            key = key["module.".Length..];
        foreach (var p in options.StripPrefixes)
            if (!string.IsNullOrEmpty(p) && !target.ContainsKey(key) && key.StartsWith(p, StringComparison.Ordinal))
                key = key[p.Length..];
        if (options.KeyAliases is not null && options.KeyAliases.TryGetValue(key, out var alias)) key = alias;
        if (options.KeyMap is not null) return options.KeyMap(key);
        return key;
    }

    private static bool Convertible(ScalarType from, ScalarType to)
    {
        if (from == to) return true;
        static bool IsFloat(ScalarType t) => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;
        static bool IsInt(ScalarType t) => t is ScalarType.Int8 or ScalarType.Int16 or ScalarType.Int32 or ScalarType.Int64 or ScalarType.Byte;
        return (IsFloat(from) && IsFloat(to)) || (IsInt(from) && IsInt(to)) || (from == ScalarType.Bool && (to == ScalarType.Bool || IsInt(to)));
    }

    private static Regex GlobToRegex(string glob) =>
        new("^" + Regex.Escape(glob).Replace("\\*", ".*", StringComparison.Ordinal) + "$", RegexOptions.CultureInvariant | RegexOptions.Singleline);
}
