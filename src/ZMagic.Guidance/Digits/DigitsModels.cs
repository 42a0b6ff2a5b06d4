using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Digits;

/// <summary>The embedded digits networks and held-out digits, ready to use (float32, eval mode, CPU).</summary>
public static class DigitsModels
{
    /// <summary>Puts a network in eval mode and stops its parameters from requiring gradients.</summary>
    public static void Freeze(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        module.eval();
        foreach (var p in module.parameters()) p.requires_grad = false;
    }

    /// <summary>The embedded guide classifier.</summary>
    public static GuideClassifier LoadGuide()
    {
        var m = new GuideClassifier();
        DigitsWeights.Load(m, DigitsWeights.LoadEmbedded(DigitsWeights.GuideResource), "embedded:" + DigitsWeights.GuideResource);
        Freeze(m);
        return m;
    }

    /// <summary>The embedded judge classifier (for evaluation only).</summary>
    public static JudgeClassifier LoadJudge()
    {
        var m = new JudgeClassifier();
        DigitsWeights.Load(m, DigitsWeights.LoadEmbedded(DigitsWeights.JudgeResource), "embedded:" + DigitsWeights.JudgeResource);
        Freeze(m);
        return m;
    }

    /// <summary>The embedded held-out digits: images [M, 1, 32, 32] in [-1, 1] and labels [M] (int64).</summary>
    public static (Tensor Images, Tensor Labels) LoadHeldOut()
    {
        var d = DigitsWeights.LoadEmbedded(DigitsWeights.HeldOutResource);
        if (!d.TryGetValue("images", out var img) || !d.TryGetValue("labels", out var lab))
            throw new Core.IO.CheckpointFormatException("embedded:" + DigitsWeights.HeldOutResource, "needs 'images' and 'labels'.");
        long m = img.shape[0];
        var bytes = img.contiguous().data<byte>().ToArray();
        var images = MnistData.ToModelSpace(bytes, (int)m);
        var labels = lab.to(ScalarType.Int64);
        img.Dispose();
        return (images, labels);
    }
}
