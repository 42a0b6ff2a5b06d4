using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>How a TensorFlow convolution pads its input.</summary>
internal enum TfPadding
{
    /// <summary>No padding.</summary>
    Valid,

    /// <summary>TensorFlow "same": output size ceil(n/s), the extra padding at the bottom/right.</summary>
    Same,
}

/// <summary>
/// A face-api convolution <c>conv2d(x, filters) + bias</c>. Parameters: <c>filters</c> [out, in, kh, kw] (the tfjs
/// HWIO filter permuted), <c>bias</c> [out].
/// </summary>
internal sealed class TfConv2d : nn.Module<Tensor, Tensor>
{
    private readonly Parameter filters;
    private readonly Parameter bias;
    private readonly long _stride;
    private readonly TfPadding _padding;

    /// <summary>Creates a zero-initialised layer; load the real values with <see cref="FaceApiNetwork{TOutput}.LoadWeights(string)"/>.</summary>
    public TfConv2d(long inChannels, long outChannels, long kernel, long stride, TfPadding padding, bool withBias = true) : base("TfConv2d")
    {
        filters = new Parameter(zeros(outChannels, inChannels, kernel, kernel), requires_grad: false);
        bias = withBias ? new Parameter(zeros(outChannels), requires_grad: false) : null!;
        _stride = stride;
        _padding = padding;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        long k = filters.shape[2];
        using var padded = _padding == TfPadding.Same ? TfOps.PadSame(x, k, _stride) : x.alias();
        return F.conv2d(padded, filters, bias, strides: new[] { _stride, _stride });
    }
}

/// <summary>
/// tfjs <c>separableConv2d</c> + bias: a depthwise k x k convolution, then a pointwise 1x1 convolution, then one bias.
/// Parameters: <c>depthwise_filter</c> [C, 1, k, k], <c>pointwise_filter</c> [out, C, 1, 1], <c>bias</c> [out].
/// </summary>
internal sealed class TfSeparableConv2d : nn.Module<Tensor, Tensor>
{
    private readonly Parameter depthwise_filter;
    private readonly Parameter pointwise_filter;
    private readonly Parameter bias;
    private readonly long _stride;
    private readonly long _channels;

    /// <summary>Creates a zero-initialised layer with TensorFlow "same" padding.</summary>
    public TfSeparableConv2d(long inChannels, long outChannels, long stride, long kernel = 3) : base("TfSeparableConv2d")
    {
        depthwise_filter = new Parameter(zeros(inChannels, 1, kernel, kernel), requires_grad: false);
        pointwise_filter = new Parameter(zeros(outChannels, inChannels, 1, 1), requires_grad: false);
        bias = new Parameter(zeros(outChannels), requires_grad: false);
        _stride = stride;
        _channels = inChannels;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var padded = TfOps.PadSame(x, depthwise_filter.shape[2], _stride);
        using var dw = F.conv2d(padded, depthwise_filter, strides: new[] { _stride, _stride }, groups: _channels);
        return F.conv2d(dw, pointwise_filter, bias);
    }
}

/// <summary>A face-api fully connected layer <c>x @ weights + bias</c>; <c>weights</c> keeps the tfjs [in, out] layout.</summary>
internal sealed class TfFullyConnected : nn.Module<Tensor, Tensor>
{
    private readonly Parameter weights;
    private readonly Parameter bias;

    /// <summary>Creates a zero-initialised layer.</summary>
    public TfFullyConnected(long inFeatures, long outFeatures) : base("TfFullyConnected")
    {
        weights = new Parameter(zeros(inFeatures, outFeatures), requires_grad: false);
        bias = new Parameter(zeros(outFeatures), requires_grad: false);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        if (x.dim() != 2 || x.shape[1] != weights.shape[0])
            throw new ArgumentException($"fully connected layer expects [B, {weights.shape[0]}], got [{string.Join(", ", x.shape)}].", nameof(x));
        using var y = x.matmul(weights);
        return y + bias;
    }
}

/// <summary>What every face-api network offers, whatever its output type.</summary>
public interface IFaceApiNetwork
{
    /// <summary>The file name stem of the net's weights in the package's model/ folder.</summary>
    string ModelName { get; }

    /// <summary>The square input side the net expects.</summary>
    long InputSize { get; }

    /// <summary>Loads the net's weights from the package's model/ folder (strict).</summary>
    void LoadWeights(string modelDirectory);
}

/// <summary>
/// A tfjs weights manifest turned into a TorchSharp module: parameter keys are the manifest names with '/' replaced by
/// '.', conv filters permuted from HWIO to OIHW.
/// </summary>
/// <typeparam name="TOutput">What the forward pass returns.</typeparam>
public abstract class FaceApiNetwork<TOutput> : nn.Module<Tensor, TOutput>, IFaceApiNetwork
{
    /// <summary>Creates the module.</summary>
    protected FaceApiNetwork(string name) : base(name) { }

    /// <summary>The file name stem of the net's weights in the package's model/ folder (e.g. <c>face_landmark_68_model</c>).</summary>
    public abstract string ModelName { get; }

    /// <summary>The square input side the net expects (112, 150, or the detector's input size).</summary>
    public abstract long InputSize { get; }

    /// <summary>
    /// Loads <c>&lt;modelDirectory&gt;/&lt;ModelName&gt;-weights_manifest.json</c> and its shards, strictly: every
    /// parameter must be present with the right shape and the manifest may hold no other tensor.
    /// </summary>
    /// <exception cref="ZMagic.Core.IO.CheckpointFormatException">Missing/unexpected/mis-shaped tensors, or a corrupt file.</exception>
    public void LoadWeights(string modelDirectory)
    {
        string manifest = Path.Combine(modelDirectory, ModelName + "-weights_manifest.json");
        LoadWeights(TfjsWeights.Load(manifest), manifest);
    }

    /// <summary>Loads already-read tfjs tensors (see <see cref="LoadWeights(string)"/>); <paramref name="source"/> names them in errors.</summary>
    public void LoadWeights(IReadOnlyDictionary<string, TfjsTensor> tensors, string source)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var problems = new List<string>();
        var used = new HashSet<string>(StringComparer.Ordinal);
        var parameters = named_parameters().ToList();
        foreach (var (key, p) in parameters)
        {
            string tfName = key.Replace('.', '/');
            if (!tensors.TryGetValue(tfName, out var t))
            {
                problems.Add($"missing '{tfName}' (shape [{string.Join(", ", p.shape)}])");
                continue;
            }
            used.Add(tfName);
            using var scope = NewDisposeScope();
            Tensor converted;
            try
            {
                converted = ToTorchLayout(tfName, t);
            }
            catch (ArgumentException e)
            {
                problems.Add(e.Message);
                continue;
            }
            if (!converted.shape.SequenceEqual(p.shape))
            {
                problems.Add($"'{tfName}': tfjs shape [{string.Join(", ", t.Shape)}] gives [{string.Join(", ", converted.shape)}], the network expects [{string.Join(", ", p.shape)}]");
                continue;
            }
            using (no_grad()) p.copy_(converted);
        }
        foreach (var name in tensors.Keys)
            if (!used.Contains(name)) problems.Add($"unexpected '{name}' (is this the weights file of {GetType().Name}?)");
        if (problems.Count > 0)
            throw new ZMagic.Core.IO.CheckpointFormatException(source, $"does not fit {GetType().Name}: " + string.Join("; ", problems));
        ZMagic.Core.Native.NumericsSelfCheck.ApplyConvolutionLayout(this);
    }

    /// <summary>Converts a tfjs tensor to the layout of the parameter of the same name.</summary>
    private static Tensor ToTorchLayout(string name, TfjsTensor t)
    {
        var x = t.ToTensor();
        string leaf = name[(name.LastIndexOf('/') + 1)..];
        switch (leaf)
        {
            case "filters":
            case "pointwise_filter":
                if (t.Shape.Length != 4) throw new ArgumentException($"'{name}': a conv filter must be HWIO rank 4, got [{string.Join(", ", t.Shape)}]");
                return x.permute(3, 2, 0, 1).contiguous();
            case "depthwise_filter":
                if (t.Shape.Length != 4) throw new ArgumentException($"'{name}': a depthwise filter must be [kh, kw, C, M], got [{string.Join(", ", t.Shape)}]");
                return x.permute(2, 3, 0, 1).reshape(t.Shape[2] * t.Shape[3], 1, t.Shape[0], t.Shape[1]).contiguous();
            default:
                return x;
        }
    }

    /// <summary>Checks that an input is a [B, 3, InputSize, InputSize] float tensor.</summary>
    protected void CheckInput(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4 || x.shape[1] != 3 || x.shape[2] != InputSize || x.shape[3] != InputSize)
            throw new ArgumentException(
                $"{GetType().Name} expects a preprocessed input [B, 3, {InputSize}, {InputSize}] (see TfOps.ToNetInput), got [{string.Join(", ", x.shape)}].", nameof(x));
        if (!x.is_floating_point()) throw new ArgumentException($"{GetType().Name} expects a floating-point input, got {x.dtype}.", nameof(x));
    }
}
