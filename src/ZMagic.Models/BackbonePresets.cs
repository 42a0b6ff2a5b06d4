using System.Text.Json;
using ZMagic.Models.Adm;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Models;

/// <summary>A named backbone configuration and the public checkpoint it loads.</summary>
/// <param name="Name">Preset name (e.g. <c>celebahq-ddpm</c>).</param>
/// <param name="Config">Architecture and schedule.</param>
/// <param name="CheckpointFileName">File name of the released checkpoint (null when the weights are trained locally).</param>
/// <param name="Description">What the model is.</param>
/// <param name="SourceUrl">Where users download the checkpoint (null when none is published).</param>
/// <param name="CodeLicence">Licence of the reference code.</param>
/// <param name="WeightsLicence">Licence / terms of the weights as published.</param>
/// <param name="ApproximateFileSize">Size of the checkpoint file as published, in words.</param>
public sealed record BackbonePreset(
    string Name,
    BackboneConfig Config,
    string? CheckpointFileName,
    string Description,
    string? SourceUrl,
    string CodeLicence,
    string WeightsLicence,
    string ApproximateFileSize)
{
    /// <summary>Parameter elements of the network (state-dict floats), counted on the meta device.</summary>
    public long ParameterCount => Config.CountParameters();

    /// <summary>Builds the preset's denoiser and loads <paramref name="checkpointPath"/> (strict).</summary>
    public BackboneDenoiser Load(string checkpointPath, Device? device = null) => Config.LoadDenoiser(checkpointPath, device);
}

/// <summary>The registry of named pixel-space backbones.</summary>
public static class BackbonePresets
{
    /// <summary>SDEdit's CelebA-HQ 256 DDPM.</summary>
    public const string CelebAHqDdpm = "celebahq-ddpm";

    /// <summary>guided-diffusion's ImageNet 256x256 unconditional ADM.</summary>
    public const string Adm256Uncond = "adm-256-uncond";

    /// <summary>The small 1-channel 32x32 DDPM config for a locally trained digits prior.</summary>
    public const string Digits32Ddpm = "digits32-ddpm";

    private static readonly BackbonePreset[] Presets =
    [
        new(CelebAHqDdpm, DdpmUNetConfig.CelebAHq, "celeba_hq.ckpt",
            "CelebA-HQ 256x256 face DDPM (ermongroup/SDEdit Model; used by SDEdit, DDRM, DDNM, FreeDoM). Epsilon prediction, linear betas 1e-4..0.02, T = 1000.",
            "https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/celeba_hq.ckpt",
            "MIT (ermongroup/ddim, SDEdit)", "no stated licence; trained on CelebA-HQ (non-commercial research dataset)",
            "about 455 MB (fp32)"),
        new(Adm256Uncond, AdmUNetConfig.ImageNet256Uncond, "256x256_diffusion_uncond.pt",
            "ImageNet 256x256 unconditional ADM (openai/guided-diffusion UNetModel, as FreeDoM uses it). Epsilon + learned sigma (6 channels), linear schedule, T = 1000.",
            "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
            "MIT (openai/guided-diffusion)", "released with the repository (MIT); trained on ImageNet",
            "about 2.2 GB (fp32)"),
        new(Digits32Ddpm, DdpmUNetConfig.Digits32, null,
            "Small 1-channel 32x32 DDPM config for a digits prior trained from scratch by this project (no published checkpoint).",
            null, "MIT (this project)", "whatever the training data allows (trained locally)",
            "a few MB (fp32)"),
    ];

    /// <summary>Every preset.</summary>
    public static IReadOnlyList<BackbonePreset> All => Presets;

    /// <summary>Preset names.</summary>
    public static IEnumerable<string> Names => Presets.Select(p => p.Name);

    /// <summary>Looks a preset up by name (case-insensitive).</summary>
    public static bool TryGet(string name, out BackbonePreset preset)
    {
        preset = Presets.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))!;
        return preset is not null;
    }

    /// <summary>Looks a preset up by name (case-insensitive).</summary>
    /// <exception cref="KeyNotFoundException">Unknown name (the message lists the known ones).</exception>
    public static BackbonePreset Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return TryGet(name, out var p) ? p
            : throw new KeyNotFoundException($"Unknown backbone preset '{name}'. Known presets: {string.Join(", ", Names)}.");
    }

    /// <summary>Builds the preset's denoiser and loads the checkpoint at <paramref name="checkpointPath"/>.</summary>
    public static BackboneDenoiser Load(string name, string checkpointPath, Device? device = null) => Get(name).Load(checkpointPath, device);

    /// <summary>The preset whose checkpoint file name equals the file name of <paramref name="checkpointPath"/>, if any.</summary>
    public static BackbonePreset? ForCheckpointFile(string checkpointPath)
    {
        ArgumentNullException.ThrowIfNull(checkpointPath);
        var file = Path.GetFileName(checkpointPath);
        return Presets.FirstOrDefault(p => p.CheckpointFileName is not null && string.Equals(p.CheckpointFileName, file, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>
    /// The config described by a golden case folder's case.json (<c>model.config</c> for DDPM cases, <c>constructor</c> for
    /// guided-diffusion cases); see <see cref="BackboneConfig.FromJson(JsonElement)"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">No case.json in the folder.</exception>
    public static BackboneConfig ConfigFromCase(string caseDirectory)
    {
        ArgumentNullException.ThrowIfNull(caseDirectory);
        var path = Path.Combine(caseDirectory, "case.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"No case.json in {caseDirectory}.", path);
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return BackboneConfig.FromJson(doc.RootElement);
    }
}
