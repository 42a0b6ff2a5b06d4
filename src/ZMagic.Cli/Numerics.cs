using ZMagic.Core.Native;

namespace ZMagic.Cli;

/// <summary>
/// The CLI's numerics policy, applied once before a command runs a network: the environment variable
/// <c>ZMAGIC_ONEDNN</c> is <c>auto</c> (default: run <see cref="NumericsSelfCheck.EnsureHealthy"/>, which routes
/// around oneDNN kernels that compute wrong numbers on this CPU), <c>on</c> (trust the kernels, no check),
/// <c>channels-last</c> (convolutions through oneDNN's channels-last kernels) or <c>off</c> (never use oneDNN).
/// docs/reliability.md explains why.
/// </summary>
internal static class Numerics
{
    public const string Variable = "ZMAGIC_ONEDNN";

    /// <summary>True when the variable is unset or <c>auto</c>: the check decides the route.</summary>
    public static bool IsAuto
    {
        get
        {
            var value = Environment.GetEnvironmentVariable(Variable);
            return string.IsNullOrWhiteSpace(value) || value.Trim().Equals("auto", StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>Applies the policy; writes one line to <paramref name="stderr"/> per workaround the check took.</summary>
    /// <exception cref="UsageException">The variable has a value other than auto, on, channels-last or off.</exception>
    public static void Apply(TextWriter stderr, CancellationToken ct)
    {
        var value = Environment.GetEnvironmentVariable(Variable);
        NumericsReport? report;
        try
        {
            report = NumericsSelfCheck.ApplyPolicy(value, ct);
        }
        catch (ArgumentException)
        {
            throw new UsageException($"{Variable}='{value}' is not one of auto, on, channels-last, off.");
        }
        foreach (var w in report?.Workarounds ?? []) stderr.WriteLine($"note: {w} (details: zmagic doctor)");
    }
}
