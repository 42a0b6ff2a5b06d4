using System.Globalization;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Demo.Digits;
using static TorchSharp.torch;

namespace ZMagic.Cli;

/// <summary>A parsed <c>--condition name:key=value,...</c>.</summary>
/// <param name="Name">Condition kind.</param>
/// <param name="Args">Its key=value settings.</param>
public sealed record ConditionSpec(string Name, IReadOnlyDictionary<string, string> Args)
{
    /// <summary>Parses <c>name</c> or <c>name:key=value,key=value</c>.</summary>
    public static ConditionSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        string name = (colon < 0 ? text : text[..colon]).Trim();
        if (name.Length == 0) throw new UsageException($"--condition '{text}' has no name; write name:key=value,...");
        var args = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        if (colon >= 0)
            foreach (var part in text[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int eq = part.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0) throw new UsageException($"--condition '{text}': '{part}' is not key=value.");
                string key = part[..eq].Trim();
                if (!args.TryAdd(key, part[(eq + 1)..].Trim())) throw new UsageException($"--condition '{text}' sets '{key}' twice.");
            }
        return new ConditionSpec(name.ToLowerInvariant(), args);
    }
}

/// <summary>What a condition factory may use.</summary>
/// <param name="Channels">Channels of the images being generated.</param>
/// <param name="Size">Side of the images being generated.</param>
/// <param name="Device">Where sampling runs.</param>
/// <param name="Resources">Shared, lazily loaded networks (disposed by the caller).</param>
public sealed record ConditionContext(int Channels, int Size, Device Device, ConditionResources Resources);

/// <summary>Lazily loaded networks that several conditions share (one guide classifier for all digit conditions).</summary>
public sealed class ConditionResources : IDisposable
{
    private GuideClassifier? _guide;

    /// <summary>The embedded digits guide classifier.</summary>
    public GuideClassifier Guide => _guide ??= DigitsModels.LoadGuide();

    /// <inheritdoc />
    public void Dispose() => _guide?.Dispose();
}

/// <summary>A kind of condition the CLI can build from a spec.</summary>
/// <param name="Name">Name used in <c>--condition NAME:...</c>.</param>
/// <param name="Help">Keys and an example.</param>
/// <param name="Keys">Accepted keys (others are usage errors).</param>
/// <param name="Create">Builds the condition.</param>
public sealed record ConditionKind(string Name, string Help, IReadOnlyCollection<string> Keys, Func<ConditionSpec, ConditionContext, IGuidanceCondition> Create);

/// <summary>
/// The registry of conditions available to <c>zmagic generate</c>. New condition plug-ins (face, CLIP, ...) add a
/// <see cref="ConditionKind"/> with <see cref="Register"/>; parsing and validation stay here.
/// </summary>
public static class ConditionRegistry
{
    private static readonly Dictionary<string, ConditionKind> Kinds = new(StringComparer.OrdinalIgnoreCase);

    static ConditionRegistry()
    {
        Register(new ConditionKind("digit", "digit:class=C[,scale=S]  wanted digit 0..9 (guide classifier cross-entropy); digits preset",
            new[] { "class", "scale" }, (s, c) =>
            {
                RequireDigits(s, c);
                return new DigitClassCondition(c.Resources.Guide, Int(s, "class", 0, 9), Schedule(s, 1.0), "digit");
            }));
        Register(new ConditionKind("thickness", "thickness:ink=X[,tol=T,scale=S]  stroke thickness as ink mass (MNIST ~0.10); digits preset",
            new[] { "ink", "tol", "scale" }, (s, c) =>
            {
                RequireDigits(s, c);
                return new StrokeThicknessCondition(Num(s, "ink", null, 0.001, 0.999), Num(s, "tol", 0.025, 1e-6, 1), Schedule(s, 1.0), "thickness");
            }));
        Register(new ConditionKind("style", "style:ref=IMAGE|heldout=I[,scale=S]  style (Gram matrices of guide features) of a reference digit; digits preset",
            new[] { "ref", "heldout", "scale" }, (s, c) =>
            {
                RequireDigits(s, c);
                bool hasRef = s.Args.ContainsKey("ref"), hasHeld = s.Args.ContainsKey("heldout");
                if (hasRef == hasHeld) throw new UsageException("style needs exactly one of ref=IMAGE or heldout=INDEX.");
                Tensor reference;
                if (hasRef) reference = CliImages.ReadReference(s.Args["ref"], $"--condition {s.Name}:ref", 1, MnistData.Size);
                else
                {
                    var (images, labels) = DigitsModels.LoadHeldOut();
                    int i = Int(s, "heldout", 0, (int)images.shape[0] - 1);
                    reference = images[i].unsqueeze(0).clone();
                    images.Dispose();
                    labels.Dispose();
                }
                using (reference) return new DigitStyleCondition(c.Resources.Guide, reference, Schedule(s, 1.0), "style");
            }));
    }

    /// <summary>Adds (or replaces) a condition kind.</summary>
    public static void Register(ConditionKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        Kinds[kind.Name] = kind;
    }

    /// <summary>All kinds, by name.</summary>
    public static IEnumerable<ConditionKind> All => Kinds.Values.OrderBy(k => k.Name, StringComparer.Ordinal);

    /// <summary>Builds the conditions of the given specs, in order.</summary>
    public static IReadOnlyList<IGuidanceCondition> Build(IEnumerable<ConditionSpec> specs, ConditionContext context)
    {
        var list = new List<IGuidanceCondition>();
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var s in specs)
        {
            if (!Kinds.TryGetValue(s.Name, out var kind))
                throw new UsageException($"Unknown condition '{s.Name}'. Known: {string.Join(", ", Kinds.Keys.Order())}.");
            foreach (var k in s.Args.Keys)
                if (!kind.Keys.Contains(k, StringComparer.OrdinalIgnoreCase))
                    throw new UsageException($"Condition '{s.Name}' has no setting '{k}'; it takes {string.Join(", ", kind.Keys)}.");
            if (!seen.Add(s.Name)) throw new UsageException($"Condition '{s.Name}' is given twice; give each condition once.");
            list.Add(kind.Create(s, context));
        }
        return list;
    }

    private static void RequireDigits(ConditionSpec s, ConditionContext c)
    {
        if (c.Channels != 1 || c.Size != MnistData.Size)
            throw new UsageException($"Condition '{s.Name}' works on 1x{MnistData.Size}x{MnistData.Size} digits, but the preset makes {c.Channels}x{c.Size}x{c.Size} images.");
    }

    private static GuidanceSchedule Schedule(ConditionSpec s, double defaultScale) => new(new SqrtAlphaBarStepSize(Num(s, "scale", defaultScale, 0, 1e9)));

    private static int Int(ConditionSpec s, string key, int min, int max)
    {
        if (!s.Args.TryGetValue(key, out var text)) throw new UsageException($"Condition '{s.Name}' needs {key}=...");
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v))
            throw new UsageException($"Condition '{s.Name}': {key}='{text}' is not an integer.");
        if (v < min || v > max) throw new UsageException($"Condition '{s.Name}': {key} must be in [{min}, {max}]; got {v}.");
        return v;
    }

    private static double Num(ConditionSpec s, string key, double? fallback, double min, double max)
    {
        if (!s.Args.TryGetValue(key, out var text))
            return fallback ?? throw new UsageException($"Condition '{s.Name}' needs {key}=...");
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new UsageException($"Condition '{s.Name}': {key}='{text}' is not a number.");
        if (v < min || v > max) throw new UsageException($"Condition '{s.Name}': {key} must be in [{min}, {max}]; got {v}.");
        return v;
    }
}
