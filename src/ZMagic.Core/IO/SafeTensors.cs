using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.IO;

/// <summary>
/// Reads and writes the safetensors format: an 8-byte little-endian header length, a UTF-8 JSON header
/// naming each tensor's dtype, shape and byte range, then the raw row-major little-endian data.
/// </summary>
/// <remarks>
/// Every header field is validated against the file size before anything is allocated, so a header that lies
/// about sizes is refused with a <see cref="CheckpointFormatException"/> naming the file and tensor.
/// </remarks>
public static class SafeTensors
{
    /// <summary>Largest header accepted (100 MB, as the reference implementation).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Reads every tensor of a file onto the CPU, keeping the stored dtypes.</summary>
    /// <exception cref="CheckpointFormatException">The file is truncated, corrupt or uses an unsupported dtype.</exception>
    public static Dictionary<string, Tensor> Load(string path)
    {
        using var stream = OpenRead(path);
        return Load(stream, path);
    }

    /// <summary>Reads the metadata (<c>__metadata__</c>) of a file, or an empty dictionary.</summary>
    public static Dictionary<string, string> ReadMetadata(string path)
    {
        using var stream = OpenRead(path);
        var (header, _) = ReadHeader(stream, path);
        return header.Metadata;
    }

    /// <summary>Reads the header entries (name, dtype, shape) without loading any data.</summary>
    public static IReadOnlyList<SafeTensorEntry> ReadEntries(string path)
    {
        using var stream = OpenRead(path);
        var (header, _) = ReadHeader(stream, path);
        return header.Entries;
    }

    /// <summary>Reads the header entries of a seekable stream (position 0 = the file start) without loading any data.</summary>
    public static IReadOnlyList<SafeTensorEntry> ReadEntries(Stream stream, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(stream);
        stream.Position = 0;
        var (header, _) = ReadHeader(stream, sourceName);
        return header.Entries;
    }

    /// <summary>Reads every tensor from a seekable stream; <paramref name="sourceName"/> names it in errors.</summary>
    public static Dictionary<string, Tensor> Load(Stream stream, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var (header, dataStart) = ReadHeader(stream, sourceName);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var e in header.Entries)
            {
                stream.Position = dataStart + e.Begin;
                try
                {
                    result[e.Name] = TensorBytes.Read(stream, e.Shape, ToScalarType(e.DType));
                }
                catch (EndOfStreamException ex)
                {
                    throw new CheckpointFormatException(sourceName, $"tensor '{e.Name}': data ends early (truncated file).", ex);
                }
            }
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    /// <summary>
    /// Writes tensors (moved to the CPU, made contiguous) in name order with optional metadata. The file is written
    /// to a temporary name first and renamed, so a failure never leaves a half-written file.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var names = tensors.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var kv in metadata) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var name in names)
            {
                var t = tensors[name];
                string dtype = DTypeName(t.dtype);
                long nbytes = t.numel() * t.ElementSize;
                w.WriteStartObject(name);
                w.WriteString("dtype", dtype);
                w.WriteStartArray("shape");
                foreach (var d in t.shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + nbytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += nbytes;
            }
            w.WriteEndObject();
        }
        var json = ms.ToArray();
        int pad = (int)((8 - (json.Length % 8)) % 8);
        var tmp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)(json.Length + pad));
                fs.Write(len);
                fs.Write(json);
                for (int i = 0; i < pad; i++) fs.WriteByte((byte)' ');
                foreach (var name in names) TensorBytes.Write(fs, tensors[name]);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    private static FileStream OpenRead(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return RegularFile.OpenRead(path, "Safetensors file");
    }

    private sealed record Header(List<SafeTensorEntry> Entries, Dictionary<string, string> Metadata);

    private static (Header Header, long DataStart) ReadHeader(Stream stream, string source)
    {
        long fileLength = stream.Length;
        if (fileLength < 8) throw new CheckpointFormatException(source, $"file is {fileLength} bytes, shorter than the 8-byte safetensors header length.");
        Span<byte> lenBytes = stackalloc byte[8];
        stream.Position = 0;
        stream.ReadExactly(lenBytes);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (n > MaxHeaderBytes || (long)n > fileLength - 8)
            throw new CheckpointFormatException(source, $"header length {n} exceeds the file size ({fileLength} bytes) or the {MaxHeaderBytes}-byte limit.");
        var json = new byte[n];
        stream.ReadExactly(json);
        long dataStart = 8 + (long)n;
        long dataLength = fileLength - dataStart;
        var entries = new List<SafeTensorEntry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        if (!System.Text.Unicode.Utf8.IsValid(json)) throw new CheckpointFormatException(source, "header is not valid UTF-8.");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException ex) { throw new CheckpointFormatException(source, $"header is not valid JSON ({ex.Message}).", ex); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(source, "header is not a JSON object.");
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new CheckpointFormatException(source, "__metadata__ is not an object.");
                    foreach (var m in prop.Value.EnumerateObject())
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                entries.Add(ParseEntry(prop, source, dataLength));
            }
        }
        if (entries.Select(e => e.Name).Distinct(StringComparer.Ordinal).Count() != entries.Count)
            throw new CheckpointFormatException(source, "a tensor name is listed twice in the header.");
        var byOffset = entries.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ToList();
        for (int i = 1; i < byOffset.Count; i++)
            if (byOffset[i].Begin < byOffset[i - 1].End)
                throw new CheckpointFormatException(source, $"tensors '{byOffset[i - 1].Name}' and '{byOffset[i].Name}' overlap in the data section " +
                    $"([{byOffset[i - 1].Begin}, {byOffset[i - 1].End}) and [{byOffset[i].Begin}, {byOffset[i].End})).");
        return (new Header(entries, metadata), dataStart);
    }

    private static SafeTensorEntry ParseEntry(JsonProperty prop, string source, long dataLength)
    {
        var v = prop.Value;
        string name = prop.Name;
        if (v.ValueKind != JsonValueKind.Object
            || !v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
            || !v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
            || !v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new CheckpointFormatException(source, $"tensor '{name}': header entry needs dtype, shape and two data_offsets.");
        string dtype = dt.GetString()!;
        int elemSize = ElementSize(dtype) ?? throw new CheckpointFormatException(source, $"tensor '{name}': unsupported dtype '{dtype}'.");
        if (sh.GetArrayLength() > 64) throw new CheckpointFormatException(source, $"tensor '{name}': {sh.GetArrayLength()} dimensions (at most 64).");
        var shape = new long[sh.GetArrayLength()];
        long numel = 1, bound = 1;
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new CheckpointFormatException(source, $"tensor '{name}': shape entry {i} is not a non-negative integer.");
            shape[i++] = dim;
            if (dim != 0 && numel > long.MaxValue / dim) throw new CheckpointFormatException(source, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows.");
            numel *= dim;
            // Sizes next to a zero must still multiply without overflow (libtorch computes contiguous strides from them).
            if (bound > long.MaxValue / Math.Max(1, dim)) throw new CheckpointFormatException(source, $"tensor '{name}': shape [{string.Join(", ", shape)}] overflows.");
            bound *= Math.Max(1, dim);
        }
        var offs = off.EnumerateArray().ToArray();
        long begin = -1, end = -1;
        if (offs[0].ValueKind != JsonValueKind.Number || offs[1].ValueKind != JsonValueKind.Number
            || !offs[0].TryGetInt64(out begin) || !offs[1].TryGetInt64(out end) || begin < 0 || end < begin || end > dataLength)
            throw new CheckpointFormatException(source, $"tensor '{name}': data_offsets [{offs[0]}, {offs[1]}] are outside the {dataLength}-byte data section.");
        if (numel > long.MaxValue / elemSize || numel * elemSize != end - begin)
            throw new CheckpointFormatException(source, $"tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype} needs {(numel <= long.MaxValue / elemSize ? numel * elemSize : -1)} bytes but data_offsets span {end - begin}.");
        return new SafeTensorEntry(name, dtype, shape, begin, end);
    }

    private static int? ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" => 8,
        "F32" or "I32" => 4,
        "F16" or "BF16" or "I16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => null,
    };

    internal static ScalarType ToScalarType(string dtype) => dtype switch
    {
        "F64" => ScalarType.Float64,
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new NotSupportedException($"dtype {dtype} has no TorchSharp equivalent."),
    };

    private static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float64 => "F64",
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new NotSupportedException($"Cannot write dtype {t} to safetensors."),
    };
}

/// <summary>One tensor's header entry in a safetensors file.</summary>
/// <param name="Name">Tensor name (may contain '/' or '.').</param>
/// <param name="DType">safetensors dtype string (F32, F16, BF16, F64, I64, ...).</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Begin">Start offset within the data section.</param>
/// <param name="End">End offset (exclusive) within the data section.</param>
public sealed record SafeTensorEntry(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>A checkpoint or tensor file is malformed, truncated, hostile or unsupported.</summary>
public class CheckpointFormatException : Exception
{
    /// <summary>Creates the exception for <paramref name="source"/> with a description of the problem.</summary>
    public CheckpointFormatException(string source, string problem, Exception? inner = null)
        : base($"{source}: {problem}", inner)
    {
        Source = source;
        Problem = problem;
    }

    /// <summary>The file (or stream name) that was being read.</summary>
    public new string Source { get; }

    /// <summary>What is wrong with it.</summary>
    public string Problem { get; }
}
