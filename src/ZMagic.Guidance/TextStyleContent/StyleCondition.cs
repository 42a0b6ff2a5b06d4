using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Encoders.Clip;
using ZMagic.Encoders.Vgg;
using static TorchSharp.torch;

namespace ZMagic.Guidance.TextStyleContent;

/// <summary>Options of a <see cref="StyleCondition"/>.</summary>
public sealed record StyleConditionOptions
{
    /// <summary>Name in traces.</summary>
    public string Name { get; init; } = "style";

    /// <summary>Step size and window (default: the norm-relative rule with scale 0.02).</summary>
    public GuidanceSchedule Schedule { get; init; } = new(new NormRelativeStepSize(0.02));

    /// <summary>
    /// CLIP backend: index of the image block whose output tokens form the Gram matrix. FreeDoM uses 2 (the output
    /// of the third residual block, <c>feats[2]</c>).
    /// </summary>
    public int ClipBlock { get; init; } = 2;

    /// <summary>VGG backend: the layers whose normalised Gram matrices are compared.</summary>
    public IReadOnlyList<string> VggLayers { get; init; } = new[] { "relu1_1", "relu2_1", "relu3_1", "relu4_1" };

    /// <summary>VGG backend: per-layer weights (null: all 1), multiplying each layer's Gram residual.</summary>
    public IReadOnlyList<double>? VggLayerWeights { get; init; }
}

/// <summary>
/// Style guidance: the distance between Gram matrices of x0 and of a reference image, from CLIP's intermediate
/// image tokens (FreeDoM's <c>get_gram_matrix_residual</c>) or from VGG layers (neural style transfer).
/// The reference's Gram matrices are computed once, at construction.
/// </summary>
/// <remarks>
/// <para>CLIP: both images are resized bicubically to CLIP's resolution and normalised from [-1, 1]; the patch tokens
/// (class token dropped) of block <see cref="StyleConditionOptions.ClipBlock"/> give <c>G = F^T F</c> [D, D],
/// unnormalised as in FreeDoM. FreeDoM prepares its reference with PIL (bilinear resize of a file) and uses only
/// batch item 0; here the reference is a [-1, 1] tensor resized like x0, and every item gets its own Gram.</para>
/// <para>VGG: ImageNet normalisation from [-1, 1], <c>G = F F^T / (C H W)</c> per layer; sizes of x0 and the
/// reference may differ.</para>
/// <para>Energy per item: the L2 norm of all (weighted) Gram residuals together.</para>
/// </remarks>
public sealed class StyleCondition : IGuidanceCondition, IDisposable
{
    private readonly Func<Tensor, Tensor[]> _grams;
    private readonly Tensor[] _reference;
    private readonly double[] _weights;

    private StyleCondition(Func<Tensor, Tensor[]> grams, Tensor reference, double[] weights, StyleConditionOptions options)
    {
        ConditionInputs.CheckImage(reference, nameof(reference));
        _grams = grams;
        _weights = weights;
        Name = options.Name;
        Schedule = options.Schedule;
        using (torch.no_grad())
            _reference = grams(reference).Select(g => g.detach().DetachFromDisposeScope()).ToArray();
    }

    /// <summary>Style from CLIP ViT tokens (FreeDoM). <paramref name="reference"/> is [1 or B, 3, H, W] in [-1, 1].</summary>
    /// <exception cref="ArgumentException">The block index is outside the model, or the reference is not RGB.</exception>
    public static StyleCondition Clip(ClipModel clip, Tensor reference, StyleConditionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(clip);
        ArgumentNullException.ThrowIfNull(reference);
        options ??= new StyleConditionOptions();
        int block = options.ClipBlock;
        if (block < 0 || block >= clip.Config.VisionLayers)
            throw new ArgumentException($"ClipBlock {block} is outside the image tower's {clip.Config.VisionLayers} blocks.", nameof(options));
        Tensor[] Grams(Tensor x)
        {
            var (_, tokens) = clip.EncodeImageWithFeatures(ClipPreprocess.FromSignedUnit(x, clip.Config.ImageResolution));
            var f = tokens[block][.., 1.., ..];
            return new[] { torch.matmul(f.transpose(1, 2), f) };
        }
        return new StyleCondition(Grams, reference.to(clip.Device), new[] { 1.0 }, options);
    }

    /// <summary>Style from VGG Gram matrices. <paramref name="reference"/> is [1 or B, 3, H, W] in [-1, 1].</summary>
    /// <exception cref="ArgumentException">Unknown layers, or weights that do not pair with the layers.</exception>
    public static StyleCondition Vgg(VggFeatures vgg, Tensor reference, StyleConditionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(vgg);
        ArgumentNullException.ThrowIfNull(reference);
        options ??= new StyleConditionOptions();
        var layers = options.VggLayers.ToArray();
        if (layers.Length == 0) throw new ArgumentException("VggLayers is empty.", nameof(options));
        foreach (var l in layers) vgg.IndexOf(l);
        var weights = options.VggLayerWeights?.ToArray() ?? Enumerable.Repeat(1.0, layers.Length).ToArray();
        if (weights.Length != layers.Length)
            throw new ArgumentException($"VggLayerWeights has {weights.Length} entries for {layers.Length} layers.", nameof(options));
        Tensor[] Grams(Tensor x)
        {
            var acts = vgg.Extract(VggFeatures.NormalizeSignedUnit(x.to(vgg.ParameterType)), layers);
            return layers.Select(l => VggFeatures.Gram(acts[l])).ToArray();
        }
        return new StyleCondition(Grams, reference.to(vgg.Device), weights, options);
    }

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    /// <summary>The reference's Gram matrices (one per layer), computed once.</summary>
    public IReadOnlyList<Tensor> ReferenceGrams => _reference;

    /// <summary>Releases the cached reference Gram matrices (the encoder is not owned and stays alive).</summary>
    public void Dispose()
    {
        foreach (var g in _reference) g.Dispose();
    }

    /// <inheritdoc />
    public Tensor Energy(Tensor x0)
    {
        ObjectDisposedException.ThrowIf(_reference[0].IsInvalid, this);
        ConditionInputs.CheckImage(x0, nameof(x0));
        var grams = _grams(x0);
        long b = x0.shape[0];
        Tensor? total = null;
        for (int i = 0; i < grams.Length; i++)
        {
            var r = (grams[i] - ConditionInputs.Broadcast(_reference[i], b, "reference Gram matrices")) * _weights[i];
            var sq = r.square().reshape(b, -1).sum(1);
            total = total is null ? sq : total + sq;
        }
        return total!.sqrt();
    }
}
