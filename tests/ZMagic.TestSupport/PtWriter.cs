using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.TestSupport;

/// <summary>Writes pickle opcodes by hand, to craft checkpoints (valid and hostile) for the tests.</summary>
public sealed class PickleBuilder
{
    private readonly List<byte> _b = new();

    public byte[] ToArray() => _b.ToArray();
    public PickleBuilder Op(byte op) { _b.Add(op); return this; }
    public PickleBuilder Raw(params byte[] bytes) { _b.AddRange(bytes); return this; }
    public PickleBuilder Proto(int v) => Op(0x80).Op((byte)v);
    public PickleBuilder Mark() => Op((byte)'(');
    public PickleBuilder Stop() => Op((byte)'.');
    public PickleBuilder Tuple() => Op((byte)'t');
    public PickleBuilder EmptyTuple() => Op((byte)')');
    public PickleBuilder EmptyDict() => Op((byte)'}');
    public PickleBuilder EmptyList() => Op((byte)']');
    public PickleBuilder SetItems() => Op((byte)'u');
    public PickleBuilder SetItem() => Op((byte)'s');
    public PickleBuilder Reduce() => Op((byte)'R');
    public PickleBuilder BinPersId() => Op((byte)'Q');
    public PickleBuilder False() => Op(0x89);
    public PickleBuilder None() => Op((byte)'N');
    public PickleBuilder Put(int i) => Op((byte)'q').Op((byte)i);
    public PickleBuilder Get(int i) => Op((byte)'h').Op((byte)i);

    public PickleBuilder Global(string module, string name)
    {
        Op((byte)'c');
        _b.AddRange(Encoding.UTF8.GetBytes(module + "\n" + name + "\n"));
        return this;
    }

    public PickleBuilder StackGlobal(string module, string name) => Str(module).Str(name).Op(0x93);

    public PickleBuilder Str(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        if (bytes.Length < 256) { Op(0x8c).Op((byte)bytes.Length); }
        else { Op((byte)'X'); Span<byte> n = stackalloc byte[4]; BinaryPrimitives.WriteInt32LittleEndian(n, bytes.Length); _b.AddRange(n.ToArray()); }
        _b.AddRange(bytes);
        return this;
    }

    public PickleBuilder Int(long v)
    {
        if (v >= 0 && v < 256) return Op((byte)'K').Op((byte)v);
        if (v >= int.MinValue && v <= int.MaxValue)
        {
            Op((byte)'J');
            Span<byte> n = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(n, (int)v);
            _b.AddRange(n.ToArray());
            return this;
        }
        Op(0x8a).Op(8);
        Span<byte> l = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(l, v);
        _b.AddRange(l.ToArray());
        return this;
    }

    public PickleBuilder Float(double v)
    {
        Op((byte)'G');
        Span<byte> n = stackalloc byte[8];
        BinaryPrimitives.WriteDoubleBigEndian(n, v);
        _b.AddRange(n.ToArray());
        return this;
    }

    public PickleBuilder LongTuple(long[] values)
    {
        Mark();
        foreach (var v in values) Int(v);
        return Tuple();
    }

    /// <summary>_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).</summary>
    public PickleBuilder TensorRef(string storageType, string key, long numel, long offset, long[] size, long[] stride, bool stackGlobal = false)
    {
        if (stackGlobal) StackGlobal("torch._utils", "_rebuild_tensor_v2"); else Global("torch._utils", "_rebuild_tensor_v2");
        Mark();
        Mark().Str("storage");
        if (stackGlobal) StackGlobal("torch", storageType); else Global("torch", storageType);
        Str(key).Str("cpu").Int(numel).Tuple().BinPersId();
        Int(offset).LongTuple(size).LongTuple(stride).False();
        Global("collections", "OrderedDict").EmptyTuple().Reduce();
        Tuple();
        return Reduce();
    }
}

/// <summary>Builds torch.save-style zip checkpoints in memory.</summary>
public static class PtWriter
{
    public static string StorageType(ScalarType t) => t switch
    {
        ScalarType.Float32 => "FloatStorage",
        ScalarType.Float64 => "DoubleStorage",
        ScalarType.Float16 => "HalfStorage",
        ScalarType.BFloat16 => "BFloat16Storage",
        ScalarType.Int64 => "LongStorage",
        ScalarType.Int32 => "IntStorage",
        ScalarType.Int16 => "ShortStorage",
        ScalarType.Int8 => "CharStorage",
        ScalarType.Byte => "ByteStorage",
        ScalarType.Bool => "BoolStorage",
        _ => throw new NotSupportedException(t.ToString()),
    };

    /// <summary>
    /// A state dict as torch.save writes it; <paramref name="wrapper"/> nests it as {wrapper: sd, 'epoch': 7},
    /// <paramref name="keyPrefix"/> is prepended to every key, protocol 4 uses FRAME/STACK_GLOBAL/MEMOIZE.
    /// </summary>
    public static byte[] Build(IReadOnlyDictionary<string, Tensor> sd, string? wrapper = null, string keyPrefix = "", string archiveName = "archive", int protocol = 2)
    {
        var p = new PickleBuilder().Proto(protocol);
        bool sg = protocol >= 4;
        if (wrapper is not null) p.EmptyDict().Mark().Str(wrapper);
        p.Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark();
        var storages = new List<(string, byte[])>();
        int i = 0;
        foreach (var (k, t) in sd)
        {
            string key = (i++).ToString(System.Globalization.CultureInfo.InvariantCulture);
            using var c = t.contiguous();
            var stride = new long[c.shape.Length];
            long s = 1;
            for (int d = c.shape.Length - 1; d >= 0; d--) { stride[d] = s; s *= c.shape[d]; }
            p.Str(keyPrefix + k).TensorRef(StorageType(t.dtype), key, c.numel(), 0, c.shape, stride, sg);
            storages.Add((key, c.bytes.ToArray()));
        }
        p.SetItems();
        if (wrapper is not null) p.Str("epoch").Int(7).Str("best").Float(0.25).SetItems();
        p.Stop();
        return Zip(archiveName, p.ToArray(), storages);
    }

    public static byte[] Zip(string archiveName, byte[] pickle, IEnumerable<(string Key, byte[] Data)> storages, bool compress = false)
    {
        using var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
        {
            void Add(string name, byte[] data)
            {
                var e = zip.CreateEntry(name, compress ? CompressionLevel.Optimal : CompressionLevel.NoCompression);
                using var s = e.Open();
                s.Write(data);
            }
            Add(archiveName + "/data.pkl", pickle);
            Add(archiveName + "/byteorder", Encoding.ASCII.GetBytes("little"));
            foreach (var (k, d) in storages) Add(archiveName + "/data/" + k, d);
            Add(archiveName + "/version", Encoding.ASCII.GetBytes("3\n"));
        }
        return ms.ToArray();
    }
}
