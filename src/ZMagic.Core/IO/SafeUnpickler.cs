using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace ZMagic.Core.IO;

/// <summary>A pickle referenced a global (module attribute) outside the allow-list; nothing was executed.</summary>
public class UnsafeCheckpointException : CheckpointFormatException
{
    /// <summary>Creates the exception for the refused global <paramref name="module"/>.<paramref name="name"/>.</summary>
    public UnsafeCheckpointException(string source, string module, string name)
        : base(source, $"refused to load: the pickle references the global '{Printable(module)}.{Printable(name)}', which is not on the allow-list " +
                       "(only tensors, storages, OrderedDict and plain data are accepted; nothing in the file was executed)." + Hint(module))
    {
        Module = module;
        Name = name;
    }

    /// <summary>The refused global's module, as written in the file.</summary>
    public string Module { get; }

    /// <summary>The refused global's attribute name, as written in the file.</summary>
    public string Name { get; }

    private static string Hint(string module) =>
        module.StartsWith("torch.nn", StringComparison.Ordinal) || module == "__main__" || module.StartsWith("models", StringComparison.Ordinal)
            ? " The file seems to pickle a whole model object (torch.save(model)); re-save model.state_dict() instead."
            : "";

    private static string Printable(string s)
    {
        var sb = new StringBuilder();
        foreach (char c in s.Length > 200 ? s[..200] + "…" : s)
            sb.Append(c >= 0x20 && c < 0x7f ? c.ToString() : $"\\u{(int)c:x4}");
        return sb.ToString();
    }
}

/// <summary>An allow-listed global read from a pickle (a class or function that is never called, only recognised).</summary>
/// <param name="Module">Module name.</param>
/// <param name="Name">Attribute name.</param>
internal sealed record PickleGlobal(string Module, string Name)
{
    /// <inheritdoc />
    public override string ToString() => Module + "." + Name;
}

/// <summary>A plain object rebuilt from an allow-listed data-only class (e.g. <c>argparse.Namespace</c>): its class and state.</summary>
/// <param name="Class">The class.</param>
/// <param name="Args">Constructor arguments as pickled.</param>
internal sealed record PickleObject(PickleGlobal Class, object?[] Args)
{
    /// <summary>The state set by BUILD (normally the attribute dictionary), or null.</summary>
    public object? State { get; set; }
}

/// <summary>A reference to a PyTorch storage (persistent id in a zip checkpoint).</summary>
/// <param name="Key">Name of the storage record (archive/data/&lt;key&gt;).</param>
/// <param name="DType">Element type.</param>
/// <param name="NumElements">Element count claimed by the pickle.</param>
internal sealed record StorageRef(string Key, TorchSharp.torch.ScalarType DType, long NumElements);

/// <summary>A tensor view of a storage, to be materialised after unpickling.</summary>
internal sealed record TensorRef(StorageRef Storage, long Offset, long[] Size, long[] Stride, bool RequiresGrad);

/// <summary>
/// A pickle reader that constructs only plain data: it never imports or calls anything. Globals are resolved against a
/// fixed allow-list when the GLOBAL/STACK_GLOBAL opcode is read, and REDUCE/NEWOBJ are interpreted only for the few
/// allow-listed constructors that PyTorch checkpoints use.
/// </summary>
internal sealed class SafeUnpickler
{
    /// <summary>Maximum stack size, mark depth and memo entries.</summary>
    internal const int MaxStack = 1 << 20, MaxMarks = 1 << 16, MaxMemo = 1 << 22;

    private static readonly Dictionary<string, TorchSharp.torch.ScalarType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["FloatStorage"] = TorchSharp.torch.ScalarType.Float32,
        ["DoubleStorage"] = TorchSharp.torch.ScalarType.Float64,
        ["HalfStorage"] = TorchSharp.torch.ScalarType.Float16,
        ["BFloat16Storage"] = TorchSharp.torch.ScalarType.BFloat16,
        ["LongStorage"] = TorchSharp.torch.ScalarType.Int64,
        ["IntStorage"] = TorchSharp.torch.ScalarType.Int32,
        ["ShortStorage"] = TorchSharp.torch.ScalarType.Int16,
        ["CharStorage"] = TorchSharp.torch.ScalarType.Int8,
        ["ByteStorage"] = TorchSharp.torch.ScalarType.Byte,
        ["BoolStorage"] = TorchSharp.torch.ScalarType.Bool,
        ["UntypedStorage"] = TorchSharp.torch.ScalarType.Byte,
    };

    private static readonly HashSet<(string, string)> Allowed = new()
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("argparse", "Namespace"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),
        ("torch", "Size"),
    };

    private readonly byte[] _data;
    private readonly string _source;
    private int _pos;
    private readonly List<object?> _stack = new();
    private readonly List<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = new();

    /// <summary>Storages referenced by the pickle, by key.</summary>
    internal Dictionary<string, StorageRef> Storages { get; } = new(StringComparer.Ordinal);

    private readonly HashSet<string> _opaque;

    internal SafeUnpickler(byte[] data, string source, IEnumerable<string>? opaqueGlobals = null)
    {
        _data = data;
        _source = source;
        _opaque = new HashSet<string>(opaqueGlobals ?? Array.Empty<string>(), StringComparer.Ordinal);
    }

    private bool IsOpaque(PickleGlobal g) => _opaque.Contains(g.Module + "." + g.Name) && !IsAllowed(g.Module, g.Name);

    /// <summary>True when the global is accepted.</summary>
    internal static bool IsAllowed(string module, string name) =>
        Allowed.Contains((module, name)) || (module == "torch" && StorageTypes.ContainsKey(name)) || (module == "torch.storage" && name is "UntypedStorage" or "TypedStorage");

    private CheckpointFormatException Bad(string problem) => new(_source, $"pickle: {problem} (at byte {_pos}).");

    /// <summary>Reads the whole pickle and returns the top-level object.</summary>
    internal object? Load()
    {
        while (true)
        {
            if (_pos >= _data.Length) throw Bad("ends without a STOP opcode (truncated)");
            byte op = _data[_pos++];
            switch (op)
            {
                case 0x80: // PROTO
                    {
                        int v = ReadByte();
                        if (v > 5) throw Bad($"unsupported pickle protocol {v}");
                        break;
                    }
                case 0x95: // FRAME
                    {
                        ulong len = ReadUInt64();
                        if (len > (ulong)(_data.Length - _pos)) throw Bad("frame longer than the data");
                        break;
                    }
                case (byte)'.': // STOP
                    if (_stack.Count != 1 || _marks.Count != 0) throw Bad($"STOP with {_stack.Count} objects on the stack");
                    return _stack[0];
                case (byte)'(': // MARK
                    if (_marks.Count >= MaxMarks) throw Bad("too many nested marks");
                    _marks.Add(_stack.Count);
                    break;
                case (byte)'0': Pop(); break; // POP
                case (byte)'1': PopMark(); break; // POP_MARK
                case (byte)'2': Push(Peek()); break; // DUP
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break; // BININT
                case (byte)'K': Push((long)ReadByte()); break; // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
                case 0x8a: Push(ReadLong(ReadByte())); break; // LONG1
                case 0x8b: // LONG4
                    {
                        int n = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
                        if (n < 0 || n > 1 << 16) throw Bad($"LONG4 of {n} bytes");
                        Push(ReadLong(n));
                        break;
                    }
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT
                case (byte)'X': Push(ReadUtf8((ulong)BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // BINUNICODE
                case 0x8c: Push(ReadUtf8((ulong)ReadByte())); break; // SHORT_BINUNICODE
                case 0x8d: Push(ReadUtf8(ReadUInt64())); break; // BINUNICODE8
                case (byte)'T': // BINSTRING (python 2 str)
                    {
                        int n = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
                        if (n < 0) throw Bad("negative string length");
                        Push(Encoding.Latin1.GetString(Take(n)));
                        break;
                    }
                case (byte)'U': Push(Encoding.Latin1.GetString(Take((ulong)ReadByte()))); break; // SHORT_BINSTRING
                case (byte)'B': Push(Take(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))).ToArray()); break; // BINBYTES
                case (byte)'C': Push(Take((ulong)ReadByte()).ToArray()); break; // SHORT_BINBYTES
                case 0x8e: case 0x96: Push(Take(ReadUInt64()).ToArray()); break; // BINBYTES8, BYTEARRAY8
                case (byte)'}': Push(new PickleDict()); break; // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break; // EMPTY_LIST
                case (byte)')': Push(Array.Empty<object?>()); break; // EMPTY_TUPLE
                case 0x8f: Push(new List<object?>()); break; // EMPTY_SET (as a list)
                case (byte)'d': // DICT
                    {
                        var items = PopMark();
                        if (items.Count % 2 != 0) throw Bad("DICT with an odd number of items");
                        var d = new PickleDict();
                        for (int i = 0; i < items.Count; i += 2) d.Set(Key(items[i]), items[i + 1]);
                        Push(d);
                        break;
                    }
                case (byte)'l': Push(PopMark()); break; // LIST
                case (byte)'t': Push(PopMark().ToArray()); break; // TUPLE
                case 0x85: Push(new[] { Pop() }); break; // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; } // TUPLE2
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; } // TUPLE3
                case 0x91: Push(PopMark()); break; // FROZENSET (as a list)
                case 0x90: // ADDITEMS
                    {
                        var items = PopMark();
                        if (Peek() is not List<object?> set) throw Bad("ADDITEMS on a non-set");
                        AddItems(set, items);
                        break;
                    }
                case (byte)'a': // APPEND
                    {
                        var v = Pop();
                        if (Peek() is not List<object?> list) throw Bad("APPEND on a non-list");
                        AddItems(list, new List<object?> { v });
                        break;
                    }
                case (byte)'e': // APPENDS
                    {
                        var items = PopMark();
                        if (Peek() is not List<object?> list) throw Bad("APPENDS on a non-list");
                        AddItems(list, items);
                        break;
                    }
                case (byte)'s': // SETITEM
                    {
                        var v = Pop();
                        var k = Pop();
                        if (Peek() is not PickleDict d) throw Bad("SETITEM on a non-dict");
                        d.Set(Key(k), v);
                        break;
                    }
                case (byte)'u': // SETITEMS
                    {
                        var items = PopMark();
                        if (items.Count % 2 != 0) throw Bad("SETITEMS with an odd number of items");
                        if (Peek() is not PickleDict d) throw Bad("SETITEMS on a non-dict");
                        for (int i = 0; i < items.Count; i += 2) d.Set(Key(items[i]), items[i + 1]);
                        break;
                    }
                case (byte)'c': // GLOBAL
                    {
                        string module = ReadLine(), name = ReadLine();
                        Push(Global(module, name));
                        break;
                    }
                case 0x93: // STACK_GLOBAL
                    {
                        var name = Pop();
                        var module = Pop();
                        if (module is not string m || name is not string n) throw Bad("STACK_GLOBAL needs two strings");
                        Push(Global(m, n));
                        break;
                    }
                case (byte)'i': // INST: module and name inline, then a call
                    {
                        string module = ReadLine(), name = ReadLine();
                        Global(module, name);
                        throw Bad($"INST opcode (class instantiation of {module}.{name}) is not supported");
                    }
                case (byte)'o': throw Bad("OBJ opcode (class instantiation) is not supported");
                case 0x82: case 0x83: case 0x84:
                    throw new UnsafeCheckpointException(_source, "copyreg", "<extension registry code>");
                case (byte)'R': // REDUCE
                    {
                        var args = Pop();
                        var func = Pop();
                        if (args is not object?[] tuple) throw Bad("REDUCE arguments are not a tuple");
                        Push(Reduce(func, tuple));
                        break;
                    }
                case 0x81: // NEWOBJ
                    {
                        var args = Pop();
                        var cls = Pop();
                        if (args is not object?[] tuple) throw Bad("NEWOBJ arguments are not a tuple");
                        Push(NewObj(cls, tuple));
                        break;
                    }
                case 0x92: // NEWOBJ_EX
                    {
                        var kwargs = Pop();
                        var args = Pop();
                        var cls = Pop();
                        if (args is not object?[] tuple || kwargs is not PickleDict kw) throw Bad("NEWOBJ_EX arguments are malformed");
                        if (kw.Count != 0) throw Bad("NEWOBJ_EX with keyword arguments is not supported");
                        Push(NewObj(cls, tuple));
                        break;
                    }
                case (byte)'b': // BUILD
                    {
                        var state = Pop();
                        var obj = Peek();
                        switch (obj)
                        {
                            case PickleObject po: po.State = state; break;
                            case PickleDict pd: pd.State = state; break; // e.g. a state_dict's _metadata attribute
                            case TensorRef: break; // tensor subclass state: ignored
                            default: throw Bad($"BUILD on a {Describe(obj)}");
                        }
                        break;
                    }
                case (byte)'Q': // BINPERSID
                    Push(PersistentLoad(Pop()));
                    break;
                case (byte)'P': throw Bad("text persistent ids (PERSID) are not supported");
                case (byte)'q': Memo(ReadByte()); break; // BINPUT
                case (byte)'r': Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))); break; // LONG_BINPUT
                case 0x94: Memo(_memo.Count); break; // MEMOIZE
                case (byte)'h': Push(Get(ReadByte())); break; // BINGET
                case (byte)'j': Push(Get(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // LONG_BINGET
                case (byte)'p': Memo(ParseIndex(ReadLine())); break; // PUT
                case (byte)'g': Push(Get(ParseIndex(ReadLine()))); break; // GET
                case (byte)'I': // INT (text)
                    {
                        string s = ReadLine();
                        if (s == "00") Push(false);
                        else if (s == "01") Push(true);
                        else if (long.TryParse(s, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long v)) Push(v);
                        else throw Bad("malformed INT");
                        break;
                    }
                case (byte)'L': // LONG (text)
                    {
                        string s = ReadLine().TrimEnd('L');
                        if (!long.TryParse(s, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long v)) throw Bad("malformed LONG");
                        Push(v);
                        break;
                    }
                case (byte)'F': // FLOAT (text)
                    {
                        if (!double.TryParse(ReadLine(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v)) throw Bad("malformed FLOAT");
                        Push(v);
                        break;
                    }
                case (byte)'S': // STRING (quoted text)
                    {
                        string s = ReadLine();
                        if (s.Length < 2 || (s[0] != '\'' && s[0] != '"') || s[^1] != s[0]) throw Bad("malformed STRING");
                        Push(Unescape(s[1..^1]));
                        break;
                    }
                case (byte)'V': Push(Unescape(ReadLine())); break; // UNICODE (raw-unicode-escape text)
                default:
                    throw Bad($"unsupported or invalid opcode 0x{op:x2}");
            }
        }
    }

    private object Global(string module, string name)
    {
        if (!IsAllowed(module, name) && !_opaque.Contains(module + "." + name)) throw new UnsafeCheckpointException(_source, module, name);
        return new PickleGlobal(module, name);
    }

    private object? Reduce(object? func, object?[] args)
    {
        if (func is not PickleGlobal g) throw Bad($"REDUCE of a {Describe(func)}, which is not a callable global");
        if (IsOpaque(g)) return new PickleObject(g, args); // recorded, never called
        switch (g.Module, g.Name)
        {
            case ("collections", "OrderedDict"):
                {
                    var d = new PickleDict();
                    if (args.Length == 1 && args[0] is List<object?> pairs)
                    {
                        foreach (var p in pairs)
                        {
                            if (p is not object?[] { Length: 2 } kv) throw Bad("OrderedDict items are not pairs");
                            d.Set(Key(kv[0]), kv[1]);
                        }
                    }
                    else if (args.Length != 0) throw Bad("OrderedDict with unexpected arguments");
                    return d;
                }
            case ("torch._utils", "_rebuild_tensor_v2"):
            case ("torch._utils", "_rebuild_tensor"):
                {
                    if (args.Length < 4) throw Bad($"{g.Name} needs at least 4 arguments");
                    if (args[0] is not StorageRef storage) throw Bad($"{g.Name}: first argument is a {Describe(args[0])}, not a storage");
                    long offset = AsLong(args[1], "storage offset");
                    long[] size = AsLongs(args[2], "size");
                    long[] stride = AsLongs(args[3], "stride");
                    bool grad = args.Length > 4 && args[4] is true;
                    return new TensorRef(storage, offset, size, stride, grad);
                }
            case ("torch._utils", "_rebuild_parameter"):
            case ("torch._utils", "_rebuild_parameter_with_state"):
                {
                    if (args.Length < 1 || args[0] is not TensorRef t) throw Bad($"{g.Name}: first argument is not a tensor");
                    return t;
                }
            case ("numpy.core.multiarray", "scalar"):
            case ("numpy._core.multiarray", "scalar"):
                return NumpyScalar(args);
            case ("numpy", "dtype"):
                if (args.Length < 1 || args[0] is not string dt) throw Bad("numpy.dtype needs a type string");
                return new PickleObject(g, args);
            case ("_codecs", "encode"):
                {
                    // protocol-2 pickles write bytes as _codecs.encode(str, 'latin1'): pure data conversion.
                    if (args.Length != 2 || args[0] is not string s || args[1] is not string enc || enc is not ("latin1" or "latin-1"))
                        throw Bad("_codecs.encode is accepted only as encode(str, 'latin1')");
                    return Encoding.Latin1.GetBytes(s);
                }
            case ("builtins", "set"):
            case ("builtins", "frozenset"):
            case ("__builtin__", "set"):
                if (args.Length == 0) return new List<object?>();
                if (args.Length == 1 && args[0] is List<object?> l) return l;
                throw Bad("set() with unexpected arguments");
            case ("torch", "Size"):
                if (args.Length == 1) return AsLongs(args[0], "torch.Size").Cast<object?>().ToArray();
                throw Bad("torch.Size with unexpected arguments");
            default:
                throw Bad($"REDUCE of {g} is not supported");
        }
    }

    private object NewObj(object? cls, object?[] args)
    {
        if (cls is not PickleGlobal g) throw Bad($"NEWOBJ of a {Describe(cls)}");
        if (IsOpaque(g)) return new PickleObject(g, args);
        if ((g.Module, g.Name) is ("argparse", "Namespace") or ("collections", "OrderedDict"))
            return g.Name == "OrderedDict" ? new PickleDict() : new PickleObject(g, args);
        throw Bad($"NEWOBJ of {g} is not supported");
    }

    private object? NumpyScalar(object?[] args)
    {
        if (args.Length != 2 || args[0] is not PickleObject { Class.Name: "dtype" } dtype || dtype.Args[0] is not string code || args[1] is not byte[] b)
            throw Bad("numpy scalar needs a dtype and bytes");
        string c = code.TrimStart('<', '|', '=');
        return c switch
        {
            "f8" when b.Length == 8 => BinaryPrimitives.ReadDoubleLittleEndian(b),
            "f4" when b.Length == 4 => (double)BinaryPrimitives.ReadSingleLittleEndian(b),
            "i8" when b.Length == 8 => BinaryPrimitives.ReadInt64LittleEndian(b),
            "i4" when b.Length == 4 => (long)BinaryPrimitives.ReadInt32LittleEndian(b),
            "u8" when b.Length == 8 => (object)BinaryPrimitives.ReadUInt64LittleEndian(b),
            "b1" when b.Length == 1 => b[0] != 0,
            _ => throw Bad($"numpy scalar of dtype '{code}' with {b.Length} bytes is not supported"),
        };
    }

    private StorageRef PersistentLoad(object? pid)
    {
        if (pid is not object?[] t || t.Length < 5 || t[0] is not string kind || kind != "storage")
            throw Bad("persistent id is not a ('storage', type, key, location, numel) tuple");
        if (t[1] is not PickleGlobal g || !StorageTypes.TryGetValue(g.Name, out var dtype))
            throw Bad($"persistent id names storage type {Describe(t[1])}");
        if (t[2] is not string key || key.Length == 0 || key.Length > 256 || key.Contains('/') || key.Contains('\\') || key.Contains(".."))
            throw Bad("persistent id has an invalid storage key");
        long numel = AsLong(t[4], "storage size");
        if (numel < 0) throw Bad($"storage '{key}' claims {numel} elements");
        if (Storages.TryGetValue(key, out var existing))
        {
            if (existing.DType != dtype || existing.NumElements != numel)
                throw Bad($"storage '{key}' is referenced with different types or sizes");
            return existing;
        }
        var s = new StorageRef(key, dtype, numel);
        Storages[key] = s;
        return s;
    }

    private void AddItems(List<object?> list, List<object?> items)
    {
        if (list.Count + (long)items.Count > MaxStack) throw Bad("list grows beyond the size limit");
        list.AddRange(items);
    }

    private object Key(object? k) => k switch
    {
        null => throw Bad("None as a dictionary key is not supported"),
        List<object?> => throw Bad("a list as a dictionary key"),
        PickleDict => throw Bad("a dict as a dictionary key"),
        object?[] { Length: > 64 } => throw Bad("a tuple key longer than 64 items"),
        object?[] tuple => new PickleTupleKey(tuple),
        _ => k,
    };

    private void Memo(long index)
    {
        if (_stack.Count == 0) throw Bad("memo store from an empty stack");
        if (index < 0) throw Bad("negative memo index");
        if (!_memo.ContainsKey(index) && _memo.Count >= MaxMemo) throw Bad("too many memo entries");
        _memo[index] = _stack[^1];
    }

    private object? Get(long index) => _memo.TryGetValue(index, out var v) ? v : throw Bad($"memo index {index} was never stored");

    private static long ParseIndex(string s) =>
        long.TryParse(s, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long v) ? v : -1;

    private void Push(object? o)
    {
        if (_stack.Count >= MaxStack) throw Bad("stack grows beyond the size limit");
        _stack.Add(o);
    }

    private object? Pop()
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor) throw Bad("pop from an empty stack");
        var o = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return o;
    }

    private object? Peek()
    {
        int floor = _marks.Count > 0 ? _marks[^1] : 0;
        if (_stack.Count <= floor) throw Bad("read from an empty stack");
        return _stack[^1];
    }

    private List<object?> PopMark()
    {
        if (_marks.Count == 0) throw Bad("no MARK on the stack");
        int m = _marks[^1];
        _marks.RemoveAt(_marks.Count - 1);
        var items = _stack.GetRange(m, _stack.Count - m);
        _stack.RemoveRange(m, _stack.Count - m);
        return items;
    }

    private int ReadByte()
    {
        if (_pos >= _data.Length) throw Bad("truncated");
        return _data[_pos++];
    }

    private ulong ReadUInt64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

    private ReadOnlySpan<byte> Take(ulong n)
    {
        if (n > (ulong)(_data.Length - _pos)) throw Bad($"a {n}-byte field runs past the end of the pickle (truncated or corrupt)");
        var span = new ReadOnlySpan<byte>(_data, _pos, (int)n);
        _pos += (int)n;
        return span;
    }

    private ReadOnlySpan<byte> Take(int n) => n < 0 ? throw Bad("negative length") : Take((ulong)n);

    private string ReadUtf8(ulong n)
    {
        var bytes = Take(n);
        try { return new UTF8Encoding(false, true).GetString(bytes); }
        catch (DecoderFallbackException) { throw Bad("a string is not valid UTF-8"); }
    }

    private string ReadLine()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _pos);
        if (end < 0 || end - _pos > 4096) throw Bad("unterminated text line");
        string s = Encoding.UTF8.GetString(_data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }

    private static string Unescape(string s)
    {
        if (!s.Contains('\\')) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c != '\\' || i + 1 >= s.Length) { sb.Append(c); continue; }
            char e = s[++i];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'x' when i + 2 < s.Length && int.TryParse(s.AsSpan(i + 1, 2), System.Globalization.NumberStyles.HexNumber, null, out int x):
                    sb.Append((char)x);
                    i += 2;
                    break;
                case 'u' when i + 4 < s.Length && int.TryParse(s.AsSpan(i + 1, 4), System.Globalization.NumberStyles.HexNumber, null, out int u):
                    sb.Append((char)u);
                    i += 4;
                    break;
                default: sb.Append(e); break;
            }
        }
        return sb.ToString();
    }

    private object ReadLong(int n)
    {
        var bytes = Take(n);
        if (n == 0) return 0L;
        if (n <= 8)
        {
            long v = 0;
            for (int i = n - 1; i >= 0; i--) v = (v << 8) | bytes[i];
            int shift = 64 - 8 * n;
            return shift > 0 ? (v << shift) >> shift : v; // sign-extend
        }
        return new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
    }

    private long AsLong(object? o, string what) => o is long l ? l : throw Bad($"{what} is a {Describe(o)}, not an integer");

    private long[] AsLongs(object? o, string what)
    {
        if (o is not object?[] t) throw Bad($"{what} is a {Describe(o)}, not a tuple");
        if (t.Length > 64) throw Bad($"{what} has {t.Length} dimensions");
        var r = new long[t.Length];
        for (int i = 0; i < t.Length; i++) r[i] = AsLong(t[i], what);
        return r;
    }

    internal static string Describe(object? o) => o switch
    {
        null => "None",
        PickleGlobal g => "global " + g,
        object?[] => "tuple",
        List<object?> => "list",
        PickleDict => "dict",
        string => "string",
        long => "integer",
        _ => o.GetType().Name,
    };
}

/// <summary>A dictionary read from a pickle, in insertion order; keys are strings, integers, floats, booleans or tuples.</summary>
internal sealed class PickleDict
{
    private readonly OrderedDictionary<object, object?> _items = new();

    /// <summary>Number of entries.</summary>
    public int Count => _items.Count;

    /// <summary>Entries in insertion order (tuple keys are object arrays).</summary>
    public IEnumerable<KeyValuePair<object, object?>> Items =>
        _items.Select(kv => new KeyValuePair<object, object?>(kv.Key is PickleTupleKey t ? t.Items : kv.Key, kv.Value));

    /// <summary>The state set by BUILD (for a PyTorch state dict: its <c>_metadata</c> attribute), or null.</summary>
    public object? State { get; internal set; }

    /// <summary>Looks up a string key.</summary>
    public bool TryGetValue(string key, out object? value) => _items.TryGetValue(key, out value);

    internal void Set(object key, object? value) => _items[key] = value;

    internal void Replace(object key, object? value) => _items[key] = value;

    internal IEnumerable<object> RawKeys => _items.Keys;

    internal object? RawGet(object key) => _items[key];
}

/// <summary>A tuple used as a dictionary key, compared by value.</summary>
internal sealed class PickleTupleKey : IEquatable<PickleTupleKey>
{
    internal PickleTupleKey(object?[] items) => Items = items;

    internal object?[] Items { get; }

    public bool Equals(PickleTupleKey? other) =>
        other is not null && other.Items.Length == Items.Length && Items.Zip(other.Items).All(p => Equals(p.First, p.Second));

    public override bool Equals(object? obj) => Equals(obj as PickleTupleKey);

    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var i in Items) h.Add(i is null or object?[] ? 0 : i.GetHashCode());
        return h.ToHashCode();
    }
}
