using System.Runtime.InteropServices;

namespace ZMagic.Core.Native;

/// <summary>
/// Process-wide settings of the C allocator that libtorch's CPU tensors come from (glibc's <c>malloc</c> on Linux).
/// </summary>
/// <remarks>
/// With glibc's defaults every block above the mmap threshold (at most 32 MiB; one 128x256x256 float32 activation is
/// exactly that) is a fresh <c>mmap</c> that is unmapped when freed, and freed heap memory is trimmed, so every guided
/// step faults its activations in again. On the 256x256 CelebA-HQ DDPM on 2 cores that is about 45 % of the process's
/// kernel time and costs Z-Magic's exact step (two graphs alive at once) 13-19 % of its time; docs/performance.md has
/// the measurements. <see cref="RetainFreedMemory"/> keeps freed memory in the process for reuse instead. The same can
/// be had with no code by starting the process with
/// <c>GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184</c>.
/// </remarks>
public static class NativeAllocator
{
    // <malloc.h>
    private const int M_TRIM_THRESHOLD = -1;
    private const int M_MMAP_MAX = -4;
    private const int M_PERTURB = -6;

    /// <summary>
    /// On Linux with glibc: serve large blocks from the heap instead of fresh mmaps and never trim freed heap memory, so
    /// that memory freed by one step is reused by the next without page faults. Applies to allocations made after the
    /// call, process-wide, and cannot be undone; the resident set then stays at its peak. Meant for applications that
    /// run guided sampling (the <c>zmagic</c> command calls it at start); a library should leave the decision to its host.
    /// </summary>
    /// <returns>True when both settings were applied; false on other systems or C libraries (nothing changes then).</returns>
    public static bool RetainFreedMemory()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            // glibc returns 1 on success (a trim threshold of -1 disables trimming: mallopt(3)); musl's mallopt is a
            // stub that returns 0.
            return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>
    /// Until the returned object is disposed, glibc fills every block it hands out with the byte 0x7F (float32
    /// 3.39e38) and every block freed with 0x80 (its <c>M_PERTURB</c> setting, process-wide), so that a read of
    /// memory nobody wrote shows as a huge value instead of a plausible leftover. Used by
    /// <see cref="NumericsSelfCheck"/>; costs a memset per allocation meanwhile. Nothing happens on other C libraries.
    /// The previous setting (the <c>MALLOC_PERTURB_</c> environment variable, or none) comes back on dispose.
    /// </summary>
    internal static IDisposable PerturbAllocations()
    {
        if (!OperatingSystem.IsLinux() || !TryMallopt(M_PERTURB, 0x80)) return NoOp.Instance;
        int previous = int.TryParse(Environment.GetEnvironmentVariable("MALLOC_PERTURB_"), out var p) ? p & 0xff : 0;
        return new Restore(() => TryMallopt(M_PERTURB, previous));
    }

    private static bool TryMallopt(int param, int value)
    {
        try { return mallopt(param, value) == 1; }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException) { return false; }
    }

    private sealed class NoOp : IDisposable
    {
        public static readonly NoOp Instance = new();
        public void Dispose() { }
    }

    private sealed class Restore(Func<bool> restore) : IDisposable
    {
        private int disposed;
        public void Dispose() { if (Interlocked.Exchange(ref disposed, 1) == 0) restore(); }
    }

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int mallopt(int param, int value);
}
