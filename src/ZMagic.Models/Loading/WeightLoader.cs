using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Models.Loading;

/// <summary>
/// Strict state-dict loading for the backbones: checks every key and shape first, then copies (casting fp16/bf16/fp64 to the
/// module's dtype), so a failed load leaves the module untouched.
/// </summary>
public static class WeightLoader
{
    /// <summary>
    /// Reads a checkpoint file into a flat state dict on the CPU. Supported: safetensors (<c>.safetensors</c>); PyTorch pickles
    /// (<c>.pt</c>, <c>.pth</c>, <c>.ckpt</c>, <c>.pth.tar</c>) through ZMagic.Core's checkpoint reader once it is available.
    /// A <c>state_dict</c> / <c>model</c> wrapper and a DataParallel <c>module.</c> prefix are removed.
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="CheckpointFormatException">The file is truncated, corrupt or of an unsupported kind.</exception>
    public static Dictionary<string, Tensor> ReadStateDict(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint not found: {path}", path);
        Dictionary<string, Tensor> sd;
        if (IsSafeTensors(path)) sd = SafeTensors.Load(path);
        else throw new CheckpointFormatException(path, "not a safetensors file, and PyTorch pickle checkpoints (.pt/.pth/.ckpt) are not supported by this build; convert it to .safetensors.");
        return StripPrefix(sd, "module.");
    }

    /// <summary>Removes <paramref name="prefix"/> when every key carries it (DataParallel's <c>module.</c>).</summary>
    public static Dictionary<string, Tensor> StripPrefix(Dictionary<string, Tensor> sd, string prefix)
    {
        ArgumentNullException.ThrowIfNull(sd);
        if (sd.Count == 0 || !sd.Keys.All(k => k.StartsWith(prefix, StringComparison.Ordinal))) return sd;
        return sd.ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value, StringComparer.Ordinal);
    }

    /// <summary>
    /// Copies <paramref name="stateDict"/> into <paramref name="module"/> after checking that the key sets are equal and every shape
    /// matches; otherwise throws <see cref="StateDictMismatchException"/> and copies nothing.
    /// </summary>
    /// <param name="module">Target module (parameters keep their dtype and device).</param>
    /// <param name="stateDict">Source tensors (any floating dtype, any device).</param>
    /// <param name="source">Name used in error messages (file path).</param>
    /// <param name="architecture">What the module is, for error messages.</param>
    /// <param name="hint">Optional guess at what the checkpoint is instead, added to the message on mismatch.</param>
    public static void LoadInto(nn.Module module, IReadOnlyDictionary<string, Tensor> stateDict, string source, string architecture, Func<IReadOnlyDictionary<string, Tensor>, string?>? hint = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(stateDict);
        var target = module.state_dict();
        var missing = target.Keys.Where(k => !stateDict.ContainsKey(k)).ToList();
        var unexpected = stateDict.Keys.Where(k => !target.ContainsKey(k)).ToList();
        var mismatched = new List<ShapeMismatch>();
        foreach (var (key, dst) in target)
        {
            if (!stateDict.TryGetValue(key, out var src)) continue;
            if (!src.shape.SequenceEqual(dst.shape)) mismatched.Add(new ShapeMismatch(key, dst.shape, src.shape));
        }
        if (missing.Count > 0 || unexpected.Count > 0 || mismatched.Count > 0)
            throw new StateDictMismatchException(source, architecture, missing, unexpected, mismatched, hint?.Invoke(stateDict));
        foreach (var (key, dst) in target)
        {
            var src = stateDict[key];
            if (!src.is_floating_point() && dst.is_floating_point())
                throw new CheckpointFormatException(source, $"tensor '{key}' has dtype {src.dtype}; a floating-point tensor is needed.");
        }
        using var noGrad = torch.no_grad();
        foreach (var (key, dst) in target)
        {
            var src = stateDict[key];
            if (src.dtype == dst.dtype && src.device_type == dst.device_type && src.device_index == dst.device_index) dst.copy_(src);
            else
            {
                using var cast = src.to(dst.dtype, dst.device);
                dst.copy_(cast);
            }
        }
    }

    private static bool IsSafeTensors(string path)
    {
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return true;
        // A PyTorch zip checkpoint starts with "PK"; a legacy pickle with 0x80. Anything else is tried as safetensors.
        using var fs = File.OpenRead(path);
        Span<byte> head = stackalloc byte[2];
        int n = fs.Read(head);
        return !(n == 2 && ((head[0] == (byte)'P' && head[1] == (byte)'K') || head[0] == 0x80));
    }
}
