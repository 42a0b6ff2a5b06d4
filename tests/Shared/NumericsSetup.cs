using System.Runtime.CompilerServices;
using ZMagic.Core.Native;

namespace ZMagic.Tests;

/// <summary>
/// Compiled into every test assembly: before any test, the numerics self-check runs once and routes around kernels
/// that compute wrong numbers on this CPU, as the <c>zmagic</c> command and <c>ConditionalSampler</c> do for users
/// (docs/reliability.md). Tests that drive strategies or networks directly would otherwise run on them unchecked. A
/// defect no workaround fixes throws here and fails the whole assembly with the probes named. ZMAGIC_ONEDNN selects
/// a route as for the CLI (auto, on, channels-last, off), so the whole suite can be run on each workaround.
/// </summary>
internal static class NumericsSetup
{
#pragma warning disable CA2255 // a test assembly's one-time process setup is what module initializers are for
    [ModuleInitializer]
    internal static void EnsureCorrectKernels() => NumericsSelfCheck.ApplyPolicy(Environment.GetEnvironmentVariable("ZMAGIC_ONEDNN"));
#pragma warning restore CA2255
}
