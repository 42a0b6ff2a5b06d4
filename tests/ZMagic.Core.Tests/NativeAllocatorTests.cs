using ZMagic.Core.Native;

namespace ZMagic.Core.Tests;

/// <summary>
/// <see cref="NativeAllocator.RetainFreedMemory"/> reaches glibc's mallopt (the result is glibc's own acceptance of both
/// settings). CI runs on Debian 12 (glibc), where it must apply; elsewhere it must report false and change nothing.
/// Its effect on step time is measured in docs/performance.md (benchmarks: compare --allocator retain|default).
/// </summary>
public class NativeAllocatorTests
{
    [Fact]
    public void RetainFreedMemory_AppliesOnGlibcLinux_AndIsIdempotent()
    {
        bool glibc = OperatingSystem.IsLinux() && !System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier.Contains("musl", StringComparison.Ordinal);
        Assert.Equal(glibc, NativeAllocator.RetainFreedMemory());
        Assert.Equal(glibc, NativeAllocator.RetainFreedMemory());
        // Tensors still allocate, fill and free normally afterwards (large blocks now come from the heap).
        using var big = TorchSharp.torch.ones(16L << 20);
        Assert.Equal(16L << 20, big.sum().item<float>());
    }
}
