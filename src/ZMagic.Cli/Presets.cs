using ZMagic.Core.Diffusion;
using ZMagic.Core.IO;
using ZMagic.Demo.Digits;
using ZMagic.Models;
using ZMagic.Models.Ddpm;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Cli;

/// <summary>A backbone the CLI knows: its network config and how its denoiser is built from a weights file.</summary>
/// <param name="Name">Preset name (<c>--preset</c>).</param>
/// <param name="Description">One line for <c>zmagic models</c>.</param>
/// <param name="Source">Where the weights come from.</param>
/// <param name="Config">The network config (keys and shapes come from it; see <see cref="ConfigFor"/>).</param>
/// <param name="Wrap">Turns the raw network's denoiser into what the sampler sees (identity for most); also gets the
/// weights file (null: embedded or random weights), whose metadata may say how to read the network.</param>
/// <param name="Channels">Channels of the images the sampler makes.</param>
/// <param name="Size">Side of the images the sampler makes.</param>
/// <param name="Embedded">The embedded weights resource, if the preset ships weights.</param>
/// <param name="ConfigOf">For presets whose network size follows the weights file (the digits prior, sized by its
/// shapes): the config of a weights file (null: the embedded or random weights); null: always <paramref name="Config"/>.</param>
public sealed record BackbonePreset(string Name, string Description, string Source, BackboneConfig Config, Func<BackboneDenoiser, string?, IDenoiser> Wrap, int Channels, int Size, string? Embedded = null,
    Func<string?, BackboneConfig>? ConfigOf = null)
{
    /// <summary>The network config of <paramref name="weightsPath"/> (null: the embedded or random weights).</summary>
    /// <exception cref="InputException">The file cannot be read.</exception>
    public BackboneConfig ConfigFor(string? weightsPath)
    {
        if (ConfigOf is null) return Config;
        try
        {
            return ConfigOf(weightsPath);
        }
        catch (CheckpointFormatException e)
        {
            // Without a path only a replacement of the embedded weights (ZMAGIC_DIGITS_ASSETS) is read; e.Message names it.
            throw new InputException(weightsPath is null
                ? $"The replacement of the '{Name}' preset's embedded weights is not a readable checkpoint: {e.Message}"
                : $"Weights file '{weightsPath}' is not a readable checkpoint: {e.Message}", e);
        }
    }
}

/// <summary>
/// The preset table of the CLI: the embedded digits prior, then every backbone of the library's table
/// (<see cref="BackbonePresets"/>, under the library's names), then Stable Diffusion 1.x (<c>sd15</c>, a diffusers
/// folder that <c>generate --preset sd15</c> reads with options of its own). Older CLI names are accepted as aliases.
/// </summary>
public static class Presets
{
    /// <summary>The name of the Stable Diffusion preset (a diffusers folder, not a single checkpoint).</summary>
    public const string StableDiffusion = "sd15";

    /// <summary>Names the CLI used before it took the library's (still accepted).</summary>
    public static IReadOnlyDictionary<string, string> Aliases { get; } = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["celeba-hq-ddpm"] = BackbonePresets.CelebAHqDdpm,
        ["ddpm-digits32"] = BackbonePresets.Digits32Ddpm,
    };

    /// <summary>Every pixel-space preset, by name (sd15 is listed by <c>zmagic models</c> but has options of its own).</summary>
    public static IReadOnlyList<BackbonePreset> All { get; } = BackbonePresets.All.Select(FromLibrary)
        .Prepend(new BackbonePreset("digits", $"embedded MNIST digits prior: DDPM UNet (ch {DigitsModels.PriorConfig.Ch}, ch_mult 1,2,2, {DigitsModels.PriorConfig.NumResBlocks} res blocks) on the 4x4 space-to-depth view, 1x32x32",
            "embedded in ZMagic.Demo.Digits (trained by `zmagic train digits`)", DigitsModels.PriorConfig,
            (d, file) => new X0ClippingDenoiser(new DigitsDenoiser(d, file is null ? DigitsModels.EmbeddedPriorOutput : DigitsModels.PriorOutputOf(file) ?? PredictionType.Epsilon)), 1, MnistData.Size, DigitsWeights.PriorResource,
            DigitsModels.PriorConfigOf))
        .ToArray();

    private static BackbonePreset FromLibrary(ZMagic.Models.BackbonePreset p)
    {
        var (channels, size) = p.Config switch
        {
            DdpmUNetConfig d => (d.InChannels, d.Resolution),
            ZMagic.Models.Adm.AdmUNetConfig a => (a.InChannels, a.ImageSize),
            _ => throw new NotSupportedException($"Preset '{p.Name}' has a {p.Config.Architecture} config the CLI cannot size."),
        };
        string source = p.CheckpointFileName is null ? "your own training (no published checkpoint)" : $"{p.CheckpointFileName} from {p.SourceUrl} (docs/models.md)";
        return new BackbonePreset(p.Name, p.Description, source, p.Config, (d, _) => d, channels, size);
    }

    /// <summary>Finds a preset (or an alias of one) or throws a usage error listing the known ones.</summary>
    public static BackbonePreset Get(string name)
    {
        if (string.Equals(name, StableDiffusion, StringComparison.OrdinalIgnoreCase))
            throw new UsageException($"Preset '{StableDiffusion}' is a diffusers folder with options of its own: zmagic generate --preset {StableDiffusion} --model DIR (--help lists them).");
        string canonical = Aliases.TryGetValue(name, out var c) ? c : name;
        return All.FirstOrDefault(p => string.Equals(p.Name, canonical, StringComparison.OrdinalIgnoreCase))
               ?? throw new UsageException($"Unknown preset '{name}'. Known presets: {string.Join(", ", All.Select(p => p.Name).Append(StableDiffusion))} (zmagic models).");
    }

    /// <summary>
    /// Checks a weights file against a preset without running it: every expected key present with the expected shape,
    /// no unexpected key. Returns the problems (empty when the file fits).
    /// </summary>
    /// <exception cref="InputException">The file is missing or unreadable.</exception>
    public static IReadOnlyList<string> Check(BackbonePreset preset, string path)
    {
        var summary = ReadSummary(path);
        using var module = preset.ConfigFor(path).CreateModule(torch.device("meta"));
        var expected = module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        var actual = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var e in summary.Entries) actual[e.Name] = e.Shape;
        var problems = new List<string>();
        foreach (var (k, shape) in expected)
        {
            if (!actual.TryGetValue(k, out var got)) problems.Add($"missing key '{k}' (expected shape [{string.Join(", ", shape)}])");
            else if (!got.SequenceEqual(shape)) problems.Add($"key '{k}': expected shape [{string.Join(", ", shape)}], file has [{string.Join(", ", got)}]");
        }
        foreach (var k in actual.Keys)
            if (!expected.ContainsKey(k)) problems.Add($"unexpected key '{k}'");
        // Keys and shapes fit: the data to read is then bounded by the preset's own size (any dtype up to 8 bytes),
        // so a storage that lies about its size is refused before anything is inflated.
        long limit = MaxDataBytes(expected.Values);
        if (problems.Count == 0 && summary.DataBytes > limit)
            problems.Add($"the tensors' storages hold {summary.DataBytes} bytes, more than the {limit} bytes the preset's weights can take");
        return problems;
    }

    /// <summary>The most tensor data a checkpoint for these shapes may hold: 8 bytes per element plus 1 MiB.</summary>
    internal static long MaxDataBytes(IEnumerable<long[]> shapes) => shapes.Sum(s => 8 * s.Aggregate(1L, (a, b) => a * b)) + (1L << 20);

    private static CheckpointSummary ReadSummary(string path)
    {
        try
        {
            return Checkpoint.ReadSummary(path);
        }
        catch (FileNotFoundException)
        {
            throw new InputException($"Weights file '{path}' does not exist.");
        }
        catch (NotARegularFileException e)
        {
            throw new InputException($"Weights file {e.Message}", e);
        }
        catch (CheckpointFormatException e)
        {
            throw new InputException($"Weights file '{path}' is not a readable checkpoint: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"Weights file '{path}' could not be read: {e.Message}", e);
        }
    }

    /// <summary>Builds the preset's denoiser from <paramref name="weightsPath"/>, its embedded weights (null path), or random weights.</summary>
    public static IDenoiser Load(BackbonePreset preset, string? weightsPath, bool randomWeights, Device device)
    {
        if (weightsPath is not null)
        {
            var problems = Check(preset, weightsPath);
            if (problems.Count > 0)
                throw new InputException($"Weights file '{weightsPath}' does not fit preset '{preset.Name}': {string.Join("; ", problems.OrderBy(x => x.StartsWith("unexpected", StringComparison.Ordinal) ? 0 : 1).Take(5))}{(problems.Count > 5 ? $"; and {problems.Count - 5} more" : "")}.");
        }
        var raw = preset.ConfigFor(weightsPath).CreateDenoiser();
        try
        {
            if (weightsPath is not null)
            {
                raw.LoadCheckpoint(weightsPath);
            }
            else if (!randomWeights)
            {
                if (preset.Embedded is null)
                    throw new UsageException($"Preset '{preset.Name}' ships no weights: give --weights FILE (or --random-weights for timing only).");
                raw.LoadStateDict(DigitsWeights.LoadEmbedded(preset.Embedded), DigitsWeights.SourceName(preset.Embedded));
            }
            DigitsModels.Freeze(raw.Module);
            raw.To(device);
            return preset.Wrap(raw, weightsPath);
        }
        catch
        {
            raw.Dispose();
            throw;
        }
    }
}
