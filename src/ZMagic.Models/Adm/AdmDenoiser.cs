using TorchSharp;
using ZMagic.Models.Loading;
using static TorchSharp.torch;

namespace ZMagic.Models.Adm;

/// <summary>
/// guided-diffusion's UNetModel as an epsilon-predicting <see cref="ZMagic.Core.Diffusion.IDenoiser"/> with its training schedule
/// (e.g. <c>256x256_diffusion_uncond.pt</c> with <see cref="AdmUNetConfig.ImageNet256Uncond"/>). With learned sigma the output has
/// 2 x <see cref="BackboneDenoiser.Channels"/> channels; samplers use the first half.
/// </summary>
public sealed class AdmDenoiser : BackboneDenoiser
{
    private readonly AdmUNetConfig _config;
    private Tensor? _labels;

    /// <summary>Builds the network with fresh weights (load a checkpoint with <see cref="BackboneDenoiser.LoadCheckpoint"/> or use <see cref="Load"/>).</summary>
    /// <exception cref="ArgumentException">The config is not a 2-D image model.</exception>
    public AdmDenoiser(AdmUNetConfig config, Device? device = null)
        : this(new AdmUNet(Check(config), device), config)
    {
    }

    private AdmDenoiser(AdmUNet net, AdmUNetConfig config) : base(net, config.CreateSchedule())
    {
        _config = config;
        Network = net;
    }

    private static AdmUNetConfig Check(AdmUNetConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.Dims != 2) throw new ArgumentException($"A denoiser needs a 2-D UNetModel; this config has dims = {config.Dims}.", nameof(config));
        if (config.OutChannels != config.InChannels && config.OutChannels != 2 * config.InChannels)
            throw new ArgumentException($"out_channels must be in_channels (epsilon) or 2 x in_channels (epsilon + learned sigma); got {config.OutChannels} for {config.InChannels} inputs.", nameof(config));
        return config;
    }

    /// <summary>
    /// Builds the network for <paramref name="config"/> and loads <paramref name="checkpointPath"/> (strict; fp16 weights such as
    /// those of <c>256x256_diffusion_uncond.pt</c> after <c>convert_to_fp16</c> are cast to float32).
    /// </summary>
    /// <exception cref="BackboneCheckpointMismatchException">The checkpoint is for another architecture or config.</exception>
    /// <exception cref="ZMagic.Core.IO.CheckpointFormatException">The file is unreadable.</exception>
    public static AdmDenoiser Load(string checkpointPath, AdmUNetConfig config, Device? device = null)
    {
        var d = new AdmDenoiser(config, device);
        try
        {
            d.LoadCheckpoint(checkpointPath);
            return d;
        }
        catch
        {
            d.Dispose();
            throw;
        }
    }

    /// <summary>The network.</summary>
    public AdmUNet Network { get; }

    /// <inheritdoc />
    public override BackboneConfig Config => _config;

    /// <inheritdoc />
    public override int Channels => _config.InChannels;

    /// <inheritdoc />
    public override int SampleSize => _config.ImageSize;

    /// <inheritdoc />
    public override bool LearnedSigma => _config.LearnSigma;

    /// <summary>
    /// Class labels [B] (int64) for a class-conditional model, used by every <see cref="BackboneDenoiser.Forward"/> call; must be set
    /// for such a model and left null otherwise. The denoiser does not take ownership.
    /// </summary>
    public Tensor? ClassLabels
    {
        get => _labels;
        set
        {
            if (value is not null && _config.NumClasses is null) throw new InvalidOperationException("This model is not class-conditional (num_classes is null).");
            _labels = value;
        }
    }

    /// <inheritdoc />
    protected override Tensor ForwardCore(Tensor x, Tensor t)
    {
        if (_config.NumClasses is not null && _labels is null)
            throw new InvalidOperationException("This model is class-conditional: set ClassLabels before calling Forward.");
        return Network.forward(x, t, _labels);
    }

    /// <inheritdoc />
    protected override string DescribeArchitecture() =>
        $"guided-diffusion UNetModel ({_config.ModelChannels} channels, mult [{string.Join(",", _config.ChannelMult)}], {_config.NumResBlocks} res blocks, {_config.ImageSize}x{_config.ImageSize}, out {_config.OutChannels})";
}
