using TorchSharp;
using ZMagic.Encoders.Face;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Face;

/// <summary>
/// Face identity, as FreeDoM's <c>IDLoss</c>: the energy of x0 is the distance between its identity embedding and a
/// reference's.
/// </summary>
/// <remarks>
/// <para>Input: x0 [B, 3, H, W], RGB in [-1, 1] (the denoiser's space), any size: when H != 256 it is first
/// average-pooled to 256x256 (<c>AdaptiveAvgPool2d</c>), then the fixed face region rows 35..222, columns 32..219 is
/// cropped and pooled to the network's face size (112). This fixed crop fits aligned faces like CelebA-HQ's.</para>
/// <para>Distance (per item b): <see cref="IdentityDistance.L2"/> gives <c>||ref - f(x0_b)||_2</c>; FreeDoM takes one
/// norm over the whole batch, which equals this for batch 1. <see cref="IdentityDistance.Cosine"/> gives
/// <c>1 - cos(ref, f(x0_b))</c>.</para>
/// <para>The reference is encoded once, here. The network is put in eval mode and its parameters frozen.</para>
/// </remarks>
public sealed class IdentityCondition : FaceConditionBase
{
    private readonly IFaceEmbedder _encoder;
    private readonly IdentityDistance _distance;

    /// <summary>Encodes <paramref name="referenceImage"/> ([1 or B, 3, H, W] in [-1, 1]) as the target identity.</summary>
    /// <param name="encoder">IR-SE50 (<see cref="IrSeBackbone"/>, FreeDoM's) or <see cref="IResNet"/>.</param>
    /// <param name="referenceImage">The reference face(s), framed like x0.</param>
    /// <param name="options">Scale, step rule, window, distance (default FreeDoM's).</param>
    public IdentityCondition(IFaceEmbedder encoder, Tensor referenceImage, IdentityOptions? options = null)
        : this(encoder, EncodeReference(encoder, referenceImage), options ?? new IdentityOptions(), encoded: true)
    {
    }

    private IdentityCondition(IFaceEmbedder encoder, Tensor target, IdentityOptions options, bool encoded)
        : base(options, target)
    {
        _ = encoded;
        _encoder = encoder;
        _distance = options.Distance;
        target.Dispose();
    }

    /// <summary>A condition towards a given embedding [1 or B, D] (e.g. computed elsewhere or averaged over photos).</summary>
    public static IdentityCondition FromEmbedding(IFaceEmbedder encoder, Tensor embedding, IdentityOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(embedding);
        if (embedding.dim() != 2 || embedding.shape[1] != encoder.EmbeddingSize || embedding.shape[0] < 1)
            throw new ArgumentException($"identity embedding: expected [1 or B, {encoder.EmbeddingSize}], got [{string.Join(", ", embedding.shape)}].", nameof(embedding));
        if (!embedding.is_floating_point()) throw new ArgumentException($"identity embedding: expected floating point, got {embedding.dtype}.", nameof(embedding));
        return new IdentityCondition(encoder, embedding.detach().clone(), options ?? new IdentityOptions(), encoded: true);
    }

    private static Tensor EncodeReference(IFaceEmbedder encoder, Tensor referenceImage)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        ArgumentNullException.ThrowIfNull(referenceImage);
        if (encoder is nn.Module m) FaceCheckpoints.Freeze(m);
        CheckReference(referenceImage, "identity condition");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var feat = encoder.Embed(FacePreprocessing.ArcFaceInput(referenceImage, encoder.FaceSize));
        return feat.detach().MoveToOuterDisposeScope();
    }

    /// <summary>The identity embeddings [B, D] of x0 (differentiable).</summary>
    public Tensor Embed(Tensor x0)
    {
        CheckInput(x0);
        using var scope = NewDisposeScope();
        return _encoder.Embed(FacePreprocessing.ArcFaceInput(x0, _encoder.FaceSize)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override Tensor Energy(Tensor x0)
    {
        using var scope = NewDisposeScope();
        var feat = Embed(x0);
        var target = TargetFor(feat);
        Tensor e = _distance switch
        {
            IdentityDistance.L2 => PerItemNorm(target - feat),
            IdentityDistance.Cosine => 1 - nn.functional.cosine_similarity(target.expand_as(feat), feat, 1, 1e-8),
            _ => throw new InvalidOperationException($"unknown distance {_distance}"),
        };
        return e.MoveToOuterDisposeScope();
    }
}
