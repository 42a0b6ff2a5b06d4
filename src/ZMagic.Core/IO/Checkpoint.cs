using System.Buffers.Binary;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.IO;

/// <summary>The on-disk format of a checkpoint, detected from its first bytes (not its extension).</summary>
public enum CheckpointFileFormat
{
    /// <summary>Not recognised.</summary>
    Unknown,

    /// <summary>safetensors (8-byte header length, JSON header).</summary>
    SafeTensors,

    /// <summary>A zip archive (<c>torch.save</c> since PyTorch 1.6; <c>.pt</c>, <c>.pth</c>, <c>.ckpt</c>, <c>.pth.tar</c>).</summary>
    PyTorchZip,

    /// <summary>A bare pickle (the legacy <c>torch.save</c> format before PyTorch 1.6), not supported.</summary>
    LegacyPickle,
}

/// <summary>Options for reading PyTorch pickle checkpoints.</summary>
public sealed class CheckpointReadOptions
{
    /// <summary>
    /// Extra globals, written <c>module.Name</c> (e.g. <c>pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint</c>),
    /// that a checkpoint may mention in its metadata. They are never imported or called: constructing one yields a
    /// <see cref="PickleObject"/> holding its arguments and state. Empty by default, so any unknown global is refused.
    /// </summary>
    public IReadOnlyCollection<string> OpaqueGlobals { get; init; } = Array.Empty<string>();

    /// <summary>
    /// Most bytes the state dict's tensor data may take once read (inflated, for compressed zip records), or null for
    /// no limit beyond the per-tensor checks. Checked from the header or pickle before any tensor data is read.
    /// </summary>
    public long? MaxDataBytes { get; init; }
}

/// <summary>One tensor of a checkpoint as its header or pickle describes it (no data read).</summary>
/// <param name="Name">The state dict key (after unwrapping and <c>module.</c> stripping).</param>
/// <param name="DType">The stored element type.</param>
/// <param name="Shape">The tensor's shape.</param>
public sealed record CheckpointEntry(string Name, ScalarType DType, long[] Shape);

/// <summary>What a checkpoint holds, read from its header or pickle without reading tensor data.</summary>
/// <param name="Entries">The state dict's tensors.</param>
/// <param name="DataBytes">Bytes the tensor data takes once read (storages shared by several tensors count once).</param>
public sealed record CheckpointSummary(IReadOnlyList<CheckpointEntry> Entries, long DataBytes);

/// <summary>
/// Reads a model's weights from any supported checkpoint file: safetensors or a PyTorch zip checkpoint, whatever its
/// extension. Wrappers such as <c>{'state_dict': ...}</c> are unwrapped and a DataParallel <c>module.</c> prefix removed.
/// </summary>
public static class Checkpoint
{
    /// <summary>Deepest nesting of containers accepted in a pickle.</summary>
    public const int MaxDepth = 200;

    /// <summary>
    /// Keys that wrap the weights in training checkpoints, tried in this order when a dictionary does not hold tensors
    /// itself: <c>state_dict</c>, <c>model_state_dict</c>, <c>model</c>, <c>module</c>, <c>net</c>, <c>network</c>,
    /// <c>params</c>, <c>weights</c>, <c>ema</c>, <c>model_ema</c>, <c>ema_model</c>.
    /// </summary>
    public static readonly IReadOnlyList<string> WrapperKeys = new[]
    {
        "state_dict", "model_state_dict", "model", "module", "net", "network", "params", "weights", "ema", "model_ema", "ema_model",
    };

    /// <summary>Detects the format of a file from its content.</summary>
    public static CheckpointFileFormat DetectFormat(string path)
    {
        using var fs = OpenRead(path);
        return DetectFormat(fs);
    }

    /// <summary>Detects the format of a seekable stream from its first bytes (the position is restored).</summary>
    public static CheckpointFileFormat DetectFormat(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        long pos = stream.Position;
        try
        {
            Span<byte> head = stackalloc byte[16];
            stream.Position = 0;
            int n = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
            head = head[..n];
            if (n >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && (head[2] == 3 || head[2] == 5) && (head[3] == 4 || head[3] == 6))
                return CheckpointFileFormat.PyTorchZip;
            if (n >= 2 && head[0] == 0x80 && head[1] <= 5) return CheckpointFileFormat.LegacyPickle;
            if (n >= 9)
            {
                ulong len = BinaryPrimitives.ReadUInt64LittleEndian(head);
                if (len >= 2 && len <= (ulong)Math.Max(0, stream.Length - 8) && head[8] == (byte)'{') return CheckpointFileFormat.SafeTensors;
            }
            return CheckpointFileFormat.Unknown;
        }
        finally
        {
            stream.Position = pos;
        }
    }

    /// <summary>
    /// Reads the names, dtypes and shapes of a checkpoint's state dict, and the bytes its data would take, from the
    /// safetensors header or the zip checkpoint's pickle, without reading or inflating any tensor data. Use it to check
    /// keys and shapes against a module before <see cref="LoadStateDict(string)"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="NotARegularFileException">A folder, FIFO, device or empty file.</exception>
    /// <exception cref="CheckpointFormatException">The file is corrupt, truncated, legacy, hostile or holds no tensors.</exception>
    public static CheckpointSummary ReadSummary(string path, CheckpointReadOptions? options = null)
    {
        using var fs = OpenRead(path);
        switch (DetectFormat(fs))
        {
            case CheckpointFileFormat.SafeTensors:
            {
                var entries = SafeTensors.ReadEntries(fs, path);
                long total = 0;
                foreach (var e in entries) total += e.End - e.Begin;
                var list = entries.Select(e => new CheckpointEntry(e.Name, SafeTensors.ToScalarType(e.DType), e.Shape)).ToList();
                return new CheckpointSummary(StripModulePrefix(list), total);
            }
            case CheckpointFileFormat.PyTorchZip:
                return PyTorchCheckpoint.Guard(path, () =>
                {
                    using var reader = PyTorchCheckpoint.Open(fs, path, options);
                    var refs = ExtractStateDict(reader.ReadPickle(), path);
                    foreach (var r in refs.Values) reader.Validate(r);
                    var list = refs.Select(kv => new CheckpointEntry(kv.Key, kv.Value.Storage.DType, kv.Value.Size)).ToList();
                    return new CheckpointSummary(StripModulePrefix(list), PyTorchCheckpoint.Reader.DataBytes(refs.Values));
                });
            case CheckpointFileFormat.LegacyPickle:
                throw new CheckpointFormatException(path, "this is a legacy (pre-1.6, non-zip) PyTorch checkpoint, which is not supported.");
            default:
                throw new CheckpointFormatException(path, "unrecognised checkpoint format (neither safetensors nor a PyTorch zip archive).");
        }
    }

    private static List<CheckpointEntry> StripModulePrefix(List<CheckpointEntry> list) =>
        list.Count > 0 && list.All(e => e.Name.StartsWith("module.", StringComparison.Ordinal))
            ? list.Select(e => e with { Name = e.Name["module.".Length..] }).ToList()
            : list;

    /// <summary>
    /// Reads the tensors of a checkpoint as a flat state dict (CPU tensors in their stored dtypes; the caller
    /// disposes them). The format is detected from the content; training wrappers (<see cref="WrapperKeys"/>) are
    /// unwrapped, nested dictionaries flattened with dotted keys, non-tensor entries dropped, and a <c>module.</c>
    /// prefix shared by every key removed.
    /// </summary>
    /// <exception cref="UnsafeCheckpointException">A pickle references a forbidden global (nothing was executed).</exception>
    /// <exception cref="CheckpointFormatException">The file is corrupt, truncated, legacy, or holds no tensors.</exception>
    public static Dictionary<string, Tensor> LoadStateDict(string path) => LoadStateDict(path, null);

    /// <summary>As <see cref="LoadStateDict(string)"/>, with reading options (e.g. extra opaque globals).</summary>
    public static Dictionary<string, Tensor> LoadStateDict(string path, CheckpointReadOptions? options)
    {
        using var fs = OpenRead(path);
        return LoadStateDict(fs, path, options);
    }

    /// <summary>As <see cref="LoadStateDict(string)"/>, from a seekable stream; <paramref name="path"/> names it in errors.</summary>
    public static Dictionary<string, Tensor> LoadStateDict(Stream fs, string path, CheckpointReadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(fs);
        if (!fs.CanSeek || !fs.CanRead) throw new ArgumentException("The stream must be readable and seekable.", nameof(fs));
        Dictionary<string, Tensor> sd;
        switch (DetectFormat(fs))
        {
            case CheckpointFileFormat.SafeTensors:
                if (options?.MaxDataBytes is long max)
                {
                    long total = SafeTensors.ReadEntries(fs, path).Sum(e => e.End - e.Begin);
                    if (total > max) throw new CheckpointFormatException(path, $"the tensors hold {total} bytes, above the {max}-byte limit; nothing was read.");
                }
                sd = SafeTensors.Load(fs, path);
                break;
            case CheckpointFileFormat.PyTorchZip:
                sd = PyTorchCheckpoint.Guard(path, () =>
                {
                    using var reader = PyTorchCheckpoint.Open(fs, path, options);
                    var root = reader.ReadPickle();
                    var refs = ExtractStateDict(root, path);
                    var tensors = reader.Materialize(refs.Values);
                    var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                    var used = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
                    foreach (var (k, r) in refs)
                    {
                        var t = tensors[r];
                        result[k] = used.Add(t) ? t : t.alias(); // the same tensor under two keys gets its own handle
                    }
                    return result;
                });
                break;
            case CheckpointFileFormat.LegacyPickle:
                throw new CheckpointFormatException(path, "this is a legacy (pre-1.6, non-zip) PyTorch checkpoint, which is not supported; " +
                    "re-save it in Python with torch.save(obj, path, _use_new_zipfile_serialization=True) or as safetensors.");
            default:
                throw new CheckpointFormatException(path, "unrecognised checkpoint format (neither safetensors nor a PyTorch zip archive).");
        }
        if (sd.Count > 0 && sd.Keys.All(k => k.StartsWith("module.", StringComparison.Ordinal)))
            sd = sd.ToDictionary(kv => kv.Key["module.".Length..], kv => kv.Value, StringComparer.Ordinal);
        return sd;
    }

    internal static FileStream OpenRead(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return RegularFile.OpenRead(path, "Checkpoint file");
    }

    /// <summary>Finds the state dict inside an unpickled object graph: key → tensor reference.</summary>
    internal static Dictionary<string, TensorRef> ExtractStateDict(object? root, string source)
    {
        object? current = root;
        for (int level = 0; level < 16; level++)
        {
            if (current is not PickleDict d) break;
            if (d.Items.Any(kv => kv.Value is TensorRef)) break;
            object? inner = null;
            foreach (var w in WrapperKeys)
                if (d.TryGetValue(w, out var v) && v is PickleDict) { inner = v; break; }
            if (inner is null) break;
            current = inner;
        }
        var result = new Dictionary<string, TensorRef>(StringComparer.Ordinal);
        if (current is TensorRef single) throw new CheckpointFormatException(source, "the checkpoint holds a single tensor, not a state dict.");
        if (current is not PickleDict top)
            throw new CheckpointFormatException(source, $"the checkpoint holds a {SafeUnpickler.Describe(current)}, not a state dict.");
        Flatten(top, "", result, new HashSet<object>(ReferenceEqualityComparer.Instance), 0, source);
        if (result.Count == 0)
        {
            var keys = top.Items.Select(kv => kv.Key.ToString()).Take(20);
            throw new CheckpointFormatException(source, $"no tensors found in the checkpoint (top-level keys: {string.Join(", ", keys)}).");
        }
        return result;
    }

    private static void Flatten(PickleDict d, string prefix, Dictionary<string, TensorRef> result, HashSet<object> seen, int depth, string source)
    {
        if (depth > MaxDepth) throw new CheckpointFormatException(source, $"dictionaries nested deeper than {MaxDepth} levels.");
        if (!seen.Add(d)) return;
        foreach (var (k, v) in d.Items)
        {
            if (k is not string key) continue;
            string full = prefix + key;
            switch (v)
            {
                case TensorRef t:
                    if (!result.TryAdd(full, t)) throw new CheckpointFormatException(source, $"key '{full}' occurs twice after flattening nested dictionaries.");
                    break;
                case PickleDict inner:
                    Flatten(inner, full + ".", result, seen, depth + 1, source);
                    break;
            }
        }
    }
}
