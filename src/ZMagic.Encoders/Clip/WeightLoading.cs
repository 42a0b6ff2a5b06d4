using System.Text;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Clip;

/// <summary>
/// Strict state-dict loading with a full report: every missing, unexpected and mis-shaped key is named. Values are
/// copied into the module's own tensors (so fp16 files become fp32).
/// </summary>
internal static class WeightLoading
{
    /// <summary>
    /// Copies <paramref name="dict"/> into <paramref name="module"/>. File keys
    /// matched by <paramref name="ignorePredicate"/> are skipped silently.
    /// </summary>
    /// <exception cref="CheckpointFormatException">Keys are missing or unexpected, or shapes differ.</exception>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, Tensor> dict, string source, Func<string, bool>? ignorePredicate = null)
    {
        var own = module.state_dict();
        var missing = own.Keys.Where(k => !dict.ContainsKey(k)).ToList();
        var unexpected = dict.Keys.Where(k => !own.ContainsKey(k) && !(ignorePredicate?.Invoke(k) ?? false)).ToList();
        var mismatched = own.Where(kv => dict.TryGetValue(kv.Key, out var v) && !v.shape.SequenceEqual(kv.Value.shape))
            .Select(kv => $"{kv.Key}: expected [{string.Join(", ", kv.Value.shape)}], file has [{string.Join(", ", dict[kv.Key].shape)}]").ToList();
        if (missing.Count > 0 || unexpected.Count > 0 || mismatched.Count > 0)
        {
            var sb = new StringBuilder($"state dict does not fit {module.GetName()} ({own.Count} keys expected, {dict.Count} in file).");
            Append(sb, "missing", missing);
            Append(sb, "unexpected", unexpected);
            Append(sb, "shape mismatch", mismatched);
            throw new CheckpointFormatException(source, sb.ToString());
        }
        using var _ = torch.no_grad();
        foreach (var (key, target) in own)
        {
            var value = dict[key];
            if (!value.dtype.IsFloatingPoint() && target.dtype.IsFloatingPoint())
                throw new CheckpointFormatException(source, $"key '{key}' holds {value.dtype}; a floating-point tensor is expected.");
            target.copy_(value.to(target.dtype, target.device));
        }
    }

    private static void Append(StringBuilder sb, string what, List<string> keys)
    {
        if (keys.Count == 0) return;
        const int Max = 40;
        sb.Append($" {keys.Count} {what}: ").Append(string.Join(", ", keys.Take(Max)));
        if (keys.Count > Max) sb.Append($", ... ({keys.Count - Max} more)");
        sb.Append('.');
    }

    private static bool IsFloatingPoint(this ScalarType t) =>
        t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;

    /// <summary>Reads a weights file into a dictionary. safetensors is read here; other formats need a PyTorch reader.</summary>
    public static Dictionary<string, Tensor> ReadFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Weights file '{path}' does not exist.", path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return SafeTensors.Load(path);
        return PyTorchReader(path);
    }

    /// <summary>Reader for PyTorch zip checkpoints (.pt/.pth/.bin); set by the IO layer.</summary>
    private static Dictionary<string, Tensor> PyTorchReader(string path) =>
        throw new CheckpointFormatException(path,
            "only .safetensors files can be read by this build; convert the PyTorch file to safetensors.");
}
