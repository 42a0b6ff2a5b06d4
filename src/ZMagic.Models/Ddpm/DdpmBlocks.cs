using TorchSharp;
using TorchSharp.Modules;
using ZMagic.Models.Nn;
using static TorchSharp.torch;

namespace ZMagic.Models.Ddpm;

// Building blocks of the ermongroup DDPM UNet. Field names are the PyTorch attribute names, so the state-dict keys
// equal those of celeba_hq.ckpt; field declaration order is the PyTorch registration order.

internal static class DdpmLayers
{
    public static GroupNormF Normalize(long channels, Device? device) => new(32, channels, 1e-6, upcastHalf: false, device);
}

/// <summary>ResnetBlock(in, out, temb): norm1, conv1, temb_proj, norm2, dropout, conv2, optional shortcut.</summary>
internal sealed class DdpmResnetBlock : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly long _in, _out;

    public readonly GroupNormF norm1;
    public readonly Conv2d conv1;
    public readonly Linear temb_proj;
    public readonly GroupNormF norm2;
    public readonly Dropout dropout;
    public readonly Conv2d conv2;
    public readonly Conv2d? conv_shortcut;
    public readonly Conv2d? nin_shortcut;

    public DdpmResnetBlock(long inChannels, long outChannels, long tembChannels, double dropoutP, bool convShortcut, Device? device)
        : base(nameof(DdpmResnetBlock))
    {
        _in = inChannels;
        _out = outChannels;
        norm1 = DdpmLayers.Normalize(inChannels, device);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device);
        temb_proj = nn.Linear(tembChannels, outChannels, device: device);
        norm2 = DdpmLayers.Normalize(outChannels, device);
        dropout = nn.Dropout(dropoutP);
        conv2 = nn.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1, device: device);
        if (inChannels != outChannels)
        {
            if (convShortcut) conv_shortcut = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device);
            else nin_shortcut = nn.Conv2d(inChannels, outChannels, 1, stride: 1, padding: 0L, device: device);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor temb)
    {
        using var scope = torch.NewDisposeScope();
        var h = conv1.forward(Act.Swish(norm1.forward(x)));
        h = h + temb_proj.forward(Act.Swish(temb)).unsqueeze(-1).unsqueeze(-1);
        h = conv2.forward(dropout.forward(Act.Swish(norm2.forward(h))));
        var skip = x;
        if (_in != _out) skip = conv_shortcut is not null ? conv_shortcut.forward(x) : nin_shortcut!.forward(x);
        return (skip + h).MoveToOuterDisposeScope();
    }
}

/// <summary>Single-head spatial self-attention made of 1x1 convs (q, k, v, proj_out), scale C^-1/2.</summary>
internal sealed class DdpmAttnBlock : nn.Module<Tensor, Tensor>
{
    public readonly GroupNormF norm;
    public readonly Conv2d q;
    public readonly Conv2d k;
    public readonly Conv2d v;
    public readonly Conv2d proj_out;

    public DdpmAttnBlock(long channels, Device? device) : base(nameof(DdpmAttnBlock))
    {
        norm = DdpmLayers.Normalize(channels, device);
        q = nn.Conv2d(channels, channels, 1, stride: 1, padding: 0L, device: device);
        k = nn.Conv2d(channels, channels, 1, stride: 1, padding: 0L, device: device);
        v = nn.Conv2d(channels, channels, 1, stride: 1, padding: 0L, device: device);
        proj_out = nn.Conv2d(channels, channels, 1, stride: 1, padding: 0L, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var hn = norm.forward(x);
        var qq = q.forward(hn);
        var kk = k.forward(hn);
        var vv = v.forward(hn);
        long b = qq.shape[0], c = qq.shape[1], hgt = qq.shape[2], wid = qq.shape[3];
        var qr = qq.reshape(b, c, hgt * wid).permute(0, 2, 1);   // b, hw, c
        var kr = kk.reshape(b, c, hgt * wid);                    // b, c, hw
        var w = torch.bmm(qr, kr) * Math.Pow(c, -0.5);           // b, hw(q), hw(k)
        w = nn.functional.softmax(w, 2);
        var vr = vv.reshape(b, c, hgt * wid);
        var h = torch.bmm(vr, w.permute(0, 2, 1)).reshape(b, c, hgt, wid);
        return (x + proj_out.forward(h)).MoveToOuterDisposeScope();
    }
}

/// <summary>Stride-2 3x3 conv after asymmetric (0,1,0,1) zero padding, or 2x2 average pooling.</summary>
internal sealed class DdpmDownsample : nn.Module<Tensor, Tensor>
{
    public readonly Conv2d? conv;

    public DdpmDownsample(long channels, bool withConv, Device? device) : base(nameof(DdpmDownsample))
    {
        if (withConv) conv = nn.Conv2d(channels, channels, 3, stride: 2, padding: 0L, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (conv is null) return nn.functional.avg_pool2d(x, new long[] { 2, 2 }, new long[] { 2, 2 });
        using var padded = nn.functional.pad(x, new long[] { 0, 1, 0, 1 }, PaddingModes.Constant, 0.0);
        return conv.forward(padded);
    }
}

/// <summary>Nearest 2x upsampling, optionally followed by a 3x3 conv.</summary>
internal sealed class DdpmUpsample : nn.Module<Tensor, Tensor>
{
    public readonly Conv2d? conv;

    public DdpmUpsample(long channels, bool withConv, Device? device) : base(nameof(DdpmUpsample))
    {
        if (withConv) conv = nn.Conv2d(channels, channels, 3, stride: 1, padding: 1, device: device);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var up = nn.functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
        if (conv is null) return up;
        using (up) return conv.forward(up);
    }
}

/// <summary>One resolution level: <c>block</c> (ResnetBlocks), <c>attn</c> (AttnBlocks), optional resampler.</summary>
internal sealed class DdpmLevel : nn.Module
{
    public readonly ModuleList<DdpmResnetBlock> block;
    public readonly ModuleList<DdpmAttnBlock> attn;
    public readonly DdpmDownsample? downsample;
    public readonly DdpmUpsample? upsample;

    public DdpmLevel(DdpmResnetBlock[] blocks, DdpmAttnBlock[] attns, DdpmDownsample? down, DdpmUpsample? up)
        : base(nameof(DdpmLevel))
    {
        block = new ModuleList<DdpmResnetBlock>(blocks);
        attn = new ModuleList<DdpmAttnBlock>(attns);
        downsample = down;
        upsample = up;
        RegisterComponents();
    }
}

/// <summary>The <c>temb</c> container holding <c>dense</c> (two Linear layers).</summary>
internal sealed class DdpmTemb : nn.Module
{
    public readonly ModuleList<Linear> dense;

    public DdpmTemb(long ch, long tembCh, Device? device) : base(nameof(DdpmTemb))
    {
        dense = new ModuleList<Linear>(nn.Linear(ch, tembCh, device: device), nn.Linear(tembCh, tembCh, device: device));
        RegisterComponents();
    }
}

/// <summary>The <c>mid</c> container: block_1, attn_1, block_2.</summary>
internal sealed class DdpmMid : nn.Module
{
    public readonly DdpmResnetBlock block_1;
    public readonly DdpmAttnBlock attn_1;
    public readonly DdpmResnetBlock block_2;

    public DdpmMid(long ch, long tembCh, double dropoutP, Device? device) : base(nameof(DdpmMid))
    {
        block_1 = new DdpmResnetBlock(ch, ch, tembCh, dropoutP, false, device);
        attn_1 = new DdpmAttnBlock(ch, device);
        block_2 = new DdpmResnetBlock(ch, ch, tembCh, dropoutP, false, device);
        RegisterComponents();
    }
}
