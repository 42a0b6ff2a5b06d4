using ZMagic.Core.Diffusion;
using TorchSharp;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

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

    /// <summary>
    /// The prior's network: the project's DDPM UNet (ermongroup layout) with a small config, run on the 4x4
    /// space-to-depth view of the 32x32 digit (16 channels at 8x8; see <see cref="DigitsDenoiser"/>): ch 32,
    /// ch_mult [1, 2, 2], one res block per level, attention only in the middle block, linear betas over 1000 steps.
    /// </summary>
    public static DdpmUNetConfig PriorConfig { get; } = new()
    {
        Ch = 32,
        OutCh = DigitsDenoiser.Factor * DigitsDenoiser.Factor,
        ChMult = [1, 2, 2],
        NumResBlocks = 1,
        AttnResolutions = [],
        Dropout = 0.0,
        InChannels = DigitsDenoiser.Factor * DigitsDenoiser.Factor,
        Resolution = MnistData.Size / DigitsDenoiser.Factor,
        ResampWithConv = true,
    };

    /// <summary>What the embedded prior's network predicts.</summary>
    public const PredictionType EmbeddedPriorOutput = PredictionType.VPrediction;

    /// <summary>Metadata key of a prior file that says what its network predicts ("epsilon" or "v"; absent: epsilon).</summary>
    public const string PredictionMetadataKey = "prediction";

    /// <summary>What the network in a prior file predicts, from its metadata (null: no file or no entry).</summary>
    /// <exception cref="Core.IO.CheckpointFormatException">The entry is neither "epsilon" nor "v".</exception>
    public static PredictionType? PriorOutputOf(string? path)
    {
        if (path is null || !File.Exists(path)) return null;
        return Core.IO.SafeTensors.ReadMetadata(path).GetValueOrDefault(PredictionMetadataKey) switch
        {
            null => null,
            "epsilon" => PredictionType.Epsilon,
            "v" => PredictionType.VPrediction,
            var other => throw new Core.IO.CheckpointFormatException(path, $"metadata '{PredictionMetadataKey}' must be 'epsilon' or 'v'; got '{other}'."),
        };
    }

    /// <summary>The embedded prior as a 1-channel 32x32 denoiser (float32, CPU, eval mode).</summary>
    public static DigitsDenoiser LoadPrior() => LoadPrior(null);

    /// <summary>A digits prior from a safetensors file written by <c>zmagic train digits</c> (null: the embedded one).</summary>
    /// <exception cref="Core.IO.CheckpointFormatException">The file is not a prior of <see cref="PriorConfig"/>.</exception>
    public static DigitsDenoiser LoadPrior(string? path)
    {
        var inner = new DdpmDenoiser(PriorConfig);
        try
        {
            PredictionType output;
            if (path is null)
            {
                inner.LoadStateDict(DigitsWeights.LoadEmbedded(DigitsWeights.PriorResource), "embedded:" + DigitsWeights.PriorResource);
                output = PriorOutputOf(DigitsWeights.EmbeddedOverridePath(DigitsWeights.PriorResource)) ?? EmbeddedPriorOutput;
            }
            else
            {
                inner.LoadStateDict(Core.IO.SafeTensors.Load(path), path);
                output = PriorOutputOf(path) ?? PredictionType.Epsilon;
            }
            Freeze(inner.Module);
            return new DigitsDenoiser(inner, output);
        }
        catch
        {
            inner.Dispose();
            throw;
        }
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
