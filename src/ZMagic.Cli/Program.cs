using ZMagic.Cli;
using ZMagic.Core.Native;

// Reuse freed native memory instead of faulting large activations in again every step (docs/performance.md);
// ZMAGIC_NATIVE_ALLOCATOR=default keeps the C library's defaults.
if (Environment.GetEnvironmentVariable("ZMAGIC_NATIVE_ALLOCATOR") != "default") NativeAllocator.RetainFreedMemory();

// libtorch's C++ warnings (NNPACK's "Unsupported hardware" on every convolution) would flood stderr; ZMAGIC_DEBUG keeps them.
if (Environment.GetEnvironmentVariable("ZMAGIC_DEBUG") is not { Length: > 0 }) NativeWarnings.Silence();

using var cts = new CancellationTokenSource();
ConsoleCancelEventHandler onCancel = (_, e) =>
{
    // First Ctrl+C: stop cleanly at the next step boundary. A second one kills the process as usual.
    if (cts.IsCancellationRequested) return;
    e.Cancel = true;
    // Cancel before writing: the message must never be what keeps the run from stopping (a stderr nobody reads).
    cts.Cancel();
    Console.Error.WriteLine();
    Console.Error.WriteLine("Stopping (Ctrl+C again to kill)...");
};
Console.CancelKeyPress += onCancel;
try
{
    return App.Run(args, Console.Out, Console.Error, cts.Token);
}
finally
{
    Console.CancelKeyPress -= onCancel;
}
