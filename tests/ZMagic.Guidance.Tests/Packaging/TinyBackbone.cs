using ZMagic.Core.IO;
using ZMagic.Models.Ddpm;

namespace ZMagic.Guidance.Tests.Packaging;

/// <summary>A tiny deterministic DDPM (formula weights) for DI / generator tests.</summary>
internal static class TinyBackbone
{
    public static DdpmUNetConfig Config { get; } = new()
    {
        Ch = 32, OutCh = 1, InChannels = 1, ChMult = [1, 2], NumResBlocks = 1, AttnResolutions = [],
        Resolution = 8, VarType = "fixedlarge",
    };

    public static DdpmDenoiser Create()
    {
        var d = new DdpmDenoiser(Config);
        FormulaWeights.Apply(d.Module);
        return d;
    }
}
