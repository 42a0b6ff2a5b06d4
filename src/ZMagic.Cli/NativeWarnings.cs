using System.Runtime.InteropServices;
using TorchSharp;

namespace ZMagic.Cli;

/// <summary>
/// libtorch's C++ log (c10 <c>LOG(WARNING)</c>): on CPUs NNPACK does not support it prints "Could not initialize
/// NNPACK! Reason: Unsupported hardware." on every convolution, 48 MB of stderr in a minute of sampling. The CLI raises
/// c10's log threshold to ERROR once at start; <c>ZMAGIC_DEBUG=1</c> keeps libtorch's warnings.
/// </summary>
public static class NativeWarnings
{
    private const int GlogError = 2; // c10 severities: INFO 0, WARNING 1, ERROR 2, FATAL 3

    /// <summary>Sets c10's <c>FLAGS_caffe2_log_level</c> to ERROR. Returns false when the symbol is not found.</summary>
    public static bool Silence()
    {
        try
        {
            _ = torch.get_num_threads(); // loads libtorch (and libc10) if nothing has yet
        }
        catch (Exception e) when (e is NotSupportedException or DllNotFoundException or TypeInitializationException or BadImageFormatException)
        {
            return false; // libtorch cannot load here: the command that needs it reports that itself
        }
        var address = FindLogLevel();
        if (address == IntPtr.Zero) return false;
        if (Marshal.ReadInt32(address) < GlogError) Marshal.WriteInt32(address, GlogError);
        return true;
    }

    /// <summary>c10's current log threshold, or null when the symbol is not found.</summary>
    public static int? LogLevel()
    {
        var address = FindLogLevel();
        return address == IntPtr.Zero ? null : Marshal.ReadInt32(address);
    }

    private static IntPtr FindLogLevel()
    {
        foreach (var name in new[] { "libc10.so", "libc10.dylib", "c10.dll" })
        {
            if (!NativeLibrary.TryLoad(name, typeof(torch).Assembly, null, out var lib)) continue;
            if (NativeLibrary.TryGetExport(lib, "FLAGS_caffe2_log_level", out var address)) return address;
        }
        return IntPtr.Zero;
    }
}
