using TorchSharp;
using ZMagic.Models.Adm;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

public class PresetTests
{
    [Fact]
    public void Registry_lists_the_public_checkpoints()
    {
        var ddpm = BackbonePresets.Get("celebahq-ddpm");
        Assert.Equal("celeba_hq.ckpt", ddpm.CheckpointFileName);
        Assert.Same(DdpmUNetConfig.CelebAHq, ddpm.Config);
        Assert.Equal(113_673_219, ddpm.ParameterCount);
        Assert.StartsWith("https://", ddpm.SourceUrl);

        var adm = BackbonePresets.Get("ADM-256-UNCOND");
        Assert.Equal("256x256_diffusion_uncond.pt", adm.CheckpointFileName);
        Assert.Same(AdmUNetConfig.ImageNet256Uncond, adm.Config);
        Assert.Equal(552_814_086, adm.ParameterCount);

        Assert.Same(ddpm, BackbonePresets.ForCheckpointFile("/models/celeba_hq.ckpt"));
        Assert.Same(adm, BackbonePresets.ForCheckpointFile("256x256_diffusion_uncond.pt"));
        Assert.Null(BackbonePresets.ForCheckpointFile("other.pt"));
        Assert.All(BackbonePresets.All, p => Assert.False(string.IsNullOrWhiteSpace(p.Description + p.CodeLicence + p.WeightsLicence)));
    }

    [Fact]
    public void Unknown_preset_lists_the_known_ones()
    {
        var ex = Assert.Throws<KeyNotFoundException>(() => BackbonePresets.Get("sd15"));
        Assert.Contains("celebahq-ddpm", ex.Message);
        Assert.Contains("adm-256-uncond", ex.Message);
    }

    [Fact]
    public void Full_size_denoiser_contracts_without_allocating()
    {
        using var ddpm = DdpmUNetConfig.CelebAHq.CreateDenoiser(torch.META);
        Assert.Equal((3, 256, false), (ddpm.Channels, ddpm.SampleSize, ddpm.LearnedSigma));
        Assert.Equal(1000, ddpm.Schedule.TrainSteps);
        using var adm = AdmUNetConfig.ImageNet256Uncond.CreateDenoiser(torch.META);
        Assert.Equal((3, 256, true), (adm.Channels, adm.SampleSize, adm.LearnedSigma));
        Assert.Equal(ZMagic.Core.Diffusion.PredictionType.Epsilon, adm.Prediction);
    }

    [Fact]
    public void Case_configs_build_the_models_they_describe()
    {
        Assert.IsType<DdpmUNetConfig>(BackbonePresets.ConfigFromCase(TestPaths.DdpmTinyCase));
        var adm = Assert.IsType<AdmUNetConfig>(BackbonePresets.ConfigFromCase(TestPaths.AdmTinyCase));
        Assert.Equal((16, 32, 6, true, true, 16), (adm.ImageSize, adm.ModelChannels, adm.OutChannels, adm.UseScaleShiftNorm, adm.ResblockUpdown, adm.NumHeadChannels));
        Assert.Equal(new[] { 2 }, adm.AttentionResolutions);
        Assert.Throws<FileNotFoundException>(() => BackbonePresets.ConfigFromCase("/nonexistent"));
    }

    [Fact]
    public void Preset_load_uses_the_strict_loader()
    {
        // The tiny DDPM weights do not fit the full-size preset: a clear mismatch, not a crash or a partial model.
        // (On the meta device: the check happens before any copy, so nothing needs allocating.)
        var ex = Assert.ThrowsAny<ZMagic.Core.IO.StateDictMismatchException>(() => BackbonePresets.Load("celebahq-ddpm", TestPaths.DdpmTinyWeights, torch.META));
        Assert.Contains("conv_in.weight", ex.Message);
    }
}
