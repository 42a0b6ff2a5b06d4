using TorchSharp;
using TorchSharp.Modules;
using ZMagic.Models.Nn;
using static TorchSharp.torch;

namespace ZMagic.Models.Adm;

// Building blocks of guided-diffusion's UNetModel (unet.py / nn.py). Field names are the PyTorch attribute names and are declared
// in the reference registration order, so state-dict keys equal the checkpoint's.

/// <summary>A module that takes the timestep embedding as a second input.</summary>
internal interface ITimestepBlock
{
    Tensor Forward(Tensor x, Tensor emb);
}

internal static class AdmLayers
{
    public static GroupNormF Normalization(long channels, Device? device) => new(32, channels, 1e-5, upcastHalf: true, device);

    public static nn.Module<Tensor, Tensor> ConvNd(int dims, long inCh, long outCh, long kernel, long stride, long padding, Device? device) => dims switch
    {
        1 => nn.Conv1d(inCh, outCh, kernel, stride: stride, padding: padding, device: device),
        2 => nn.Conv2d(inCh, outCh, kernel, stride: stride, padding: padding, device: device),
        3 => nn.Conv3d(inCh, outCh, kernel, stride: stride, padding: padding, device: device),
        _ => throw new ArgumentException($"unsupported dimensions: {dims}"),
    };
}

/// <summary>A 3D conv with stride (1, 2, 2), as the reference Downsample uses for dims=3.</summary>
internal sealed class Conv3dStride122 : nn.Module<Tensor, Tensor>
{
    public readonly Parameter weight;
    public readonly Parameter bias;

    public Conv3dStride122(long inCh, long outCh, Device? device) : base("Conv3d")
    {
        using var proto = nn.Conv3d(inCh, outCh, 3, stride: 1, padding: 1L, device: device);
        weight = new Parameter(proto.weight!.detach().clone());
        bias = new Parameter(proto.bias!.detach().clone());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        nn.functional.conv3d(x, weight, bias, strides: new long[] { 1, 2, 2 }, padding: new long[] { 1, 1, 1 });
}

/// <summary>Average pooling for any dims (kernel = stride = 2, or (1, 2, 2) in 3D).</summary>
internal sealed class AvgPoolNd : nn.Module<Tensor, Tensor>
{
    private readonly int _dims;

    public AvgPoolNd(int dims) : base("AvgPool") => _dims = dims;

    public override Tensor forward(Tensor x) => _dims switch
    {
        1 => nn.functional.avg_pool1d(x, 2, 2),
        2 => nn.functional.avg_pool2d(x, new long[] { 2, 2 }, new long[] { 2, 2 }),
        _ => nn.functional.avg_pool3d(x, new long[] { 1, 2, 2 }, new long[] { 1, 2, 2 }),
    };
}

/// <summary>Upsample(channels, use_conv, dims, out_channels): nearest 2x (inner two dims for 3D), optional 3x3 conv.</summary>
internal sealed class AdmUpsample : nn.Module<Tensor, Tensor>
{
    private readonly long _channels;
    private readonly int _dims;

    public readonly nn.Module<Tensor, Tensor>? conv;

    public AdmUpsample(long channels, bool useConv, int dims, long? outChannels, Device? device) : base("Upsample")
    {
        _channels = channels;
        _dims = dims;
        if (useConv) conv = AdmLayers.ConvNd(dims, channels, outChannels ?? channels, 3, 1, 1, device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (x.shape[1] != _channels) throw new ArgumentException($"Upsample expects {_channels} channels; got {x.shape[1]}.");
        Tensor up = _dims switch
        {
            3 => nn.functional.interpolate(x, size: new[] { x.shape[2], x.shape[3] * 2, x.shape[4] * 2 }, mode: InterpolationMode.Nearest),
            1 => nn.functional.interpolate(x, scale_factor: new[] { 2.0 }, mode: InterpolationMode.Nearest),
            _ => nn.functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest),
        };
        if (conv is null) return up;
        using (up) return conv.forward(up);
    }
}

/// <summary>Downsample(channels, use_conv, dims, out_channels): stride-2 3x3 conv (<c>op</c>) or average pooling.</summary>
internal sealed class AdmDownsample : nn.Module<Tensor, Tensor>
{
    private readonly long _channels;

    public readonly nn.Module<Tensor, Tensor> op;

    public AdmDownsample(long channels, bool useConv, int dims, long? outChannels, Device? device) : base("Downsample")
    {
        _channels = channels;
        long outCh = outChannels ?? channels;
        if (useConv) op = dims == 3 ? new Conv3dStride122(channels, outCh, device) : AdmLayers.ConvNd(dims, channels, outCh, 3, 2, 1, device);
        else
        {
            if (outCh != channels) throw new ArgumentException($"Downsample without conv cannot change channels ({channels} -> {outCh}).");
            op = new AvgPoolNd(dims);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (x.shape[1] != _channels) throw new ArgumentException($"Downsample expects {_channels} channels; got {x.shape[1]}.");
        return op.forward(x);
    }
}

/// <summary>ResBlock: in_layers (norm, SiLU, conv), emb_layers (SiLU, linear), out_layers (norm, SiLU, dropout, conv), skip_connection.</summary>
internal sealed class AdmResBlock : nn.Module<Tensor, Tensor, Tensor>, ITimestepBlock
{
    private readonly bool _useScaleShiftNorm;
    private readonly bool _updown;
    // Aliases of children registered inside the Sequentials (arrays are not registered by TorchSharp).
    private readonly nn.Module<Tensor, Tensor>[] _inParts;   // norm, silu, conv
    private readonly nn.Module<Tensor, Tensor>[] _outParts;  // norm, silu, dropout, conv
    private readonly nn.Module<Tensor, Tensor>[] _upd;       // h_upd, x_upd

    public readonly Sequential in_layers;
    public readonly nn.Module<Tensor, Tensor> h_upd;
    public readonly nn.Module<Tensor, Tensor> x_upd;
    public readonly Sequential emb_layers;
    public readonly Sequential out_layers;
    public readonly nn.Module<Tensor, Tensor> skip_connection;

    public AdmResBlock(long channels, long embChannels, double dropout, long? outChannels, bool useConv, bool useScaleShiftNorm, int dims,
        bool up, bool down, Device? device) : base("ResBlock")
    {
        long outCh = outChannels ?? channels;
        _useScaleShiftNorm = useScaleShiftNorm;
        _updown = up || down;
        _inParts = [AdmLayers.Normalization(channels, device), nn.SiLU(), AdmLayers.ConvNd(dims, channels, outCh, 3, 1, 1, device)];
        in_layers = nn.Sequential(("0", _inParts[0]), ("1", _inParts[1]), ("2", _inParts[2]));
        if (up)
        {
            h_upd = new AdmUpsample(channels, false, dims, null, device);
            x_upd = new AdmUpsample(channels, false, dims, null, device);
        }
        else if (down)
        {
            h_upd = new AdmDownsample(channels, false, dims, null, device);
            x_upd = new AdmDownsample(channels, false, dims, null, device);
        }
        else
        {
            h_upd = nn.Identity();
            x_upd = nn.Identity();
        }
        _upd = [h_upd, x_upd];
        emb_layers = nn.Sequential(("0", nn.SiLU()), ("1", nn.Linear(embChannels, useScaleShiftNorm ? 2 * outCh : outCh, device: device)));
        _outParts = [AdmLayers.Normalization(outCh, device), nn.SiLU(), nn.Dropout(dropout), AdmLayers.ConvNd(dims, outCh, outCh, 3, 1, 1, device)];
        out_layers = nn.Sequential(("0", _outParts[0]), ("1", _outParts[1]), ("2", _outParts[2]), ("3", _outParts[3]));
        if (outCh == channels) skip_connection = nn.Identity();
        else if (useConv) skip_connection = AdmLayers.ConvNd(dims, channels, outCh, 3, 1, 1, device);
        else skip_connection = AdmLayers.ConvNd(dims, channels, outCh, 1, 1, 0, device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor emb) => forward(x, emb);

    public override Tensor forward(Tensor x, Tensor emb)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h;
        if (_updown)
        {
            h = _inParts[1].forward(_inParts[0].forward(x));
            h = _upd[0].forward(h);
            x = _upd[1].forward(x);
            h = _inParts[2].forward(h);
        }
        else
        {
            h = in_layers.forward(x);
        }
        var embOut = emb_layers.forward(emb).to(h.dtype);
        while (embOut.dim() < h.dim()) embOut = embOut.unsqueeze(-1);
        if (_useScaleShiftNorm)
        {
            var parts = embOut.chunk(2, 1);
            h = _outParts[0].forward(h) * (parts[0] + 1) + parts[1];
            for (int k = 1; k < _outParts.Length; k++) h = _outParts[k].forward(h);
        }
        else
        {
            h = out_layers.forward(h + embOut);
        }
        return (skip_connection.forward(x) + h).MoveToOuterDisposeScope();
    }
}

/// <summary>QKVAttentionLegacy (heads split before q/k/v) or QKVAttention (q/k/v split first); no parameters.</summary>
internal sealed class QkvAttention : nn.Module<Tensor, Tensor>
{
    private readonly int _heads;
    private readonly bool _newOrder;

    public QkvAttention(int heads, bool newOrder) : base(newOrder ? "QKVAttention" : "QKVAttentionLegacy")
    {
        _heads = heads;
        _newOrder = newOrder;
    }

    public override Tensor forward(Tensor qkv)
    {
        long bs = qkv.shape[0], width = qkv.shape[1], length = qkv.shape[2];
        if (width % (3 * _heads) != 0) throw new ArgumentException($"qkv width {width} is not divisible by 3 x {_heads} heads.");
        long ch = width / (3 * _heads);
        using var scope = torch.NewDisposeScope();
        double scale = 1 / Math.Sqrt(Math.Sqrt(ch));
        Tensor q, k, v;
        if (_newOrder)
        {
            var parts = qkv.chunk(3, 1);
            q = (parts[0] * scale).view(bs * _heads, ch, length);
            k = (parts[1] * scale).view(bs * _heads, ch, length);
            v = parts[2].reshape(bs * _heads, ch, length);
        }
        else
        {
            var parts = qkv.reshape(bs * _heads, ch * 3, length).split(ch, 1);
            q = parts[0] * scale;
            k = parts[1] * scale;
            v = parts[2];
        }
        var weight = torch.einsum("bct,bcs->bts", q, k);
        var wdt = weight.dtype;
        weight = (wdt == ScalarType.Float16 || wdt == ScalarType.BFloat16)
            ? nn.functional.softmax(weight.to(ScalarType.Float32), -1).to(wdt)
            : nn.functional.softmax(weight, -1);
        var a = torch.einsum("bts,bcs->bct", weight, v);
        return a.reshape(bs, -1, length).MoveToOuterDisposeScope();
    }
}

/// <summary>AttentionBlock: norm, qkv (1x1 Conv1d to 3C), attention, proj_out (1x1 Conv1d).</summary>
internal sealed class AdmAttentionBlock : nn.Module<Tensor, Tensor>
{
    public readonly GroupNormF norm;
    public readonly Conv1d qkv;
    public readonly QkvAttention attention;
    public readonly Conv1d proj_out;

    public AdmAttentionBlock(long channels, int numHeads, int numHeadChannels, bool useNewAttentionOrder, Device? device) : base("AttentionBlock")
    {
        int heads;
        if (numHeadChannels == -1) heads = numHeads;
        else
        {
            if (channels % numHeadChannels != 0)
                throw new ArgumentException($"q,k,v channels {channels} is not divisible by num_head_channels {numHeadChannels}");
            heads = (int)(channels / numHeadChannels);
        }
        if (heads <= 0 || channels % heads != 0) throw new ArgumentException($"Attention over {channels} channels cannot use {heads} heads.");
        norm = AdmLayers.Normalization(channels, device);
        qkv = nn.Conv1d(channels, channels * 3, 1, stride: 1, padding: 0L, device: device);
        attention = new QkvAttention(heads, useNewAttentionOrder);
        proj_out = nn.Conv1d(channels, channels, 1, stride: 1, padding: 0L, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var shape = x.shape;
        var xf = x.reshape(shape[0], shape[1], -1);
        var h = proj_out.forward(attention.forward(qkv.forward(norm.forward(xf))));
        return (xf + h).reshape(shape).MoveToOuterDisposeScope();
    }
}

/// <summary>TimestepEmbedSequential: children "0", "1", ...; those that are timestep blocks also get the embedding.</summary>
internal sealed class TimestepEmbedSequential : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly nn.Module[] _layers;

    public TimestepEmbedSequential(params nn.Module[] layers) : base("TimestepEmbedSequential")
    {
        _layers = layers;
        for (int i = 0; i < layers.Length; i++) register_module(i.ToString(System.Globalization.CultureInfo.InvariantCulture), layers[i]);
    }

    public IReadOnlyList<nn.Module> Layers => _layers;

    public override Tensor forward(Tensor x, Tensor emb)
    {
        using var scope = torch.NewDisposeScope();
        foreach (var layer in _layers)
        {
            x = layer switch
            {
                ITimestepBlock tb => tb.Forward(x, emb),
                nn.Module<Tensor, Tensor> m => m.forward(x),
                _ => throw new InvalidOperationException($"Unexpected layer type {layer.GetType().Name}."),
            };
        }
        return x.MoveToOuterDisposeScope();
    }
}
