using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Models.Loading;

/// <summary>
/// A checkpoint does not fit a backbone: the <see cref="StateDictMismatchException.Report"/> lists every missing, unexpected and
/// shape-mismatched key; the message also names the architecture and, when recognisable, what the file seems to be instead.
/// Nothing was copied into the module.
/// </summary>
public sealed class BackboneCheckpointMismatchException : StateDictMismatchException
{
    private readonly string _prefix;

    /// <summary>Wraps a loader report with the backbone description and an optional hint.</summary>
    public BackboneCheckpointMismatchException(StateDictLoadReport report, string architecture, string? hint)
        : base(report)
    {
        Architecture = architecture;
        Hint = hint;
        _prefix = $"checkpoint does not fit the {architecture}" + (hint is null ? "" : $" ({hint})") + ". ";
    }

    /// <summary>The backbone the checkpoint was loaded into.</summary>
    public string Architecture { get; }

    /// <summary>What the checkpoint looks like instead, if recognised.</summary>
    public string? Hint { get; }

    /// <inheritdoc />
    public override string Message => _prefix + base.Message;
}

/// <summary>
/// Checkpoint loading for the backbones on top of ZMagic.Core's <see cref="Checkpoint"/> reader and <see cref="StateDictLoader"/>:
/// strict (every key and shape must match), validate-before-copy, fp16/bf16 cast to the module's dtype.
/// </summary>
public static class WeightLoader
{
    /// <summary>
    /// Reads a checkpoint file (safetensors or PyTorch zip: .pt/.pth/.ckpt/.pth.tar, safe unpickler) into a flat CPU state dict;
    /// <c>state_dict</c>-style wrappers are unwrapped by the reader.
    /// </summary>
    /// <exception cref="FileNotFoundException">No such file.</exception>
    /// <exception cref="CheckpointFormatException">The file is truncated, corrupt, hostile or of an unsupported kind.</exception>
    public static Dictionary<string, Tensor> ReadStateDict(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint not found: {path}", path);
        return Checkpoint.LoadStateDict(path);
    }

    /// <summary>
    /// Copies <paramref name="stateDict"/> into <paramref name="module"/> after checking that the key sets are equal and every shape
    /// matches (a DataParallel <c>module.</c> prefix is stripped); otherwise throws and copies nothing.
    /// </summary>
    /// <param name="module">Target module (parameters keep their dtype and device).</param>
    /// <param name="stateDict">Source tensors (any floating dtype, any device).</param>
    /// <param name="source">Name used in error messages (file path).</param>
    /// <param name="architecture">What the module is, for error messages.</param>
    /// <param name="hint">Optional guess at what the checkpoint is instead, added to the message on mismatch.</param>
    /// <exception cref="BackboneCheckpointMismatchException">Keys or shapes differ.</exception>
    public static StateDictLoadReport LoadInto(nn.Module module, IReadOnlyDictionary<string, Tensor> stateDict, string source, string architecture,
        Func<IReadOnlyDictionary<string, Tensor>, string?>? hint = null)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(stateDict);
        try
        {
            return StateDictLoader.Load(module, stateDict, new StateDictLoadOptions { SourceName = source, UseDefaultOptionalKeys = false });
        }
        catch (StateDictMismatchException e) when (e is not BackboneCheckpointMismatchException)
        {
            throw new BackboneCheckpointMismatchException(e.Report, architecture, hint?.Invoke(stateDict));
        }
    }
}
