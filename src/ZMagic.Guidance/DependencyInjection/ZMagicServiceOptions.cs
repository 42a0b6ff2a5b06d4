using Microsoft.Extensions.Options;
using ZMagic.Core.Diffusion;
using ZMagic.Models;

namespace ZMagic.Guidance.DependencyInjection;

/// <summary>Which guidance strategy the registered <see cref="ZMagic.Guidance.Generation.ZMagicGenerator"/> uses by default.</summary>
public enum ZMagicStrategyKind
{
    /// <summary>FreeDoM-style independent guidance (sum of the conditions' gradients).</summary>
    Vanilla,

    /// <summary>Z-Magic: sequential conditioning with CAGrad.</summary>
    ZMagic,
}

/// <summary>Options of <see cref="ZMagicServiceCollectionExtensions.AddZMagic"/>, validated when the host starts.</summary>
/// <remarks>
/// The backbone comes either from <see cref="DenoiserFactory"/> (any <see cref="IDenoiser"/>) or from a preset name in
/// <see cref="Backbone"/> (see <see cref="BackbonePresets"/>) plus the checkpoint in <see cref="WeightsPath"/>. It is loaded
/// lazily, once, the first time an <see cref="IDenoiser"/> is resolved.
/// </remarks>
public sealed class ZMagicServiceOptions
{
    /// <summary>A backbone preset name (e.g. <see cref="BackbonePresets.CelebAHqDdpm"/>); ignored when <see cref="DenoiserFactory"/> is set.</summary>
    public string? Backbone { get; set; }

    /// <summary>The checkpoint file the preset loads.</summary>
    public string? WeightsPath { get; set; }

    /// <summary>Builds the backbone instead of a preset (e.g. a locally trained model). Called once, lazily.</summary>
    public Func<IServiceProvider, IDenoiser>? DenoiserFactory { get; set; }

    /// <summary>Denoising steps per run (default 100).</summary>
    public int Steps { get; set; } = 100;

    /// <summary>The default strategy (default <see cref="ZMagicStrategyKind.ZMagic"/>).</summary>
    public ZMagicStrategyKind Strategy { get; set; } = ZMagicStrategyKind.ZMagic;

    /// <summary>"cpu" (default) or "cuda" / "cuda:N": where the backbone and the samples live.</summary>
    public string Device { get; set; } = "cpu";
}

/// <summary>Checks <see cref="ZMagicServiceOptions"/>: a backbone source, an existing weights file, positive steps, a known device.</summary>
public sealed class ZMagicServiceOptionsValidator : IValidateOptions<ZMagicServiceOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, ZMagicServiceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (options.DenoiserFactory is null)
        {
            if (string.IsNullOrWhiteSpace(options.Backbone))
                errors.Add("ZMagic: set Backbone (one of " + string.Join(", ", BackbonePresets.Names) + ") with WeightsPath, or DenoiserFactory.");
            else if (!BackbonePresets.TryGet(options.Backbone, out _))
                errors.Add($"ZMagic: unknown Backbone '{options.Backbone}'; expected one of {string.Join(", ", BackbonePresets.Names)}.");
            if (string.IsNullOrWhiteSpace(options.WeightsPath))
                errors.Add("ZMagic: WeightsPath is required with a Backbone preset.");
            else if (!File.Exists(options.WeightsPath))
                errors.Add($"ZMagic: WeightsPath '{options.WeightsPath}' does not exist.");
        }
        if (options.Steps < 1)
            errors.Add($"ZMagic: Steps must be at least 1 (got {options.Steps}).");
        if (!Enum.IsDefined(options.Strategy))
            errors.Add($"ZMagic: unknown Strategy {(int)options.Strategy}.");
        if (!IsDevice(options.Device))
            errors.Add($"ZMagic: Device '{options.Device}' is not 'cpu', 'cuda' or 'cuda:N'.");
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static bool IsDevice(string? device) =>
        device is "cpu" or "cuda" ||
        (device is not null && device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device.AsSpan(5), out int i) && i >= 0);
}
