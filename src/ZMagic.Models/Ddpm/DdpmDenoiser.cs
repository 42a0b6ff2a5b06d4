using TorchSharp;
using ZMagic.Models.Loading;
using static TorchSharp.torch;

namespace ZMagic.Models.Ddpm;

/// <summary>
/// The ermongroup DDPM UNet as an epsilon-predicting <see cref="ZMagic.Core.Diffusion.IDenoiser"/> with its training schedule
/// (e.g. SDEdit's <c>celeba_hq.ckpt</c> with <see cref="DdpmUNetConfig.CelebAHq"/>).
/// </summary>
public sealed class DdpmDenoiser : BackboneDenoiser
{
    private readonly DdpmUNetConfig _config;

    /// <summary>Builds the network with fresh weights (load a checkpoint with <see cref="BackboneDenoiser.LoadCheckpoint"/> or use <see cref="Load"/>).</summary>
    public DdpmDenoiser(DdpmUNetConfig config, Device? device = null)
        : this(new DdpmUNet(config ?? throw new ArgumentNullException(nameof(config)), device), config)
    {
    }

    private DdpmDenoiser(DdpmUNet net, DdpmUNetConfig config) : base(net, config.CreateSchedule())
    {
        _config = config;
        Network = net;
    }

    /// <summary>
    /// Builds the network for <paramref name="config"/> and loads <paramref name="checkpointPath"/> into it (strict: every key and shape
    /// must match; fp16 weights are cast to float32).
    /// </summary>
    /// <exception cref="BackboneCheckpointMismatchException">The checkpoint is for another architecture or config.</exception>
    /// <exception cref="ZMagic.Core.IO.CheckpointFormatException">The file is unreadable.</exception>
    public static DdpmDenoiser Load(string checkpointPath, DdpmUNetConfig config, Device? device = null)
    {
        var d = new DdpmDenoiser(config, device);
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
    public DdpmUNet Network { get; }

    /// <inheritdoc />
    public override BackboneConfig Config => _config;

    /// <inheritdoc />
    public override int Channels => _config.InChannels;

    /// <inheritdoc />
    public override int SampleSize => _config.Resolution;

    /// <inheritdoc />
    public override bool LearnedSigma => false;

    /// <inheritdoc />
    protected override Tensor ForwardCore(Tensor x, Tensor t) => Network.forward(x, t);

    /// <inheritdoc />
    protected override string DescribeArchitecture() =>
        $"ermongroup DDPM UNet (ch {_config.Ch}, ch_mult [{string.Join(",", _config.ChMult)}], {_config.NumResBlocks} res blocks, {_config.Resolution}x{_config.Resolution})";
}
