using ZMagic.Cli;

using var cts = new CancellationTokenSource();
ConsoleCancelEventHandler onCancel = (_, e) =>
{
    // First Ctrl+C: stop cleanly at the next step boundary. A second one kills the process as usual.
    if (cts.IsCancellationRequested) return;
    e.Cancel = true;
    Console.Error.WriteLine();
    Console.Error.WriteLine("Stopping (Ctrl+C again to kill)...");
    cts.Cancel();
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
