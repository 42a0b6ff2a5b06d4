using ZMagic.Core.IO;
using ZMagic.Models;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Benchmarks;

/// <summary>The backbones the step benchmarks run, built with formula weights (no checkpoint needed).</summary>
public static class Backbones
{
    /// <summary>Backbone names: digits32 (small 1x32x32 DDPM) and celebahq (full 3x256x256 CelebA-HQ DDPM).</summary>
    public static IEnumerable<string> Names => ["digits32", "celebahq"];

    /// <summary>Builds the named backbone on <paramref name="device"/> with formula weights.</summary>
    public static BackboneDenoiser Create(string name, Device device)
    {
        var config = name switch
        {
            "digits32" => BackbonePresets.Get(BackbonePresets.Digits32Ddpm).Config,
            "celebahq" => BackbonePresets.Get(BackbonePresets.CelebAHqDdpm).Config,
            _ => throw new ArgumentException($"Unknown backbone '{name}'; expected one of {string.Join(", ", Names)}.", nameof(name)),
        };
        var d = config.CreateDenoiser();
        FormulaWeights.Apply(d.Module);
        return d.To(device);
    }

    /// <summary>Devices from env ZMAGIC_BENCH_DEVICES (comma-separated: cpu, cuda, cuda:N); "cpu" when unset.</summary>
    public static IEnumerable<string> Devices =>
        (Environment.GetEnvironmentVariable("ZMAGIC_BENCH_DEVICES") ?? "cpu").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
