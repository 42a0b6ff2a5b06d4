using ZMagic.Core.Native;

namespace ZMagic.Cli;

/// <summary>
/// The CLI's numerics policy, applied once before a command runs a network: the environment variable
/// <c>ZMAGIC_ONEDNN</c> is <c>auto</c> (default: run <see cref="NumericsSelfCheck.EnsureHealthy"/>, which switches
/// oneDNN off if its kernels compute wrong numbers on this CPU), <c>on</c> (trust the kernels, no check) or
/// <c>off</c> (never use oneDNN). docs/reliability.md explains why.
/// </summary>
internal static class Numerics
{
    public const string Variable = "ZMAGIC_ONEDNN";

    /// <summary>Applies the policy; writes one line to <paramref name="stderr"/> when it switched something off.</summary>
    /// <exception cref="UsageException">The variable has a value other than auto, on or off.</exception>
    public static void Apply(TextWriter stderr, CancellationToken ct)
    {
        var value = Environment.GetEnvironmentVariable(Variable);
        switch (string.IsNullOrEmpty(value) ? "auto" : value.Trim().ToLowerInvariant())
        {
            case "on":
                return;
            case "off":
                LibTorchRuntime.TrySetOneDnnEnabled(false);
                return;
            case "auto":
                var report = NumericsSelfCheck.EnsureHealthy(cancellationToken: ct);
                foreach (var w in report.Workarounds) stderr.WriteLine($"note: {w} (details: zmagic doctor)");
                return;
            default:
                throw new UsageException($"{Variable}='{value}' is not one of auto, on, off.");
        }
    }
}
