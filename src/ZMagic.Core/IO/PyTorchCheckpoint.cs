using System.IO.Compression;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.IO;

/// <summary>
/// Reads PyTorch zip checkpoints (<c>torch.save</c> since 1.6: <c>&lt;name&gt;/data.pkl</c> plus one
/// <c>&lt;name&gt;/data/&lt;key&gt;</c> record per storage) with a safe unpickler that never executes anything.
/// </summary>
/// <remarks>
/// Only these globals are accepted: <c>collections.OrderedDict</c>, <c>torch._utils._rebuild_tensor(_v2)</c>,
/// <c>torch._utils._rebuild_parameter(_with_state)</c>, the <c>torch.*Storage</c> types, <c>torch.Size</c>,
/// <c>argparse.Namespace</c> (kept as plain data), numpy scalars with <c>numpy.dtype</c> and
/// <c>_codecs.encode(str, 'latin1')</c>, and <c>set</c>/<c>frozenset</c>. Any other global is refused with
/// <see cref="UnsafeCheckpointException"/> as soon as its opcode is read. Storage sizes, offsets and strides are
/// checked against the zip records before any tensor is allocated.
/// </remarks>
public static class PyTorchCheckpoint
{
    /// <summary>Largest accepted <c>data.pkl</c> (the pickle itself, not the tensor data).</summary>
    public const long MaxPickleBytes = 512L << 20;

    /// <summary>
    /// Reads a checkpoint into plain .NET objects: dictionaries become <see cref="PickleDict"/>, lists
    /// <see cref="List{T}"/> of object, tuples object arrays, integers <see cref="long"/> (or BigInteger), floats
    /// <see cref="double"/>, strings and bytes as such, tensors CPU <see cref="Tensor"/>s (the caller disposes them).
    /// </summary>
    /// <exception cref="UnsafeCheckpointException">The pickle references a global that is not allowed.</exception>
    /// <exception cref="CheckpointFormatException">The file is not a valid PyTorch zip checkpoint.</exception>
    public static object? Load(string path) => Load(path, null);

    /// <summary>As <see cref="Load(string)"/>, with reading options (e.g. extra opaque globals).</summary>
    public static object? Load(string path, CheckpointReadOptions? options)
    {
        using var fs = Checkpoint.OpenRead(path);
        return Load(fs, path, options);
    }

    /// <summary>As <see cref="Load(string)"/>, from a seekable stream; <paramref name="sourceName"/> names it in errors.</summary>
    public static object? Load(Stream stream, string sourceName, CheckpointReadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return Guard(sourceName, () =>
        {
            using var reader = Open(stream, sourceName, options);
            var root = reader.ReadPickle();
            return reader.MaterializeAll(root);
        });
    }

    /// <summary>Opens a checkpoint from a seekable stream; <paramref name="sourceName"/> names it in errors.</summary>
    internal static Reader Open(Stream stream, string sourceName, CheckpointReadOptions? options = null) => new(stream, sourceName, options);

    /// <summary>An open zip checkpoint.</summary>
    internal sealed class Reader : IDisposable
    {
        private readonly ZipArchive _zip;
        private readonly string _source;
        private readonly string _prefix;
        private readonly long _fileLength;
        private readonly CheckpointReadOptions? _options;

        internal Reader(Stream stream, string source, CheckpointReadOptions? options)
        {
            _source = source;
            _options = options;
            _fileLength = stream.Length;
            _zip = Guard(source, () => new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true));
            try
            {
                var pkls = _zip.Entries.Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)
                                                   && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length).ToList();
                if (pkls.Count == 0)
                {
                    if (_zip.Entries.Any(e => e.FullName == "data.pkl"))
                        throw new CheckpointFormatException(source, "zip has data.pkl at the top level; expected <name>/data.pkl as torch.save writes it.");
                    throw new CheckpointFormatException(source, "zip archive has no <name>/data.pkl record: not a PyTorch checkpoint.");
                }
                if (pkls.Count > 1)
                    throw new CheckpointFormatException(source, $"zip archive has {pkls.Count} data.pkl records ({string.Join(", ", pkls.Select(p => p.FullName))}).");
                _prefix = pkls[0].FullName[..^"data.pkl".Length];
                if (_zip.GetEntry(_prefix + "constants.pkl") is not null || _zip.Entries.Any(e => e.FullName.StartsWith(_prefix + "code/", StringComparison.Ordinal)))
                    throw new CheckpointFormatException(source, "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; " +
                        "load it in Python and re-save its state_dict() with torch.save or safetensors.");
                var byteorder = _zip.GetEntry(_prefix + "byteorder");
                if (byteorder is not null)
                {
                    string order = Encoding.ASCII.GetString(ReadEntry(byteorder, 16)).Trim();
                    if (order != "little") throw new CheckpointFormatException(source, $"byteorder is '{order}'; only little-endian checkpoints are supported.");
                }
            }
            catch
            {
                _zip.Dispose();
                throw;
            }
        }

        /// <summary>Unpickles data.pkl (tensors stay as references to storages).</summary>
        internal object? ReadPickle()
        {
            var entry = _zip.GetEntry(_prefix + "data.pkl")!;
            if (entry.Length > MaxPickleBytes) throw new CheckpointFormatException(_source, $"data.pkl is {entry.Length} bytes, above the {MaxPickleBytes}-byte limit.");
            var bytes = ReadEntry(entry, (int)entry.Length);
            var up = new SafeUnpickler(bytes, _source, _options?.OpaqueGlobals);
            return up.Load();
        }

        /// <summary>Replaces every tensor reference in the graph by a tensor.</summary>
        internal object? MaterializeAll(object? root)
        {
            var refs = new List<TensorRef>();
            Collect(root, refs, new HashSet<object>(ReferenceEqualityComparer.Instance), 0, _source);
            var tensors = Materialize(refs);
            try
            {
                return Replace(root, tensors, new Dictionary<object, object>(ReferenceEqualityComparer.Instance), 0);
            }
            catch
            {
                foreach (var t in tensors.Values) t.Dispose();
                throw;
            }
        }

        /// <summary>Creates the tensors for the given references (each distinct reference once).</summary>
        internal Dictionary<TensorRef, Tensor> Materialize(IReadOnlyCollection<TensorRef> refs)
        {
            var distinct = refs.Distinct(ReferenceEqualityComparer.Instance).Cast<TensorRef>().ToList();
            foreach (var r in distinct) Validate(r);
            if (_options?.MaxDataBytes is long max)
            {
                long total = DataBytes(distinct);
                if (total > max)
                    throw Bad($"the state dict's storages hold {total} bytes once inflated, above the {max}-byte limit; nothing was inflated.");
            }
            var uses = distinct.GroupBy(r => r.Storage.Key).ToDictionary(g => g.Key, g => g.Count());
            var result = new Dictionary<TensorRef, Tensor>(ReferenceEqualityComparer.Instance);
            try
            {
                foreach (var group in distinct.GroupBy(r => r.Storage.Key))
                {
                    using var storage = ReadStorage(group.First().Storage);
                    foreach (var r in group)
                    {
                        var view = storage.as_strided(r.Size, r.Stride, r.Offset);
                        long numel = r.Size.Aggregate(1L, (a, b) => a * b);
                        if (uses[r.Storage.Key] == 1 && numel == r.Storage.NumElements && view.is_contiguous())
                        {
                            result[r] = view; // the only view of the whole storage: no copy
                        }
                        else
                        {
                            result[r] = view.clone();
                            view.Dispose();
                        }
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

        /// <summary>Bytes the distinct storages of <paramref name="refs"/> take once inflated (each storage once).</summary>
        internal static long DataBytes(IEnumerable<TensorRef> refs)
        {
            long total = 0;
            foreach (var s in refs.Select(r => r.Storage).DistinctBy(s => s.Key))
            {
                int elem = ElementSize(s.DType);
                total = s.NumElements > (long.MaxValue - total) / elem ? long.MaxValue : total + s.NumElements * elem;
            }
            return total;
        }

        /// <summary>Checks a tensor's size, stride and offset against its storage (no data is read).</summary>
        internal void Validate(TensorRef r)
        {
            var s = r.Storage;
            string what = $"tensor on storage '{s.Key}'";
            if (r.Size.Length != r.Stride.Length) throw Bad($"{what}: size has {r.Size.Length} dimensions but stride {r.Stride.Length}.");
            if (r.Offset < 0) throw Bad($"{what}: negative storage offset {r.Offset}.");
            if (r.Offset > s.NumElements) throw Bad($"{what}: storage offset {r.Offset} is past the storage's {s.NumElements} elements.");
            long numel = 1, last = r.Offset, bound = 1;
            try
            {
                for (int i = 0; i < r.Size.Length; i++)
                {
                    if (r.Size[i] < 0 || r.Stride[i] < 0) throw Bad($"{what}: negative size or stride ([{string.Join(", ", r.Size)}] / [{string.Join(", ", r.Stride)}]).");
                    numel = checked(numel * r.Size[i]);
                    bound = checked(bound * Math.Max(1, r.Size[i])); // libtorch also overflows on huge dims next to a zero
                    if (r.Size[i] > 0) last = checked(last + (r.Size[i] - 1) * r.Stride[i]);
                }
            }
            catch (OverflowException)
            {
                throw Bad($"{what}: size [{string.Join(", ", r.Size)}] with stride [{string.Join(", ", r.Stride)}] overflows.");
            }
            // Zero strides (expanded tensors) are legal, but the copy they materialise must stay bounded.
            long limit = Math.Max(4 * s.NumElements, (64L << 20) / ElementSize(s.DType));
            if (bound > limit)
                throw Bad($"{what}: size [{string.Join(", ", r.Size)}] would materialise {bound} elements from a storage of {s.NumElements} (limit {limit}).");
            if (numel > 0 && last >= s.NumElements)
                throw Bad($"{what}: size [{string.Join(", ", r.Size)}], stride [{string.Join(", ", r.Stride)}], offset {r.Offset} reads element {last}, past the storage's {s.NumElements} elements.");
        }

        private Tensor ReadStorage(StorageRef s)
        {
            var entry = _zip.GetEntry(_prefix + "data/" + s.Key)
                        ?? throw Bad($"storage record data/{s.Key} is missing from the archive.");
            int elem = ElementSize(s.DType);
            long needed = s.NumElements > long.MaxValue / elem ? -1 : s.NumElements * elem;
            if (needed < 0 || needed > entry.Length)
                throw Bad($"storage '{s.Key}' claims {s.NumElements} elements of {s.DType} ({(needed < 0 ? "overflow" : needed + " bytes")}) but its record holds {entry.Length} bytes.");
            if (entry.CompressedLength > _fileLength || entry.CompressedLength < 0)
                throw Bad($"storage record data/{s.Key} claims {entry.CompressedLength} bytes, more than the file.");
            // A compressed record could lie about its size; deflate cannot expand more than ~1032:1.
            if (entry.Length != entry.CompressedLength && entry.Length / 1100 > entry.CompressedLength + 1)
                throw Bad($"storage record data/{s.Key} claims an implausible {entry.Length} bytes from {entry.CompressedLength} compressed.");
            var t = torch.empty(new[] { s.NumElements }, s.DType);
            try
            {
                Guard(_source, () =>
                {
                    using var stream = entry.Open();
                    const long chunkElems = 1 << 24;
                    var crc = new Crc32();
                    for (long start = 0; start < s.NumElements; start += chunkElems)
                    {
                        long n = Math.Min(chunkElems, s.NumElements - start);
                        using var part = t.narrow(0, start, n);
                        var span = part.bytes;
                        stream.ReadExactly(span);
                        crc.Append(span);
                    }
                    // The record may hold more than the storage needs (checked above): the CRC covers all of it.
                    var rest = new byte[1 << 16];
                    for (int got; (got = stream.Read(rest)) > 0;) crc.Append(rest.AsSpan(0, got));
                    if (crc.Value != entry.Crc32)
                        throw Bad($"storage record data/{s.Key} is corrupt: its CRC-32 is {crc.Value:x8} but the archive records {entry.Crc32:x8}.");
                    return 0;
                });
            }
            catch
            {
                t.Dispose();
                throw;
            }
            return t;
        }

        private byte[] ReadEntry(ZipArchiveEntry entry, int maxBytes)
        {
            if (entry.Length > maxBytes || entry.Length < 0) throw Bad($"record {entry.FullName} is {entry.Length} bytes, more than expected.");
            if (entry.CompressedLength > _fileLength) throw Bad($"record {entry.FullName} claims {entry.CompressedLength} bytes, more than the file.");
            return Guard(_source, () =>
            {
                using var s = entry.Open();
                var bytes = new byte[entry.Length];
                s.ReadExactly(bytes);
                uint crc = Crc32.Compute(bytes);
                if (crc != entry.Crc32)
                    throw Bad($"record {entry.FullName} is corrupt: its CRC-32 is {crc:x8} but the archive records {entry.Crc32:x8}.");
                return bytes;
            });
        }

        private CheckpointFormatException Bad(string problem) => new(_source, problem);

        public void Dispose() => _zip.Dispose();
    }

    internal static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        _ => 1,
    };

    /// <summary>Runs zip/stream work, turning the exceptions of a corrupt archive into <see cref="CheckpointFormatException"/>.</summary>
    internal static T Guard<T>(string source, Func<T> f)
    {
        try { return f(); }
        catch (CheckpointFormatException) { throw; }
        catch (Exception ex) when (ex is InvalidDataException or EndOfStreamException or NotSupportedException or ArgumentException or OverflowException or IndexOutOfRangeException
                                   || (ex is IOException && ex is not FileNotFoundException && ex is not DirectoryNotFoundException))
        {
            throw new CheckpointFormatException(source, $"corrupt or truncated archive ({ex.GetType().Name}: {ex.Message}).", ex);
        }
    }

    internal static void Collect(object? o, List<TensorRef> refs, HashSet<object> seen, int depth, string source)
    {
        if (o is null || o is string || o is long || o is double || o is bool || o is byte[]) return;
        if (depth > Checkpoint.MaxDepth) throw new CheckpointFormatException(source, $"objects nested deeper than {Checkpoint.MaxDepth} levels.");
        if (!seen.Add(o)) return;
        switch (o)
        {
            case TensorRef t: refs.Add(t); break;
            case PickleDict d: foreach (var kv in d.Items) Collect(kv.Value, refs, seen, depth + 1, source); Collect(d.State, refs, seen, depth + 1, source); break;
            case List<object?> l: foreach (var v in l) Collect(v, refs, seen, depth + 1, source); break;
            case object?[] a: foreach (var v in a) Collect(v, refs, seen, depth + 1, source); break;
            case PickleObject p: Collect(p.State, refs, seen, depth + 1, source); foreach (var v in p.Args) Collect(v, refs, seen, depth + 1, source); break;
        }
    }

    private static object? Replace(object? o, Dictionary<TensorRef, Tensor> tensors, Dictionary<object, object> done, int depth)
    {
        if (o is null) return null;
        if (o is TensorRef t) return tensors[t];
        if (done.ContainsKey(o)) return o; // containers are updated in place; cycles stop here
        switch (o)
        {
            case PickleDict d:
                done[o] = o;
                foreach (var k in d.RawKeys.ToList()) d.Replace(k, Replace(d.RawGet(k), tensors, done, depth + 1));
                d.State = Replace(d.State, tensors, done, depth + 1);
                break;
            case List<object?> l:
                done[o] = o;
                for (int i = 0; i < l.Count; i++) l[i] = Replace(l[i], tensors, done, depth + 1);
                break;
            case object?[] a:
                done[o] = o;
                for (int i = 0; i < a.Length; i++) a[i] = Replace(a[i], tensors, done, depth + 1);
                break;
            case PickleObject p:
                done[o] = o;
                p.State = Replace(p.State, tensors, done, depth + 1);
                for (int i = 0; i < p.Args.Length; i++) p.Args[i] = Replace(p.Args[i], tensors, done, depth + 1);
                break;
        }
        return o;
    }
}
