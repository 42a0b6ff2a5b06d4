using static TorchSharp.torch;

namespace ZMagic.Models.Nn;

/// <summary>Small functional helpers shared by the backbones.</summary>
internal static class Act
{
    /// <summary><c>x * sigmoid(x)</c>, written as the ermongroup code writes it (not fused SiLU).</summary>
    public static Tensor Swish(Tensor x) => x * x.sigmoid();
}
