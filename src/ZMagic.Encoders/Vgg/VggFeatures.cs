using TorchSharp;
using TorchSharp.Modules;
using ZMagic.Core.IO;
using ZMagic.Encoders.Clip;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Vgg;

/// <summary>Which torchvision VGG (no batch norm).</summary>
public enum VggKind
{
    /// <summary>torchvision <c>vgg16</c> (configuration D), file <c>vgg16-397923af.pth</c>.</summary>
    Vgg16,

    /// <summary>torchvision <c>vgg19</c> (configuration E), file <c>vgg19-dcbb9e9d.pth</c>.</summary>
    Vgg19,
}

#pragma warning disable IDE1006

/// <summary>
/// torchvision's VGG16/VGG19 <c>features</c> (convolutions, ReLUs, max-pools with torchvision's indices, so
/// <c>features.N.weight</c> keys load unchanged) with named layers (<c>conv1_1</c>, <c>relu1_1</c>, ...,
/// <c>pool5</c>) for style and content losses.
/// </summary>
/// <remarks>
/// Built without the classifier by default: loading a full torchvision file then ignores its <c>classifier.*</c>
/// keys. With <c>withClassifier</c> the module has the whole torchvision key set (<c>classifier.0/3/6</c>).
/// Inputs are ImageNet-normalised RGB; <see cref="NormalizeSignedUnit"/> maps the denoiser's [-1, 1] images.
/// </remarks>
public sealed class VggFeatures : Module<Tensor, Tensor>
{
    private static readonly int[] CfgD = { 64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0 };
    private static readonly int[] CfgE = { 64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0 };

    /// <summary>ImageNet mean on [0, 1] RGB.</summary>
    public static readonly double[] Mean = { 0.485, 0.456, 0.406 };

    /// <summary>ImageNet standard deviation on [0, 1] RGB.</summary>
    public static readonly double[] Std = { 0.229, 0.224, 0.225 };

    private readonly Sequential features;
    private readonly Sequential? classifier;
    private readonly List<string> _names = new();
    private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);

    /// <summary>Creates the network with random weights (load real or formula weights afterwards).</summary>
    /// <param name="kind">VGG16 or VGG19.</param>
    /// <param name="withClassifier">Also create torchvision's classifier (only for key compatibility; never run here).</param>
    /// <param name="device">Where the parameters are allocated.</param>
    public VggFeatures(VggKind kind, bool withClassifier = false, Device? device = null) : base(kind.ToString())
    {
        Kind = kind;
        features = Sequential();
        int inChannels = 3, block = 1, inBlock = 0, idx = 0;
        foreach (var v in kind == VggKind.Vgg16 ? CfgD : CfgE)
        {
            if (v == 0)
            {
                features.append(MaxPool2d(2, 2));
                AddName($"pool{block}", idx++);
                block++;
                inBlock = 0;
                continue;
            }
            inBlock++;
            features.append(Conv2d(inChannels, v, 3, padding: 1, device: device));
            AddName($"conv{block}_{inBlock}", idx++);
            features.append(ReLU());
            AddName($"relu{block}_{inBlock}", idx++);
            inChannels = v;
        }
        if (withClassifier)
        {
            classifier = Sequential(Linear(512 * 7 * 7, 4096, device: device), ReLU(), Dropout(), Linear(4096, 4096, device: device), ReLU(), Dropout(),
                Linear(4096, 1000, device: device));
        }
        RegisterComponents();
        eval();
    }

    private void AddName(string name, int index)
    {
        _names.Add(name);
        _index[name] = index;
    }

    /// <summary>VGG16 or VGG19.</summary>
    public VggKind Kind { get; }

    /// <summary>The dtype of the parameters (inputs must have it; the conditions cast to it).</summary>
    public ScalarType ParameterType => parameters().First().dtype;

    /// <summary>The device of the parameters.</summary>
    public Device Device => parameters().First().device;

    /// <summary>Layer names in <c>features</c> order (<c>conv1_1</c>, <c>relu1_1</c>, ..., <c>pool5</c>).</summary>
    public IReadOnlyList<string> LayerNames => _names;

    /// <summary>The index of a named layer inside <c>features</c> (e.g. relu4_1 is 18 in VGG16, 20 in VGG19).</summary>
    /// <exception cref="ArgumentException">Unknown layer name.</exception>
    public int IndexOf(string layer) => _index.TryGetValue(layer, out var i) ? i
        : throw new ArgumentException($"{Kind} has no layer '{layer}'. Known layers: {string.Join(", ", _names)}.", nameof(layer));

    /// <summary>Runs all of <c>features</c> on ImageNet-normalised images [N, 3, H, W].</summary>
    public override Tensor forward(Tensor x)
    {
        CheckInput(x);
        return features.forward(x);
    }

    /// <summary>
    /// The activations of the named <paramref name="layers"/> (ReLU outputs for <c>reluX_Y</c>) of ImageNet-normalised
    /// images; the network stops after the deepest requested layer.
    /// </summary>
    /// <exception cref="ArgumentException">Unknown layer or bad input shape.</exception>
    public Dictionary<string, Tensor> Extract(Tensor x, IEnumerable<string> layers)
    {
        CheckInput(x);
        var wanted = layers.Distinct().ToDictionary(IndexOf, l => l);
        if (wanted.Count == 0) return new Dictionary<string, Tensor>();
        int last = wanted.Keys.Max();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        int i = 0;
        foreach (var layer in features.children())
        {
            if (i > last) break;
            x = ((Module<Tensor, Tensor>)layer).forward(x);
            if (wanted.TryGetValue(i, out var name)) result[name] = x;
            i++;
        }
        return result;
    }

    private static void CheckInput(Tensor x)
    {
        if (x.ndim != 4 || x.shape[1] != 3)
            throw new ArgumentException($"VGG input must be RGB [N, 3, H, W]; got [{string.Join(", ", x.shape)}].", nameof(x));
        if (x.shape[2] < 16 || x.shape[3] < 16)
            throw new ArgumentException($"VGG input must be at least 16x16 (four 2x poolings before relu5_1); got {x.shape[2]}x{x.shape[3]}.", nameof(x));
    }

    /// <summary>ImageNet normalisation of [0, 1] RGB.</summary>
    public static Tensor NormalizeUnit(Tensor image) => ClipPreprocess.Normalize(image, Mean, Std);

    /// <summary>ImageNet normalisation of [-1, 1] RGB (the denoiser's range): <c>((x + 1) / 2 - mean) / std</c>.</summary>
    public static Tensor NormalizeSignedUnit(Tensor image) =>
        ClipPreprocess.Normalize(image, Mean.Select(m => m * 2 - 1).ToArray(), Std.Select(s => s * 2).ToArray());

    /// <summary>
    /// Normalised Gram matrices <c>G[b] = F_b F_b^T / (C H W)</c>, <c>F_b</c> = activation[b] as [C, H W]; returns [B, C, C].
    /// </summary>
    /// <exception cref="ArgumentException">The activation is not [B, C, H, W].</exception>
    public static Tensor Gram(Tensor activation)
    {
        if (activation.ndim != 4) throw new ArgumentException($"Gram needs [B, C, H, W]; got [{string.Join(", ", activation.shape)}].", nameof(activation));
        long b = activation.shape[0], c = activation.shape[1], hw = activation.shape[2] * activation.shape[3];
        var f = activation.reshape(b, c, hw);
        return torch.bmm(f, f.transpose(1, 2)) / (double)(c * hw);
    }

    /// <summary>
    /// Loads torchvision weights (<c>features.N.weight/bias</c>); a file's <c>classifier.*</c> keys are ignored unless
    /// this module has the classifier. Accepts safetensors and PyTorch files.
    /// </summary>
    /// <exception cref="StateDictMismatchException">A feature key is missing or mis-shaped, or an unknown key is present.</exception>
    public StateDictLoadReport LoadWeights(IReadOnlyDictionary<string, Tensor> stateDict, string source = "state dict") =>
        WeightLoading.Load(this, stateDict, source, classifier is null ? new[] { "classifier.*" } : Array.Empty<string>());

    /// <summary>Reads <paramref name="path"/> (e.g. <c>vgg16-397923af.pth</c>) and loads it (see <see cref="LoadWeights(IReadOnlyDictionary{string, Tensor}, string)"/>).</summary>
    public StateDictLoadReport LoadWeights(string path)
    {
        var sd = WeightLoading.ReadFile(path);
        try { return LoadWeights(sd, path); }
        finally { foreach (var t in sd.Values) t.Dispose(); }
    }
}
#pragma warning restore IDE1006
