using static TorchSharp.torch;

namespace ZMagic.Encoders.Face;

/// <summary>
/// A face-recognition network that maps aligned RGB faces [B, 3, S, S] in [-1, 1] to identity embeddings [B, D].
/// Implemented by <see cref="IrSeBackbone"/> (FreeDoM's ArcFace IR-SE50) and <see cref="IResNet"/> (insightface
/// arcface_torch), so an identity condition can use either.
/// </summary>
public interface IFaceEmbedder
{
    /// <summary>The face side length S the network expects (112 for both shipped backbones).</summary>
    long FaceSize { get; }

    /// <summary>The embedding size D.</summary>
    long EmbeddingSize { get; }

    /// <summary>Embeds faces [B, 3, S, S] in [-1, 1]; differentiable with respect to the input.</summary>
    Tensor Embed(Tensor faces);
}
