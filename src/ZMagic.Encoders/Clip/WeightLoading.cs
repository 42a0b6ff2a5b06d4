using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Clip;

/// <summary>
/// Strict state-dict loading for the encoders, on top of <see cref="StateDictLoader"/>: every missing, unexpected
/// and mis-shaped key is named, nothing is copied unless everything fits, and fp16 files become fp32.
/// </summary>
internal static class WeightLoading
{
    /// <summary>
    /// Copies <paramref name="dict"/> into <paramref name="module"/>; file keys matching a glob in
    /// <paramref name="ignoreUnexpected"/> are skipped silently.
    /// </summary>
    /// <exception cref="StateDictMismatchException">Keys are missing or unexpected, or shapes differ.</exception>
    public static StateDictLoadReport Load(nn.Module module, IReadOnlyDictionary<string, Tensor> dict, string source, params string[] ignoreUnexpected) =>
        StateDictLoader.Load(module, dict, new StateDictLoadOptions { SourceName = source, IgnoreUnexpected = ignoreUnexpected });

    /// <summary>Reads a safetensors or PyTorch (zip) checkpoint file into a dictionary.</summary>
    public static Dictionary<string, Tensor> ReadFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Weights file '{path}' does not exist.", path);
        return Checkpoint.LoadStateDict(path);
    }
}
