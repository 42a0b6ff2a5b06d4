using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Encoders.Vgg;
using static TorchSharp.torch;

namespace ZMagic.Guidance.TextStyleContent;

/// <summary>How content features are normalised before comparison.</summary>
public enum ContentNormalization
{
    /// <summary>Raw activations.</summary>
    None,

    /// <summary>Each channel's map to zero mean and unit variance (instance normalisation without affine; eps 1e-5).</summary>
    PerChannel,

    /// <summary>Each position's channel vector to unit length (as LPIPS), eps 1e-10.</summary>
    PerPosition,
}

/// <summary>Options of a <see cref="ContentCondition"/>.</summary>
public sealed record ContentConditionOptions
{
    /// <summary>Name in traces.</summary>
    public string Name { get; init; } = "content";

    /// <summary>Step size and window (default: the norm-relative rule with scale 0.02).</summary>
    public GuidanceSchedule Schedule { get; init; } = new(new NormRelativeStepSize(0.02));

    /// <summary>The VGG layer compared (default relu2_2).</summary>
    public string Layer { get; init; } = "relu2_2";

    /// <summary>Feature normalisation (default per channel).</summary>
    public ContentNormalization Normalization { get; init; } = ContentNormalization.PerChannel;

    /// <summary>When set, x0 and the reference are resized bicubically to this side before VGG.</summary>
    public int? Resolution { get; init; }
}

/// <summary>
/// Content guidance: the L2 distance between normalised VGG features of x0 and of a reference image (encoded once).
/// Both are [-1, 1] RGB; they must have the same size unless <see cref="ContentConditionOptions.Resolution"/> is set.
/// </summary>
public sealed class ContentCondition : IGuidanceCondition, IDisposable
{
    private readonly VggFeatures _vgg;
    private readonly string _layer;
    private readonly ContentNormalization _norm;
    private readonly int? _resolution;
    private readonly Tensor _reference;
    private readonly long[] _referenceSize;

    /// <summary>Creates the condition. <paramref name="reference"/> is [1 or B, 3, H, W] in [-1, 1].</summary>
    /// <exception cref="ArgumentException">Unknown layer, or the reference is not RGB.</exception>
    public ContentCondition(VggFeatures vgg, Tensor reference, ContentConditionOptions? options = null)
    {
        _vgg = vgg ?? throw new ArgumentNullException(nameof(vgg));
        ArgumentNullException.ThrowIfNull(reference);
        ConditionInputs.CheckImage(reference, nameof(reference));
        options ??= new ContentConditionOptions();
        vgg.IndexOf(options.Layer);
        if (options.Resolution is < 16) throw new ArgumentException($"Resolution must be at least 16; got {options.Resolution}.", nameof(options));
        _layer = options.Layer;
        _norm = options.Normalization;
        _resolution = options.Resolution;
        Name = options.Name;
        Schedule = options.Schedule;
        _referenceSize = new[] { reference.shape[2], reference.shape[3] };
        using (torch.no_grad())
            _reference = Features(reference.to(vgg.Device)).detach().DetachFromDisposeScope();
    }

    /// <summary>Releases the cached reference features (the VGG is not owned and stays alive).</summary>
    public void Dispose() => _reference.Dispose();

    /// <inheritdoc />
    public string Name { get; }

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; }

    private Tensor Features(Tensor x)
    {
        x = x.to(_vgg.ParameterType);
        if (_resolution is int r && (x.shape[2] != r || x.shape[3] != r))
            x = nn.functional.interpolate(x, new long[] { r, r }, mode: InterpolationMode.Bicubic, align_corners: false);
        var f = _vgg.Extract(VggFeatures.NormalizeSignedUnit(x), new[] { _layer })[_layer];
        switch (_norm)
        {
            case ContentNormalization.PerChannel:
                var mean = f.mean(new long[] { 2, 3 }, keepdim: true);
                var variance = f.var(new long[] { 2, 3 }, unbiased: false, keepdim: true);
                return (f - mean) / (variance + 1e-5).sqrt();
            case ContentNormalization.PerPosition:
                return f / (f.square().sum(1, keepdim: true).sqrt() + 1e-10);
            default:
                return f;
        }
    }

    /// <inheritdoc />
    /// <exception cref="ArgumentException">x0's size differs from the reference's and no Resolution is set.</exception>
    public Tensor Energy(Tensor x0)
    {
        ObjectDisposedException.ThrowIf(_reference.IsInvalid, this);
        ConditionInputs.CheckImage(x0, nameof(x0));
        if (_resolution is null && (x0.shape[2] != _referenceSize[0] || x0.shape[3] != _referenceSize[1]))
            throw new ArgumentException(
                $"x0 is {x0.shape[2]}x{x0.shape[3]} but the content reference is {_referenceSize[0]}x{_referenceSize[1]}; " +
                "give a reference of the sample size or set ContentConditionOptions.Resolution.", nameof(x0));
        var f = Features(x0);
        var r = ConditionInputs.Broadcast(_reference, x0.shape[0], "content reference features");
        return (f - r).reshape(x0.shape[0], -1).norm(1);
    }
}
