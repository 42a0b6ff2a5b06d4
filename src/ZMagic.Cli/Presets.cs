using ZMagic.Core.Diffusion;
using ZMagic.Core.IO;
using ZMagic.Guidance.Digits;
using ZMagic.Models;
using ZMagic.Models.Ddpm;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Cli;

/// <summary>A backbone the CLI knows: its network config and how its denoiser is built from a weights file.</summary>
/// <param name="Name">Preset name (<c>--preset</c>).</param>
/// <param name="Description">One line for <c>zmagic models</c>.</param>
/// <param name="Source">Where the weights come from.</param>
/// <param name="Config">The network config (keys and shapes come from it).</param>
/// <param name="Wrap">Turns the raw network's denoiser into what the sampler sees (identity for most); also gets the
/// weights file (null: embedded or random weights), whose metadata may say how to read the network.</param>
/// <param name="Channels">Channels of the images the sampler makes.</param>
/// <param name="Size">Side of the images the sampler makes.</param>
/// <param name="Embedded">The embedded weights resource, if the preset ships weights.</param>
public sealed record BackbonePreset(string Name, string Description, string Source, BackboneConfig Config, Func<BackboneDenoiser, string?, IDenoiser> Wrap, int Channels, int Size, string? Embedded = null);

/// <summary>The preset table.</summary>
public static class Presets
{
    /// <summary>Every preset, by name.</summary>
    public static IReadOnlyList<BackbonePreset> All { get; } = new[]
    {
        new BackbonePreset("digits", "embedded MNIST digits prior: DDPM UNet (ch 32, ch_mult 1,2,2) on the 4x4 space-to-depth view, 1x32x32",
            "embedded in ZMagic.Guidance (trained by `zmagic train digits`)", DigitsModels.PriorConfig,
            (d, file) => new X0ClippingDenoiser(new DigitsDenoiser(d, file is null ? DigitsModels.EmbeddedPriorOutput : DigitsModels.PriorOutputOf(file) ?? PredictionType.Epsilon)), 1, MnistData.Size, DigitsWeights.PriorResource),
        new BackbonePreset("celeba-hq-ddpm", "SDEdit / FreeDoM CelebA-HQ 256 DDPM (ermongroup UNet, ch 128, ch_mult 1,1,2,2,4,4)",
            "celeba_hq.ckpt from SDEdit (see docs/models.md)", DdpmUNetConfig.CelebAHq, (d, _) => d, DdpmUNetConfig.CelebAHq.InChannels, DdpmUNetConfig.CelebAHq.Resolution),
        new BackbonePreset("ddpm-digits32", "plain 1x32x32 DDPM UNet config (ch 32, ch_mult 1,2,2, attention at 8) for user-trained digit priors",
            "your own training", DdpmUNetConfig.Digits32, (d, _) => d, DdpmUNetConfig.Digits32.InChannels, DdpmUNetConfig.Digits32.Resolution),
    };

    /// <summary>Finds a preset or throws a usage error listing the known ones.</summary>
    public static BackbonePreset Get(string name) =>
        All.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new UsageException($"Unknown preset '{name}'. Known presets: {string.Join(", ", All.Select(p => p.Name))} (zmagic models).");

    /// <summary>
    /// Checks a weights file against a preset without running it: every expected key present with the expected shape,
    /// no unexpected key. Returns the problems (empty when the file fits).
    /// </summary>
    /// <exception cref="InputException">The file is missing or unreadable.</exception>
    public static IReadOnlyList<string> Check(BackbonePreset preset, string path)
    {
        var summary = ReadSummary(path);
        using var module = preset.Config.CreateModule(torch.device("meta"));
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
        var raw = preset.Config.CreateDenoiser();
        try
        {
            if (weightsPath is not null)
            {
                var problems = Check(preset, weightsPath);
                if (problems.Count > 0)
                    throw new InputException($"Weights file '{weightsPath}' does not fit preset '{preset.Name}': {string.Join("; ", problems.OrderBy(x => x.StartsWith("unexpected", StringComparison.Ordinal) ? 0 : 1).Take(5))}{(problems.Count > 5 ? $"; and {problems.Count - 5} more" : "")}.");
                raw.LoadCheckpoint(weightsPath);
            }
            else if (!randomWeights)
            {
                if (preset.Embedded is null)
                    throw new UsageException($"Preset '{preset.Name}' ships no weights: give --weights FILE (or --random-weights for timing only).");
                raw.LoadStateDict(DigitsWeights.LoadEmbedded(preset.Embedded), "embedded:" + preset.Embedded);
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
