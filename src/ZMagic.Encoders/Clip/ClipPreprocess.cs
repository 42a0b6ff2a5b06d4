using static TorchSharp.torch;

namespace ZMagic.Encoders.Clip;

/// <summary>CLIP's input normalisation, and FreeDoM's differentiable guidance preprocessing.</summary>
public static class ClipPreprocess
{
    /// <summary>CLIP's per-channel mean on [0, 1] RGB.</summary>
    public static readonly double[] Mean = { 0.48145466, 0.4578275, 0.40821073 };

    /// <summary>CLIP's per-channel standard deviation on [0, 1] RGB.</summary>
    public static readonly double[] Std = { 0.26862954, 0.26130258, 0.27577711 };

    /// <summary>Normalises [0, 1] RGB images [N, 3, H, W] with CLIP's mean and std.</summary>
    public static Tensor NormalizeUnit(Tensor image) => Normalize(image, Mean, Std);

    /// <summary>
    /// Normalises [-1, 1] RGB images with FreeDoM's affine map: mean <c>2 m - 1</c>, std <c>2 s</c> (the same as
    /// mapping to [0, 1] and using CLIP's constants).
    /// </summary>
    public static Tensor NormalizeSignedUnit(Tensor image) =>
        Normalize(image, Mean.Select(m => m * 2 - 1).ToArray(), Std.Select(s => s * 2).ToArray());

    /// <summary>
    /// FreeDoM's CLIP guidance preprocessing of a [-1, 1] image [N, 3, H, W]: bicubic resize to
    /// <paramref name="resolution"/> squared (<c>F.interpolate(mode='bicubic', align_corners=False)</c>, A = -0.75,
    /// no antialiasing), then <see cref="NormalizeSignedUnit"/>. Differentiable.
    /// </summary>
    /// <exception cref="ArgumentException">The input is not [N, 3, H, W].</exception>
    public static Tensor FromSignedUnit(Tensor image, int resolution)
    {
        if (image.ndim != 4 || image.shape[1] != 3)
            throw new ArgumentException($"Expected an RGB image batch [N, 3, H, W]; got [{string.Join(", ", image.shape)}].", nameof(image));
        var x = image.to(ScalarType.Float32);
        if (x.shape[2] != resolution || x.shape[3] != resolution)
            x = nn.functional.interpolate(x, new long[] { resolution, resolution }, mode: InterpolationMode.Bicubic, align_corners: false);
        return NormalizeSignedUnit(x);
    }

    internal static Tensor Normalize(Tensor image, double[] mean, double[] std)
    {
        if (image.ndim != 4 || image.shape[1] != mean.Length)
            throw new ArgumentException($"Expected images [N, {mean.Length}, H, W]; got [{string.Join(", ", image.shape)}].", nameof(image));
        var m = tensor(mean.Select(v => (float)v).ToArray(), ScalarType.Float32, image.device).view(1, -1, 1, 1);
        var s = tensor(std.Select(v => (float)v).ToArray(), ScalarType.Float32, image.device).view(1, -1, 1, 1);
        return (image - m) / s;
    }
}
