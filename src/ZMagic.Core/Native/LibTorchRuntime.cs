using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Text;
using static TorchSharp.torch;

namespace ZMagic.Core.Native;

/// <summary>
/// What the process's libtorch runs on and the few process-wide switches of it that TorchSharp does not expose:
/// the CPU (vendor, model, vector ISA), libtorch's thread count, the bundled oneDNN's version, whether ATen may
/// route convolutions to oneDNN (<c>at::globalContext().setUserEnabledMkldnn</c>, the switch behind PyTorch's
/// <c>torch.backends.mkldnn.enabled</c>), and the conditional numerical reproducibility mode of the bundled oneMKL
/// (<c>MKL_CBWR</c>), which decides whether a matrix product depends on where its operands lie in memory.
/// </summary>
/// <remarks>
/// The switches are C++ functions of libtorch_cpu found by their exported (mangled) names at run time. Where a symbol
/// is missing (another libtorch build, another platform) the switch reports <c>null</c>/<c>false</c> and changes
/// nothing; nothing here can abort the process.
/// </remarks>
public static class LibTorchRuntime
{
    private const string GlobalContextSymbol = "_ZN2at13globalContextEv";
    private const string SetMkldnnSymbol = "_ZN2at7Context20setUserEnabledMkldnnEb";
    private const string GetMkldnnSymbol = "_ZNK2at7Context17userEnabledMkldnnEv";
    private const string MkldnnVersionSymbol = "_ZN2at18get_mkldnn_versionB5cxx11Ev";
    // oneMKL's service functions behind mkl_cbwr_get/mkl_cbwr_set (mkl_service.h), exported by libtorch_cpu.
    private const string CbwrGetSymbol = "mkl_serv_cbwr_get";
    private const string CbwrSetSymbol = "mkl_serv_cbwr_set";
    private const int CbwrAll = ~0, CbwrAuto = 2, CbwrStrict = 0x10000, CbwrModeChangeFailure = -8;
    private static readonly string[] CbwrBranches =
        ["off", "off", "auto", "compatible", "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "avx", "avx2", "avx512 mic", "avx512",
         "avx512 mic e1", "avx512 e1"];

    private static readonly Lazy<Exports?> exports = new(LoadExports);

    /// <summary>CPU vendor and model as the CPU reports them (CPUID), e.g. "AuthenticAMD AMD EPYC 9R45".</summary>
    public static string CpuDescription
    {
        get
        {
            if (!X86Base.IsSupported) return RuntimeInformation.ProcessArchitecture.ToString();
            var (_, b, c, d) = X86Base.CpuId(0, 0);
            var vendor = Encoding.ASCII.GetString(BitConverter.GetBytes(b))
                + Encoding.ASCII.GetString(BitConverter.GetBytes(d))
                + Encoding.ASCII.GetString(BitConverter.GetBytes(c));
            var brand = new StringBuilder();
            if ((uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax >= 0x80000004)
            {
                for (int leaf = 0; leaf < 3; leaf++)
                {
                    var (ea, eb, ec, ed) = X86Base.CpuId(unchecked((int)0x80000002) + leaf, 0);
                    foreach (var r in new[] { ea, eb, ec, ed }) brand.Append(Encoding.ASCII.GetString(BitConverter.GetBytes(r)));
                }
            }
            return $"{vendor} {brand.ToString().TrimEnd('\0').Trim()}".Trim();
        }
    }

    /// <summary>The widest x86 vector extensions the CPU and OS offer, e.g. "AVX-512 (F, BW, VBMI, AVX-VNNI)" or "AVX2 + FMA".</summary>
    public static string VectorIsa
    {
        get
        {
            if (!X86Base.IsSupported) return "not x86";
            if (Avx512F.IsSupported)
            {
                var parts = new List<string> { "F" };
                if (Avx512BW.IsSupported) parts.Add("BW");
                if (Avx512Vbmi.IsSupported) parts.Add("VBMI");
                if (AvxVnni.IsSupported) parts.Add("AVX-VNNI");
                return $"AVX-512 ({string.Join(", ", parts)})";
            }
            if (Avx2.IsSupported) return Fma.IsSupported ? "AVX2 + FMA" : "AVX2";
            if (Avx.IsSupported) return "AVX";
            return Sse41.IsSupported ? "SSE4.1" : "SSE2";
        }
    }

    /// <summary>libtorch's intra-op thread count.</summary>
    public static int Threads => get_num_threads();

    /// <summary>The oneDNN (MKL-DNN) version libtorch was built with, e.g. "3.7.1", or null when libtorch has none
    /// or does not say.</summary>
    public static string? OneDnnVersion
    {
        get
        {
            var e = exports.Value;
            if (e?.MkldnnVersion is not { } fn) return null;
            // std::string (libstdc++, C++11 ABI) returned through a hidden result pointer: {char* data; size_t size;
            // char local[16] or size_t capacity}. 32 bytes; the heap block of a long string is left to the process.
            var buffer = Marshal.AllocHGlobal(32);
            try
            {
                fn(buffer);
                var data = Marshal.ReadIntPtr(buffer);
                var size = Marshal.ReadInt64(buffer, 8);
                if (data == IntPtr.Zero || size is <= 0 or > 4096) return null;
                var text = Marshal.PtrToStringUTF8(data, (int)size);
                var m = System.Text.RegularExpressions.Regex.Match(text, @"v?(\d+\.\d+(\.\d+)?)");
                return m.Success ? m.Groups[1].Value : text;
            }
            finally
            {
                Marshal.FreeHGlobal(buffer);
            }
        }
    }

    /// <summary>
    /// Whether ATen may run convolutions (and the few other ops it routes there) on oneDNN; null when this libtorch
    /// does not export the switch.
    /// </summary>
    public static bool? OneDnnEnabled
    {
        get
        {
            var e = exports.Value;
            return e is null ? null : e.GetMkldnn(e.Context);
        }
    }

    /// <summary>
    /// Lets ATen use oneDNN or not, process-wide, for every later operation (PyTorch's
    /// <c>torch.backends.mkldnn.enabled</c>). Without it convolutions run ATen's own im2col + GEMM kernels.
    /// </summary>
    /// <returns>False when this libtorch does not export the switch (nothing changed).</returns>
    public static bool TrySetOneDnnEnabled(bool enabled)
    {
        var e = exports.Value;
        if (e is null) return false;
        e.SetMkldnn(e.Context, enabled);
        return true;
    }

    /// <summary>
    /// oneMKL's conditional numerical reproducibility mode as <c>mkl_cbwr_get</c> reports it, e.g. "off" (MKL's
    /// default: each call picks its code path, and on some CPUs the rounding of a matrix product then depends on the
    /// operands' memory alignment) or "auto, strict"; null when this libtorch has no oneMKL that says.
    /// </summary>
    public static string? MklReproducibility
    {
        get
        {
            if (cbwr.Value is not { } c) return null;
            int mode = c.Get(CbwrAll);
            int branch = mode & 0xFFFF;
            string name = branch < CbwrBranches.Length ? CbwrBranches[branch] : $"branch {branch}";
            return (mode & CbwrStrict) != 0 ? name + ", strict" : name;
        }
    }

    /// <summary>
    /// Asks oneMKL for results that do not depend on memory alignment (<c>MKL_CBWR=AUTO,STRICT</c>: the same code path
    /// on every call, chosen for this CPU). Without it, on some CPUs (seen on an AMD EPYC Zen 5) a float32 matrix
    /// product of a few rows rounds differently when an operand does not start on a 16-byte boundary, so a tensor that lives in
    /// pinned .NET memory (<c>torch.tensor(float[])</c>) makes two identical runs differ in the last bits. oneMKL
    /// accepts the mode only before its first computation in the process, and an <c>MKL_CBWR</c> environment variable
    /// takes precedence (it is left as it is).
    /// </summary>
    public static MklModeChange TryMakeMklAlignmentIndependent()
    {
        if (cbwr.Value is not { } c) return MklModeChange.Unavailable;
        if (Environment.GetEnvironmentVariable("MKL_CBWR") is { Length: > 0 }) return MklModeChange.SetByEnvironment;
        int mode = c.Get(CbwrAll);
        if ((mode & CbwrStrict) != 0) return MklModeChange.AlreadySet;
        int rc = c.Set(CbwrAuto | CbwrStrict);
        return rc switch
        {
            0 => MklModeChange.Set,
            CbwrModeChangeFailure => MklModeChange.TooLate,
            _ => MklModeChange.Unavailable,
        };
    }

    private static readonly Lazy<Cbwr?> cbwr = new(LoadCbwr);

    private static Cbwr? LoadCbwr()
    {
        try
        {
            if (LibTorchCpu() is not { } lib) return null;
            if (!NativeLibrary.TryGetExport(lib, CbwrGetSymbol, out var getFn) || !NativeLibrary.TryGetExport(lib, CbwrSetSymbol, out var setFn))
                return null;
            return new Cbwr(Marshal.GetDelegateForFunctionPointer<IntFn>(getFn), Marshal.GetDelegateForFunctionPointer<IntFn>(setFn));
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return null;
        }
    }

    // Makes sure libtorch is loaded (TorchSharp loads it on first use), then finds it by name.
    private static IntPtr? LibTorchCpu()
    {
        _ = get_num_threads();
        return NativeLibrary.TryLoad("libtorch_cpu.so", typeof(LibTorchRuntime).Assembly, null, out var lib)
            || NativeLibrary.TryLoad("libtorch_cpu.so", out lib) ? lib : null;
    }

    private static Exports? LoadExports()
    {
        try
        {
            if (LibTorchCpu() is not { } lib) return null;
            if (!NativeLibrary.TryGetExport(lib, GlobalContextSymbol, out var ctxFn)
                || !NativeLibrary.TryGetExport(lib, SetMkldnnSymbol, out var setFn)
                || !NativeLibrary.TryGetExport(lib, GetMkldnnSymbol, out var getFn))
                return null;
            var context = Marshal.GetDelegateForFunctionPointer<ContextFn>(ctxFn)();
            if (context == IntPtr.Zero) return null;
            VersionFn? version = NativeLibrary.TryGetExport(lib, MkldnnVersionSymbol, out var verFn)
                ? Marshal.GetDelegateForFunctionPointer<VersionFn>(verFn) : null;
            return new Exports(context, Marshal.GetDelegateForFunctionPointer<SetBoolFn>(setFn),
                Marshal.GetDelegateForFunctionPointer<GetBoolFn>(getFn), version);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
        {
            return null;
        }
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate IntPtr ContextFn();

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate void SetBoolFn(IntPtr context, [MarshalAs(UnmanagedType.U1)] bool value);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    [return: MarshalAs(UnmanagedType.U1)]
    private delegate bool GetBoolFn(IntPtr context);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate IntPtr VersionFn(IntPtr result);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int IntFn(int value);

    private sealed record Cbwr(IntFn Get, IntFn Set);

    private sealed record Exports(IntPtr Context, SetBoolFn SetMkldnn, GetBoolFn GetMkldnn, VersionFn? MkldnnVersion);
}
