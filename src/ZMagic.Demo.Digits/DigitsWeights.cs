using System.Reflection;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>Saving and loading the digits networks' weights (fp16 safetensors, embedded in this assembly).</summary>
public static class DigitsWeights
{
    /// <summary>Embedded resource name of the guide classifier.</summary>
    public const string GuideResource = "guide.safetensors";

    /// <summary>Embedded resource name of the judge classifier.</summary>
    public const string JudgeResource = "judge.safetensors";

    /// <summary>Embedded resource name of the DDPM prior.</summary>
    public const string PriorResource = "prior.safetensors";

    /// <summary>Embedded resource name of the held-out digits (U8 images [M, 28, 28] and labels [M]).</summary>
    public const string HeldOutResource = "heldout.safetensors";

    /// <summary>Saves a module's state dict as fp16 safetensors (buffers and parameters), writing to a temp file first.</summary>
    public static void SaveHalf(nn.Module module, string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var scope = torch.NewDisposeScope();
        var dict = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, t) in module.state_dict())
            dict[name] = t.is_floating_point() ? t.detach().to(ScalarType.Float16).contiguous() : t.detach().contiguous();
        SaveAtomically(path, dict, metadata);
    }

    /// <summary>Writes tensors to <paramref name="path"/> through a temp file and a rename (no partial file on failure).</summary>
    public static void SaveAtomically(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, "." + Path.GetFileName(path) + "." + Guid.NewGuid().ToString("N") + ".tmp");
        try
        {
            SafeTensors.Save(tmp, tensors, metadata);
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>
    /// Loads float32 weights into <paramref name="module"/> from a safetensors dictionary, checking that every key is
    /// present with the right shape and no key is left over.
    /// </summary>
    /// <exception cref="CheckpointFormatException">Keys are missing, unexpected or mismatched in shape.</exception>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(weights);
        var expected = module.state_dict();
        var problems = new List<string>();
        foreach (var (name, t) in expected)
        {
            if (!weights.TryGetValue(name, out var w)) problems.Add($"missing key '{name}' [{string.Join(", ", t.shape)}]");
            else if (!w.shape.SequenceEqual(t.shape)) problems.Add($"key '{name}': expected shape [{string.Join(", ", t.shape)}], got [{string.Join(", ", w.shape)}]");
        }
        foreach (var name in weights.Keys)
            if (!expected.ContainsKey(name)) problems.Add($"unexpected key '{name}'");
        if (problems.Count > 0)
            throw new CheckpointFormatException(source, string.Join("; ", problems.Take(10)) + (problems.Count > 10 ? $"; and {problems.Count - 10} more" : ""));
        using (torch.no_grad())
        {
            foreach (var (name, t) in expected)
                t.copy_(weights[name].to(t.dtype));
        }
        ZMagic.Core.Native.NumericsSelfCheck.ApplyConvolutionLayout(module);
    }

    /// <summary>Opens an embedded asset of this assembly.</summary>
    /// <exception cref="FileNotFoundException">The asset is not embedded (the digits assets were not trained yet).</exception>
    public static Stream OpenEmbedded(string name)
    {
        var asm = typeof(DigitsWeights).Assembly;
        string full = $"ZMagic.Demo.Digits.Assets.{name}";
        return asm.GetManifestResourceStream(full)
            ?? throw new FileNotFoundException($"The embedded digits asset '{name}' is missing from {asm.GetName().Name} (run `zmagic train digits` to create src/ZMagic.Demo.Digits/Assets/{name}).", full);
    }

    /// <summary>Whether an embedded asset exists.</summary>
    public static bool HasEmbedded(string name) =>
        typeof(DigitsWeights).Assembly.GetManifestResourceInfo($"ZMagic.Demo.Digits.Assets.{name}") is not null;

    /// <summary>
    /// Environment variable naming a folder whose files replace the embedded assets of the same name (for example the
    /// output of <c>zmagic train digits --out DIR</c>, to try retrained networks without rebuilding).
    /// </summary>
    public const string OverrideVariable = "ZMAGIC_DIGITS_ASSETS";

    /// <summary>The file that replaces an embedded asset (see <see cref="OverrideVariable"/>), or null.</summary>
    public static string? EmbeddedOverridePath(string name) =>
        Environment.GetEnvironmentVariable(OverrideVariable) is { Length: > 0 } dir && File.Exists(Path.Combine(dir, name)) ? Path.Combine(dir, name) : null;

    /// <summary>How errors name an asset: the replacing file's path (see <see cref="OverrideVariable"/>), else "embedded:NAME".</summary>
    internal static string SourceName(string name) => EmbeddedOverridePath(name) ?? "embedded:" + name;

    /// <summary>Reads an embedded safetensors asset (or its override, see <see cref="OverrideVariable"/>).</summary>
    public static Dictionary<string, Tensor> LoadEmbedded(string name)
    {
        if (EmbeddedOverridePath(name) is { } path) return SafeTensors.Load(path);
        using var s = OpenEmbedded(name);
        return SafeTensors.Load(s, "embedded:" + name);
    }
}
