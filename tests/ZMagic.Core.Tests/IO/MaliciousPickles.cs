using System.Text;

namespace ZMagic.Core.Tests.IO;

/// <summary>
/// The corpus of hostile pickles (written to IO/corpus/*.pkl). Each one would run code or reach a dangerous callable
/// in Python's unpickler; the reader must refuse all of them at the offending global, before anything is "called".
/// </summary>
public static class MaliciousPickles
{
    /// <summary>Name, data.pkl bytes, and the global (module.name) the error must name.</summary>
    public static IEnumerable<(string Name, byte[] Pickle, string Global)> All()
    {
        // Protocol 0 text pickle, as pickle.dumps(Evil(), 0) writes it: GLOBAL, MARK, STRING, TUPLE, REDUCE.
        yield return ("p0_os_system", Ascii("cos\nsystem\n(S'touch /tmp/zmagic-pwned'\ntR."), "os.system");
        yield return ("p0_posix_system", Ascii("cposix\nsystem\n(S'id'\ntR."), "posix.system");
        yield return ("p0_nt_system", Ascii("cnt\nsystem\n(S'calc.exe'\ntR."), "nt.system");
        yield return ("p2_builtins_eval", P2().Global("builtins", "eval").Str("__import__('os').system('id')").Op(0x85).Reduce().Stop().ToArray(), "builtins.eval");
        yield return ("p2_py2_builtin_eval", P2().Global("__builtin__", "eval").Str("1+1").Op(0x85).Reduce().Stop().ToArray(), "__builtin__.eval");
        yield return ("p4_builtins_exec", P4().StackGlobal("builtins", "exec").Str("import os; os.system('id')").Op(0x85).Reduce().Stop().ToArray(), "builtins.exec");
        yield return ("p4_subprocess_popen", P4().StackGlobal("subprocess", "Popen").Mark().EmptyList().Mark().Str("sh").Str("-c").Str("id").Op((byte)'e').Tuple().Reduce().Stop().ToArray(), "subprocess.Popen");
        yield return ("p4_subprocess_check_output", P4().StackGlobal("subprocess", "check_output").Str("id").Op(0x85).Reduce().Stop().ToArray(), "subprocess.check_output");
        yield return ("p4_importlib", P4().StackGlobal("importlib", "import_module").Str("os").Op(0x85).Reduce().Stop().ToArray(), "importlib.import_module");
        yield return ("p4_builtins_import", P4().StackGlobal("builtins", "__import__").Str("os").Op(0x85).Reduce().Stop().ToArray(), "builtins.__import__");
        yield return ("p4_getattr_chain", P4().StackGlobal("builtins", "getattr").Global("collections", "OrderedDict").Str("__init__").Op(0x86).Reduce().Stop().ToArray(), "builtins.getattr");
        yield return ("p2_runpy", P2().Global("runpy", "_run_code").Str("x").EmptyDict().Op(0x86).Reduce().Stop().ToArray(), "runpy._run_code");
        yield return ("p2_pickle_loads", P2().Global("pickle", "loads").Op((byte)'C').Op(1).Op((byte)'.').Op(0x85).Reduce().Stop().ToArray(), "pickle.loads");
        yield return ("p2_torch_load", P2().Global("torch", "load").Str("/tmp/x.pt").Op(0x85).Reduce().Stop().ToArray(), "torch.load");
        yield return ("p2_torch_storage_load_from_bytes", P2().Global("torch.storage", "_load_from_bytes").Op((byte)'C').Op(1).Op(0).Op(0x85).Reduce().Stop().ToArray(), "torch.storage._load_from_bytes");
        yield return ("p2_torch_nn_module", P2().Global("torch.nn.modules.conv", "Conv2d").EmptyTuple().Op(0x81).Stop().ToArray(), "torch.nn.modules.conv.Conv2d");
        yield return ("p2_numpy_reconstruct", P2().Global("numpy.core.multiarray", "_reconstruct").EmptyTuple().Reduce().Stop().ToArray(), "numpy.core.multiarray._reconstruct");
        yield return ("p2_functools_partial", P2().Global("functools", "partial").Global("os", "system").Op(0x85).Reduce().Stop().ToArray(), "functools.partial");
        yield return ("p2_copyreg_reconstructor", P2().Global("copyreg", "_reconstructor").EmptyTuple().Reduce().Stop().ToArray(), "copyreg._reconstructor");
        yield return ("p2_shutil_rmtree", P2().Global("shutil", "rmtree").Str("/").Op(0x85).Reduce().Stop().ToArray(), "shutil.rmtree");
        yield return ("p2_webbrowser", P2().Global("webbrowser", "open").Str("http://example.invalid").Op(0x85).Reduce().Stop().ToArray(), "webbrowser.open");
        // INST opcode (protocol 0 class call) and the extension registry.
        yield return ("p0_inst_os_system", Ascii("(S'id'\nios\nsystem\n."), "os.system");
        yield return ("p2_ext1", P2().Op(0x82).Op(1).EmptyTuple().Reduce().Stop().ToArray(), "copyreg.<extension registry code>");
        // Obfuscated names: look-alikes of allowed globals must not match.
        yield return ("obf_cyrillic_o_torch", P2().Global("t\u043erch._utils", "_rebuild_tensor_v2").Stop().ToArray(), "t\\u043erch._utils._rebuild_tensor_v2");
        yield return ("obf_trailing_space", P2().Global("torch._utils ", "_rebuild_tensor_v2").Stop().ToArray(), "torch._utils ._rebuild_tensor_v2");
        yield return ("obf_uppercase", P4().StackGlobal("Collections", "OrderedDict").Stop().ToArray(), "Collections.OrderedDict");
        yield return ("obf_nul_byte", P4().StackGlobal("os\0", "system").Stop().ToArray(), "os\\u0000.system");
        yield return ("obf_dotted_name", P4().StackGlobal("collections", "OrderedDict.__init__.__globals__").Stop().ToArray(), "collections.OrderedDict.__init__.__globals__");
        yield return ("obf_fullwidth", P4().StackGlobal("\uff4f\uff53", "system").Stop().ToArray(), "\\uff4f\\uff53.system");
        yield return ("obf_storage_lookalike", P4().StackGlobal("torch", "FloatStorage.__class__").Stop().ToArray(), "torch.FloatStorage.__class__");
        // Nested: a normal-looking state dict with the payload deep inside a tensor's metadata and inside the storage tuple.
        yield return ("nested_in_metadata", NestedInMetadata(), "os.system");
        yield return ("nested_storage_type", P2().EmptyDict().Str("w").Global("torch._utils", "_rebuild_tensor_v2")
            .Mark().Mark().Str("storage").Global("os", "system").Str("0").Str("cpu").Int(1).Tuple().BinPersId()
            .Int(0).LongTuple(new long[] { 1 }).LongTuple(new long[] { 1 }).False().Global("collections", "OrderedDict").EmptyTuple().Reduce().Tuple().Reduce()
            .SetItem().Stop().ToArray(), "os.system");
        yield return ("nested_reduce_argument", P2().Global("collections", "OrderedDict").Mark().Global("subprocess", "call").Str("id").Op(0x85).Reduce().Tuple().Reduce().Stop().ToArray(), "subprocess.call");
        yield return ("memo_reuse", P2().Global("collections", "OrderedDict").Put(0).Op((byte)'0').StackGlobalP2("os", "popen").Str("id").Op(0x85).Reduce().Stop().ToArray(), "os.popen");
    }

    private static byte[] NestedInMetadata()
    {
        var p = P2().EmptyDict().Mark().Str("state_dict").EmptyDict().Mark();
        p.Str("layer.weight").Global("torch._utils", "_rebuild_tensor_v2").Mark()
            .Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(1).Tuple().BinPersId()
            .Int(0).LongTuple(new long[] { 1 }).LongTuple(new long[] { 1 }).False()
            .Global("collections", "OrderedDict").EmptyTuple().Reduce()
            .Mark().Str("meta").Mark().Str("deep").Global("os", "system").Str("id").Op(0x85).Reduce().Op((byte)'d').SetItems()
            .Tuple().Reduce();
        return p.SetItems().SetItems().Stop().ToArray();
    }

    private static PickleBuilder StackGlobalP2(this PickleBuilder p, string module, string name) => p.Global(module, name);

    private static PickleBuilder P2() => new PickleBuilder().Proto(2);

    private static PickleBuilder P4() => new PickleBuilder().Proto(4);

    private static byte[] Ascii(string s) => Encoding.UTF8.GetBytes(s);
}
