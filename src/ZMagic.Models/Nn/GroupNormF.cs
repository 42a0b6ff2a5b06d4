using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ZMagic.Models.Nn;

/// <summary>
/// GroupNorm with affine <c>weight</c>/<c>bias</c> (the PyTorch <c>nn.GroupNorm</c> state-dict keys) that can compute
/// half-precision inputs in float32, as guided-diffusion's <c>GroupNorm32</c> does.
/// </summary>
internal sealed class GroupNormF : nn.Module<Tensor, Tensor>
{
    private readonly long _groups;
    private readonly double _eps;
    private readonly bool _upcastHalf;

    public readonly Parameter weight;
    public readonly Parameter bias;

    public GroupNormF(long groups, long channels, double eps, bool upcastHalf, Device? device)
        : base(nameof(GroupNormF))
    {
        if (channels % groups != 0)
            throw new ArgumentException($"GroupNorm: {channels} channels are not divisible into {groups} groups.");
        _groups = groups;
        _eps = eps;
        _upcastHalf = upcastHalf;
        weight = new Parameter(torch.ones(channels, device: device));
        bias = new Parameter(torch.zeros(channels, device: device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var dtype = x.dtype;
        bool half = dtype == ScalarType.Float16 || dtype == ScalarType.BFloat16;
        if (_upcastHalf && half)
        {
            using var scope = torch.NewDisposeScope();
            var xf = x.to(ScalarType.Float32);
            var w = weight.dtype == ScalarType.Float32 ? (Tensor)weight : weight.to(ScalarType.Float32);
            var b = bias.dtype == ScalarType.Float32 ? (Tensor)bias : bias.to(ScalarType.Float32);
            return nn.functional.group_norm(xf, _groups, w, b, _eps).to(dtype).MoveToOuterDisposeScope();
        }
        return nn.functional.group_norm(x, _groups, weight, bias, _eps);
    }
}
