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
    /// The embedded prior's network: the project's DDPM UNet (ermongroup layout) run on the 4x4 space-to-depth view of
    /// the 32x32 digit (16 channels at 8x8; see <see cref="DigitsDenoiser"/>): ch 32, ch_mult [1, 2, 2], one res block
    /// per level, attention only in the middle block, linear betas over 1000 steps.
    /// </summary>
    public static DdpmUNetConfig PriorConfig { get; } = PriorNetwork(32, 1);

    /// <summary>
    /// A digits prior network of the embedded layout with another width or depth: base channels
    /// <paramref name="ch"/> (a multiple of 32, the UNet's GroupNorm groups; ch_mult [1, 2, 2] on top) and
    /// <paramref name="numResBlocks"/> res blocks per level.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">ch not a multiple of 32 in [32, 1024], or numResBlocks outside [1, 8].</exception>
    public static DdpmUNetConfig PriorNetwork(int ch, int numResBlocks)
    {
        if (ch < 32 || ch > MaxPriorCh || ch % 32 != 0)
            throw new ArgumentOutOfRangeException(nameof(ch), ch, $"The prior's base channels must be a multiple of 32 in [32, {MaxPriorCh}] (GroupNorm has 32 groups).");
        ArgumentOutOfRangeException.ThrowIfLessThan(numResBlocks, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(numResBlocks, MaxPriorResBlocks);
        return new()
        {
            Ch = ch,
            OutCh = DigitsDenoiser.Factor * DigitsDenoiser.Factor,
            ChMult = [1, 2, 2],
            NumResBlocks = numResBlocks,
            AttnResolutions = [],
            Dropout = 0.0,
            InChannels = DigitsDenoiser.Factor * DigitsDenoiser.Factor,
            Resolution = MnistData.Size / DigitsDenoiser.Factor,
            ResampWithConv = true,
        };
    }

    /// <summary>Largest base channel count of a digits prior (<see cref="PriorNetwork"/>; the smallest is 32).</summary>
    public const int MaxPriorCh = 1024;

    /// <summary>Largest number of res blocks per level of a digits prior (<see cref="PriorNetwork"/>).</summary>
    public const int MaxPriorResBlocks = 8;

    /// <summary>
    /// The network of a prior file, read from its tensors' shapes without loading them: base channels from
    /// <c>conv_in.weight</c>, res blocks per level from the <c>down.0.block.N</c> keys. A null path gives the embedded
    /// prior's network (or that of its <see cref="DigitsWeights.OverrideVariable"/> file). A file whose shapes describe
    /// no buildable prior gives <see cref="PriorConfig"/>, so that loading it names the keys and shapes that differ.
    /// </summary>
    /// <exception cref="Core.IO.CheckpointFormatException">The file is not a readable checkpoint.</exception>
    public static DdpmUNetConfig PriorConfigOf(string? path)
    {
        if (path is null)
            return DigitsWeights.EmbeddedOverridePath(DigitsWeights.PriorResource) is { } over ? PriorConfigOf(over) : PriorConfig;
        var entries = Core.IO.Checkpoint.ReadSummary(path).Entries;
        var convIn = entries.FirstOrDefault(e => e.Name == "conv_in.weight");
        int blocks = entries.Select(e => BlockOfFirstLevel(e.Name)).Where(i => i >= 0).Distinct().Count();
        if (convIn is null || convIn.Shape.Length != 4 || convIn.Shape[0] is < 32 or > MaxPriorCh || convIn.Shape[0] % 32 != 0
            || blocks is < 1 or > MaxPriorResBlocks)
            return PriorConfig;
        return PriorNetwork((int)convIn.Shape[0], blocks);

        static int BlockOfFirstLevel(string name)
        {
            const string prefix = "down.0.block.";
            if (!name.StartsWith(prefix, StringComparison.Ordinal)) return -1;
            int dot = name.IndexOf('.', prefix.Length);
            return dot > prefix.Length && int.TryParse(name.AsSpan(prefix.Length, dot - prefix.Length), System.Globalization.NumberStyles.None,
                System.Globalization.CultureInfo.InvariantCulture, out int i) && i < 64 ? i : -1;
        }
    }

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
    /// <exception cref="Core.IO.CheckpointFormatException">The file is not a prior of the network its shapes describe (<see cref="PriorConfigOf"/>).</exception>
    public static DigitsDenoiser LoadPrior(string? path)
    {
        var inner = new DdpmDenoiser(PriorConfigOf(path));
        try
        {
            PredictionType output;
            if (path is null)
            {
                inner.LoadStateDict(DigitsWeights.LoadEmbedded(DigitsWeights.PriorResource), DigitsWeights.SourceName(DigitsWeights.PriorResource));
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
        DigitsWeights.Load(m, DigitsWeights.LoadEmbedded(DigitsWeights.GuideResource), DigitsWeights.SourceName(DigitsWeights.GuideResource));
        Freeze(m);
        return m;
    }

    /// <summary>The embedded judge classifier (for evaluation only).</summary>
    public static JudgeClassifier LoadJudge()
    {
        var m = new JudgeClassifier();
        DigitsWeights.Load(m, DigitsWeights.LoadEmbedded(DigitsWeights.JudgeResource), DigitsWeights.SourceName(DigitsWeights.JudgeResource));
        Freeze(m);
        return m;
    }

    /// <summary>The embedded held-out digits: images [M, 1, 32, 32] in [-1, 1] and labels [M] (int64).</summary>
    public static (Tensor Images, Tensor Labels) LoadHeldOut()
    {
        var d = DigitsWeights.LoadEmbedded(DigitsWeights.HeldOutResource);
        if (!d.TryGetValue("images", out var img) || !d.TryGetValue("labels", out var lab))
            throw new Core.IO.CheckpointFormatException(DigitsWeights.SourceName(DigitsWeights.HeldOutResource), "needs 'images' and 'labels'.");
        long m = img.shape[0];
        var bytes = img.contiguous().data<byte>().ToArray();
        var images = MnistData.ToModelSpace(bytes, (int)m);
        var labels = lab.to(ScalarType.Int64);
        img.Dispose();
        return (images, labels);
    }
}
