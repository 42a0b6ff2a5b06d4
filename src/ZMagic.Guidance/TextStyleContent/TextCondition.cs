using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Encoders.Clip;
using static TorchSharp.torch;

namespace ZMagic.Guidance.TextStyleContent;

/// <summary>How the text condition compares CLIP features.</summary>
public enum TextMetric
{
    /// <summary>FreeDoM: the plain L2 norm of <c>encode_text(prompt) - encode_image(x0)</c>, unnormalised features.</summary>
    L2,

    /// <summary><c>1 - cos(encode_text(prompt), encode_image(x0))</c>: insensitive to feature magnitudes.</summary>
    Cosine,
}

/// <summary>Options of a <see cref="TextCondition"/>.</summary>
public sealed record TextConditionOptions
{
    /// <summary>Name in traces (unique per sampler run).</summary>
    public string Name { get; init; } = "text";

    /// <summary>Feature comparison; FreeDoM's <see cref="TextMetric.L2"/> by default.</summary>
    public TextMetric Metric { get; init; } = TextMetric.L2;

    /// <summary>Step size and window; FreeDoM's CLIP rule <c>NormRelativeStepSize(0.02)</c>, always active, by default.</summary>
    public GuidanceSchedule Schedule { get; init; } = new(new NormRelativeStepSize(0.02));
}

/// <summary>
/// Text guidance with CLIP, as FreeDoM's <c>CLIPEncoder.get_residual</c>: x0 in [-1, 1] is resized bicubically to
/// CLIP's resolution, normalised, encoded; the prompt is encoded once, at construction.
/// </summary>
/// <remarks>
/// Energy per item is <c>||t - f(x0_b)||</c>. FreeDoM takes one Frobenius norm over the whole batch; for one image
/// the two agree, and per-item energies keep batch items independent.
/// </remarks>
public sealed class TextCondition : IGuidanceCondition, IDisposable
{
    private readonly ClipModel _clip;
    private readonly Tensor _text;
    private readonly TextMetric _metric;

    /// <summary>Creates the condition from token ids [1, ContextLength] (or [B, ContextLength], one prompt per item).</summary>
    /// <exception cref="ArgumentException">The tokens are not CLIP token rows.</exception>
    public TextCondition(ClipModel clip, Tensor tokens, TextConditionOptions? options = null)
    {
        _clip = clip ?? throw new ArgumentNullException(nameof(clip));
        ArgumentNullException.ThrowIfNull(tokens);
        options ??= new TextConditionOptions();
        Name = options.Name;
        Schedule = options.Schedule;
        _metric = options.Metric;
        using (torch.no_grad())
            _text = clip.EncodeText(tokens.to(clip.Device)).detach().DetachFromDisposeScope();
    }

    /// <summary>Creates the condition from a prompt, tokenised with <paramref name="tokenizer"/>.</summary>
    public TextCondition(ClipModel clip, ClipTokenizer tokenizer, string prompt, TextConditionOptions? options = null)
        : this(clip, Tokens(tokenizer, prompt), options)
    {
    }

    private static Tensor Tokens(ClipTokenizer tokenizer, string prompt)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return tokenizer.Tokenize(prompt);
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <summary>The prompt's CLIP features [1 or B, EmbedDim] (encoded once).</summary>
    public Tensor TextFeatures => _text;

    /// <summary>Releases the cached prompt features (the CLIP model is not owned and stays alive).</summary>
    public void Dispose() => _text.Dispose();

    /// <inheritdoc />
    public Tensor Energy(Tensor x0)
    {
        ObjectDisposedException.ThrowIf(_text.IsInvalid, this);
        ConditionInputs.CheckImage(x0, nameof(x0));
        var image = _clip.EncodeImage(ClipPreprocess.FromSignedUnit(x0, _clip.Config.ImageResolution));
        var text = ConditionInputs.Broadcast(_text, image.shape[0], "text features");
        if (_metric == TextMetric.L2) return (text - image).norm(1);
        var cos = (text * image).sum(1) / (text.norm(1) * image.norm(1)).clamp_min(1e-12);
        return 1 - cos;
    }
}

/// <summary>Shared input checks of the text, style and content conditions.</summary>
internal static class ConditionInputs
{
    public static void CheckImage(Tensor x, string name)
    {
        if (x.ndim != 4 || x.shape[1] != 3)
            throw new ArgumentException($"{name} must be an RGB batch [B, 3, H, W] in [-1, 1]; got [{string.Join(", ", x.shape)}].", name);
    }

    /// <summary>Repeats a [1, ...] reference to <paramref name="batch"/> items; a [B, ...] reference must match.</summary>
    public static Tensor Broadcast(Tensor reference, long batch, string what)
    {
        if (reference.shape[0] == batch) return reference;
        if (reference.shape[0] == 1) return reference.expand(new[] { batch }.Concat(reference.shape.Skip(1)).ToArray());
        throw new ArgumentException($"The {what} hold {reference.shape[0]} items but x0 has {batch}; give one reference or one per item.");
    }
}
