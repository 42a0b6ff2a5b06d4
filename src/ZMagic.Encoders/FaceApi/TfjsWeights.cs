using System.Buffers.Binary;
using System.Text.Json;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Encoders.FaceApi;

/// <summary>One tensor of a tfjs weights manifest, dequantised to float32, in the tfjs (TensorFlow) layout.</summary>
/// <param name="Name">The manifest name, e.g. <c>dense0/conv0/filters</c>.</param>
/// <param name="Shape">The tfjs shape (conv filters are HWIO <c>[kh, kw, in, out]</c>).</param>
/// <param name="Data">The values, row-major (C order) over <paramref name="Shape"/>.</param>
public sealed record TfjsTensor(string Name, long[] Shape, float[] Data)
{
    /// <summary>A CPU float32 tensor of the values with the tfjs shape.</summary>
    public Tensor ToTensor() => tensor(Data, Shape, ScalarType.Float32);
}

/// <summary>
/// Reads a tfjs <c>weights_manifest.json</c> and its binary shard files, as tfjs' <c>io.decodeWeights</c> does:
/// the shard files of a group are concatenated in <c>paths</c> order and the tensors follow each other in manifest
/// order; quantised tensors (uint8/uint16: <c>q * scale + min</c>; float16) are dequantised to float32, int32 tensors
/// become float32 values.
/// </summary>
/// <remarks>
/// Every size in the manifest is checked against the shard bytes before anything is allocated, so a hostile or
/// corrupt manifest gives a <see cref="CheckpointFormatException"/> naming the file and tensor, never a huge
/// allocation or an out-of-range read. Shard paths must be plain file names inside the manifest's folder.
/// </remarks>
public static class TfjsWeights
{
    /// <summary>Largest total shard size accepted for one manifest (1 GiB; the face-api models are below 7 MB).</summary>
    public const long MaxTotalBytes = 1L << 30;

    /// <summary>Reads every tensor of the manifest at <paramref name="manifestPath"/>, keyed by name.</summary>
    /// <exception cref="CheckpointFormatException">The manifest or a shard is missing, corrupt or inconsistent.</exception>
    public static IReadOnlyDictionary<string, TfjsTensor> Load(string manifestPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(manifestPath);
        if (!File.Exists(manifestPath)) throw new CheckpointFormatException(manifestPath, "weights manifest not found.");
        string dir = Path.GetDirectoryName(Path.GetFullPath(manifestPath))!;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(manifestPath));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(manifestPath, $"not valid JSON ({e.Message}).", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new CheckpointFormatException(manifestPath, "a weights manifest must be a JSON array of groups {paths, weights}.");
            var result = new Dictionary<string, TfjsTensor>(StringComparer.Ordinal);
            int g = 0;
            foreach (var group in doc.RootElement.EnumerateArray())
            {
                ReadGroup(manifestPath, dir, g, group, result);
                g++;
            }
            return result;
        }
    }

    private sealed record Entry(string Name, long[] Shape, long Count, string DType, string? QuantDType, double Scale, double Min, long Bytes);

    private static void ReadGroup(string manifestPath, string dir, int g, JsonElement group, Dictionary<string, TfjsTensor> result)
    {
        string where = $"group {g}";
        if (group.ValueKind != JsonValueKind.Object
            || !group.TryGetProperty("paths", out var pathsEl) || pathsEl.ValueKind != JsonValueKind.Array
            || !group.TryGetProperty("weights", out var weightsEl) || weightsEl.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(manifestPath, $"{where}: expected an object with arrays 'paths' and 'weights'.");

        // Parse and validate every entry before touching the shards.
        var entries = new List<Entry>();
        long total = 0;
        foreach (var w in weightsEl.EnumerateArray())
        {
            var e = ParseEntry(manifestPath, where, w);
            total += e.Bytes;
            if (total > MaxTotalBytes)
                throw new CheckpointFormatException(manifestPath, $"{where}: tensors need more than {MaxTotalBytes} bytes (at '{e.Name}').");
            entries.Add(e);
        }

        // Shard files: plain names in the manifest folder; their sizes must add up to exactly what the tensors need.
        var shardPaths = new List<string>();
        long shardBytes = 0;
        foreach (var p in pathsEl.EnumerateArray())
        {
            string name = p.ValueKind == JsonValueKind.String ? p.GetString()! : throw new CheckpointFormatException(manifestPath, $"{where}: a path is not a string.");
            if (name.Length == 0 || name != Path.GetFileName(name) || name == "." || name == "..")
                throw new CheckpointFormatException(manifestPath, $"{where}: shard path '{name}' must be a plain file name in the manifest's folder.");
            string full = Path.Combine(dir, name);
            if (!File.Exists(full)) throw new CheckpointFormatException(manifestPath, $"{where}: shard file '{name}' is missing (looked for {full}).");
            shardBytes += new FileInfo(full).Length;
            shardPaths.Add(full);
        }
        if (shardBytes != total)
            throw new CheckpointFormatException(manifestPath,
                $"{where}: shard files [{string.Join(", ", shardPaths.Select(Path.GetFileName))}] hold {shardBytes} bytes, the manifest's tensors need {total}.");

        var buffer = new byte[total];
        long offset = 0;
        foreach (var full in shardPaths)
        {
            using var fs = File.OpenRead(full);
            int len = checked((int)fs.Length);
            fs.ReadExactly(buffer, checked((int)offset), len);
            offset += len;
        }

        offset = 0;
        foreach (var e in entries)
        {
            if (result.ContainsKey(e.Name)) throw new CheckpointFormatException(manifestPath, $"{where}: tensor '{e.Name}' appears twice.");
            var span = new ReadOnlySpan<byte>(buffer, checked((int)offset), checked((int)e.Bytes));
            result[e.Name] = new TfjsTensor(e.Name, e.Shape, Decode(span, e));
            offset += e.Bytes;
        }
    }

    private static Entry ParseEntry(string manifestPath, string where, JsonElement w)
    {
        if (w.ValueKind != JsonValueKind.Object || !w.TryGetProperty("name", out var nameEl) || nameEl.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(manifestPath, $"{where}: a weight entry has no string 'name'.");
        string name = nameEl.GetString()!;
        if (!w.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(manifestPath, $"tensor '{name}': no 'shape' array.");
        var shape = new List<long>();
        long count = 1;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw new CheckpointFormatException(manifestPath, $"tensor '{name}': shape entries must be non-negative integers, got {shapeEl.GetRawText()}.");
            shape.Add(v);
            if (v != 0 && count > MaxTotalBytes / v)
                throw new CheckpointFormatException(manifestPath, $"tensor '{name}': shape {shapeEl.GetRawText()} has more than {MaxTotalBytes} elements.");
            count *= v;
        }
        string dtype = w.TryGetProperty("dtype", out var dt) && dt.ValueKind == JsonValueKind.String ? dt.GetString()! : "";
        if (dtype != "float32" && dtype != "int32")
            throw new CheckpointFormatException(manifestPath, $"tensor '{name}': unsupported dtype '{dtype}' (supported: float32, int32).");

        string? q = null;
        double scale = 0, min = 0;
        if (w.TryGetProperty("quantization", out var qe) && qe.ValueKind != JsonValueKind.Null)
        {
            q = qe.ValueKind == JsonValueKind.Object && qe.TryGetProperty("dtype", out var qd) && qd.ValueKind == JsonValueKind.String ? qd.GetString() : null;
            switch (q)
            {
                case "uint8":
                case "uint16":
                    if (!qe.TryGetProperty("scale", out var s) || s.ValueKind != JsonValueKind.Number
                        || !qe.TryGetProperty("min", out var m) || m.ValueKind != JsonValueKind.Number)
                        throw new CheckpointFormatException(manifestPath, $"tensor '{name}': {q} quantization needs numeric 'scale' and 'min'.");
                    scale = s.GetDouble();
                    min = m.GetDouble();
                    if (!double.IsFinite(scale) || !double.IsFinite(min))
                        throw new CheckpointFormatException(manifestPath, $"tensor '{name}': quantization scale/min must be finite.");
                    break;
                case "float16":
                    break;
                default:
                    throw new CheckpointFormatException(manifestPath, $"tensor '{name}': unsupported quantization dtype '{q ?? qe.GetRawText()}' (supported: uint8, uint16, float16).");
            }
        }
        int bytesPer = q switch { "uint8" => 1, "uint16" => 2, "float16" => 2, _ => 4 };
        return new Entry(name, shape.ToArray(), count, dtype, q, scale, min, count * bytesPer);
    }

    private static float[] Decode(ReadOnlySpan<byte> bytes, Entry e)
    {
        var data = new float[e.Count];
        bool isInt = e.DType == "int32";
        switch (e.QuantDType)
        {
            case "uint8":
                // tfjs: Float32Array.from(quantized, v => v * scale + min); int32 targets are rounded (Math.round).
                for (int i = 0; i < data.Length; i++) data[i] = Dequant(bytes[i], e, isInt);
                break;
            case "uint16":
                for (int i = 0; i < data.Length; i++) data[i] = Dequant(BinaryPrimitives.ReadUInt16LittleEndian(bytes.Slice(2 * i, 2)), e, isInt);
                break;
            case "float16":
                for (int i = 0; i < data.Length; i++) data[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(bytes.Slice(2 * i, 2));
                break;
            default:
                if (isInt)
                    for (int i = 0; i < data.Length; i++) data[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes.Slice(4 * i, 4));
                else
                    for (int i = 0; i < data.Length; i++) data[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.Slice(4 * i, 4));
                break;
        }
        return data;
    }

    private static float Dequant(int q, Entry e, bool round)
    {
        // JS computes in float64, then the Float32Array store rounds once.
        double v = q * e.Scale + e.Min;
        return round ? (float)Math.Floor(v + 0.5) : (float)v;
    }
}
