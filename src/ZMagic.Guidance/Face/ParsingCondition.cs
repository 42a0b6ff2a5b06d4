using TorchSharp;
using ZMagic.Encoders.Face;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Face;

/// <summary>
/// Face parsing, as FreeDoM's <c>FaceParseTool</c>: the energy of x0 compares BiSeNet's 19-class logit map of x0 with a
/// reference image's logit map, or with a target label map.
/// </summary>
/// <remarks>
/// <para>Input: x0 [B, 3, H, W], RGB in [-1, 1], any size: bicubic resize to <see cref="ParsingOptions.InputSize"/>
/// (512), then ImageNet normalisation of <c>(x + 1) / 2</c>; the main head's logits [B, 19, 512, 512] are used.</para>
/// <para>Reference image: energy per item = <c>||ref_logits - logits(x0_b)||_2</c> over the whole map (FreeDoM's norm
/// over the whole batch equals this for batch 1). FreeDoM's own reference image goes through PIL bilinear resizing to
/// 512; here the reference takes the same path as x0, so identical images give zero energy.</para>
/// <para>Target label map [H, W] or [1 or B, H, W] of class ids (0..18; resized with nearest neighbour to the parsing
/// size when needed): <see cref="ParsingLabelLoss.CrossEntropy"/> gives the per-item mean pixel cross-entropy;
/// <see cref="ParsingLabelLoss.OneHotResidual"/> the per-item L2 norm of <c>one_hot - softmax(logits)</c>.</para>
/// </remarks>
public sealed class ParsingCondition : FaceConditionBase
{
    private readonly BiSeNet _net;
    private readonly int _size;
    private readonly bool _labels;
    private readonly ParsingLabelLoss _loss;

    /// <summary>Parses <paramref name="referenceImage"/> ([1 or B, 3, H, W] in [-1, 1]) as the target logit map.</summary>
    public ParsingCondition(BiSeNet net, Tensor referenceImage, ParsingOptions? options = null)
        : this(net, options ?? new ParsingOptions(), ReferenceLogits(net, referenceImage, options ?? new ParsingOptions()), labels: false)
    {
    }

    private ParsingCondition(BiSeNet net, ParsingOptions options, Tensor target, bool labels) : base(options, target)
    {
        _net = net;
        _size = options.InputSize;
        _labels = labels;
        _loss = options.LabelLoss;
        target.Dispose();
    }

    /// <summary>A condition towards a label map of class ids ([H, W] or [1 or B, H, W], integer).</summary>
    public static ParsingCondition FromLabelMap(BiSeNet net, Tensor labels, ParsingOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(net);
        ArgumentNullException.ThrowIfNull(labels);
        options ??= new ParsingOptions();
        CheckSize(options);
        if (labels.is_floating_point() || labels.dtype == ScalarType.Bool)
            throw new ArgumentException($"parsing label map: expected integer class ids, got {labels.dtype}.", nameof(labels));
        if (labels.dim() == 2) labels = labels.unsqueeze(0);
        if (labels.dim() != 3 || labels.shape[0] < 1 || labels.shape[1] < 1 || labels.shape[2] < 1)
            throw new ArgumentException($"parsing label map: expected [H, W] or [B, H, W], got [{string.Join(", ", labels.shape)}].", nameof(labels));
        using var scope = NewDisposeScope();
        var l = labels.to(ScalarType.Int64);
        long min = l.min().item<long>(), max = l.max().item<long>();
        if (min < 0 || max >= net.NumClasses)
            throw new ArgumentException($"parsing label map: class ids must be in 0..{net.NumClasses - 1}, got {min}..{max}.", nameof(labels));
        if (l.shape[1] != options.InputSize || l.shape[2] != options.InputSize)
            l = nn.functional.interpolate(l.unsqueeze(1).to(ScalarType.Float32), [options.InputSize, options.InputSize], mode: InterpolationMode.Nearest)
                .squeeze(1).to(ScalarType.Int64);
        FaceCheckpoints.Freeze(net);
        return new ParsingCondition(net, options, l.detach().MoveToOuterDisposeScope(), labels: true);
    }

    private static void CheckSize(ParsingOptions options)
    {
        if (options.InputSize < 32)
            throw new ArgumentOutOfRangeException(nameof(options), options.InputSize, "parsing input size must be at least 32 (BiSeNet downsamples 32x); FreeDoM uses 512.");
    }

    private static Tensor ReferenceLogits(BiSeNet net, Tensor image, ParsingOptions options)
    {
        ArgumentNullException.ThrowIfNull(net);
        ArgumentNullException.ThrowIfNull(image);
        CheckSize(options);
        FaceCheckpoints.Freeze(net);
        CheckReference(image, "parsing condition");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return net.Logits(FacePreprocessing.ParsingInput(image, options.InputSize)).detach().MoveToOuterDisposeScope();
    }

    /// <summary>The main-head logits [B, 19, S, S] of x0 (differentiable).</summary>
    public Tensor Logits(Tensor x0)
    {
        CheckInput(x0);
        using var scope = NewDisposeScope();
        return _net.Logits(FacePreprocessing.ParsingInput(x0, _size)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var logits = Logits(x0);
        if (!_labels) return PerItemNorm(TargetFor(logits) - logits).MoveToOuterDisposeScope();
        var labels = TargetFor(logits, keepDType: true).expand(logits.shape[0], -1, -1);
        Tensor e = _loss switch
        {
            ParsingLabelLoss.CrossEntropy => nn.functional.cross_entropy(logits, labels, reduction: nn.Reduction.None).flatten(1).mean([1]),
            ParsingLabelLoss.OneHotResidual => PerItemNorm(nn.functional.one_hot(labels, _net.NumClasses).permute(0, 3, 1, 2).to(logits.dtype) - logits.softmax(1)),
            _ => throw new InvalidOperationException($"unknown label loss {_loss}"),
        };
        return e.MoveToOuterDisposeScope();
    }
}
