using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Models.Loading;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ZMagic.Models;

/// <summary>
/// Base of the pixel-space backbones: a network in eval mode with frozen parameters (guidance differentiates with respect to
/// the sample, never the weights), its schedule and its input contract. Owns and disposes the network.
/// </summary>
public abstract class BackboneDenoiser : IDenoiser, IDisposable
{
    private bool _disposed;

    /// <summary>Wraps <paramref name="module"/>, puts it in eval mode and freezes its parameters.</summary>
    protected BackboneDenoiser(nn.Module module, NoiseSchedule schedule)
    {
        Module = module ?? throw new ArgumentNullException(nameof(module));
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        Module.eval();
        foreach (var p in Module.parameters()) p.requires_grad = false;
    }

    /// <summary>The wrapped network.</summary>
    public nn.Module Module { get; }

    private bool _layoutApplied;

    /// <summary>The architecture description.</summary>
    public abstract BackboneConfig Config { get; }

    /// <inheritdoc />
    public NoiseSchedule Schedule { get; }

    /// <inheritdoc />
    public PredictionType Prediction => PredictionType.Epsilon;

    /// <inheritdoc />
    public abstract int Channels { get; }

    /// <inheritdoc />
    public abstract int SampleSize { get; }

    /// <inheritdoc />
    public abstract bool LearnedSigma { get; }

    /// <summary>Floating dtype of the parameters (inputs must match).</summary>
    public ScalarType DType => FirstParameter().dtype;

    /// <summary>Device of the parameters (inputs must be on it).</summary>
    public Device Device => FirstParameter().device;

    /// <summary>Number of parameter elements.</summary>
    public long ParameterCount => Module.parameters().Sum(p => p.numel());

    /// <summary>Moves the parameters to <paramref name="device"/>; returns this.</summary>
    public BackboneDenoiser To(Device device)
    {
        ThrowIfDisposed();
        Module.to(device);
        return this;
    }

    /// <summary>Casts the parameters to the floating dtype <paramref name="dtype"/> (Float32 or Float64 for guidance); returns this.</summary>
    public BackboneDenoiser To(ScalarType dtype)
    {
        ThrowIfDisposed();
        if (!torch.is_floating_point(torch.empty(0, dtype: dtype))) throw new ArgumentException($"A denoiser runs in a floating dtype; got {dtype}.", nameof(dtype));
        Module.to(dtype);
        return this;
    }

    /// <summary>
    /// Loads a state dict (checked key by key first; see <see cref="WeightLoader.LoadInto"/>), casting to the current dtype.
    /// </summary>
    /// <exception cref="BackboneCheckpointMismatchException">Keys or shapes differ; nothing was copied.</exception>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict, string source = "state dict")
    {
        ThrowIfDisposed();
        WeightLoader.LoadInto(Module, stateDict, source, DescribeArchitecture(), sd => GuessOtherArchitecture(sd, Config.Architecture));
    }

    /// <summary>Reads a checkpoint file and loads it (see <see cref="WeightLoader.ReadStateDict"/>).</summary>
    public void LoadCheckpoint(string path)
    {
        ThrowIfDisposed();
        var sd = WeightLoader.ReadStateDict(path);
        try { LoadStateDict(sd, path); }
        finally { foreach (var t in sd.Values) t.Dispose(); }
    }

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        if (x.dim() != 4 || x.shape[1] != Channels || x.shape[2] != SampleSize || x.shape[3] != SampleSize)
            throw new ArgumentException($"{DescribeArchitecture()} expects x of shape [B, {Channels}, {SampleSize}, {SampleSize}]; got [{string.Join(", ", x.shape)}].", nameof(x));
        var p = FirstParameter();
        if (x.dtype != p.dtype)
            throw new ArgumentException($"x is {x.dtype} but the denoiser's parameters are {p.dtype}; cast x or call To({x.dtype}).", nameof(x));
        if (x.device_type != p.device_type || x.device_index != p.device_index)
            throw new ArgumentException($"x is on {x.device} but the denoiser is on {p.device}.", nameof(x));
        // The numerics self-check may have chosen channels-last convolutions after this network was built.
        if (!_layoutApplied && ZMagic.Core.Native.NumericsSelfCheck.ApplyConvolutionLayout(Module)) _layoutApplied = true;
        long b = x.shape[0];
        if (t.dim() == 0) t = t.expand(b);
        if (t.dim() != 1 || t.shape[0] != b)
            throw new ArgumentException($"t must be a scalar or have shape [{b}]; got [{string.Join(", ", t.shape)}].", nameof(t));
        if (t.device_type != p.device_type || t.device_index != p.device_index) t = t.to(p.device);
        return ForwardCore(x, t);
    }

    /// <summary>The network call after validation.</summary>
    protected abstract Tensor ForwardCore(Tensor x, Tensor t);

    /// <summary>Short description used in error messages.</summary>
    protected abstract string DescribeArchitecture();

    /// <summary>Names another known architecture a mismatching checkpoint seems to belong to, or null.</summary>
    protected static string? GuessOtherArchitecture(IReadOnlyDictionary<string, Tensor> sd, string ownArchitecture)
    {
        ArgumentNullException.ThrowIfNull(sd);
        if (ownArchitecture != "adm" && (sd.ContainsKey("input_blocks.0.0.weight") || sd.ContainsKey("time_embed.0.weight")))
            return "the file looks like a guided-diffusion (ADM UNetModel) checkpoint";
        if (ownArchitecture != "ddpm" && (sd.ContainsKey("temb.dense.0.weight") || sd.ContainsKey("conv_in.weight") && sd.ContainsKey("mid.attn_1.q.weight")))
            return "the file looks like an ermongroup DDPM (SDEdit Model) checkpoint";
        if (sd.Keys.Any(k => k.StartsWith("conv_in.", StringComparison.Ordinal)) && sd.Keys.Any(k => k.StartsWith("down_blocks.", StringComparison.Ordinal)))
            return "the file looks like a diffusers UNet2DConditionModel checkpoint";
        return null;
    }

    private Parameter FirstParameter()
    {
        ThrowIfDisposed();
        return Module.parameters().FirstOrDefault() ?? throw new InvalidOperationException("The network has no parameters.");
    }

    /// <summary>Throws if disposed.</summary>
    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Disposes the network.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Disposes the network when <paramref name="disposing"/>.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (disposing) Module.Dispose();
    }
}
