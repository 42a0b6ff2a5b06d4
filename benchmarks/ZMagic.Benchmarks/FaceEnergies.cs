using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.IO;
using ZMagic.Encoders.Face;
using ZMagic.Benchmarking;
using ZMagic.Guidance.Face;
using static TorchSharp.torch;

namespace ZMagic.Benchmarks;

/// <summary>
/// The real face conditions for timing at 256x256: identity (ArcFace IR-SE50), parsing (BiSeNet, 512x512 input as in
/// FreeDoM) and landmarks (MobileFaceNet), in that order, with formula weights (no download; weights do not change the
/// cost) and a fixed random reference image. Beyond three conditions the rest are toy energies.
/// </summary>
public sealed class FaceEnergies : IDisposable
{
    private readonly IrSeBackbone _arcFace;
    private readonly BiSeNet _parser;
    private readonly MobileFaceNet _landmarker;
    private readonly Tensor _reference;
    private readonly List<IDisposable> _owned = new();

    /// <summary>Builds the three encoders on <paramref name="device"/>.</summary>
    public FaceEnergies(Device device)
    {
        _arcFace = Frozen(new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, true), device);
        _parser = Frozen(new BiSeNet(19), device);
        _landmarker = Frozen(new MobileFaceNet(), device);
        using var g = new torch.Generator(11);
        _reference = (torch.rand(new long[] { 1, 3, 256, 256 }, generator: g) * 2 - 1).to(device).DetachFromDisposeScope();
    }

    /// <summary>The first <paramref name="n"/> conditions (identity, parsing, landmarks, then toy energies).</summary>
    public IReadOnlyList<IGuidanceCondition> Conditions(int n, int channels, int size, Device device)
    {
        if (channels != 3 || size != 256)
            throw new ArgumentException($"Face energies need a 3x256x256 backbone; got {channels}x{size}x{size}.");
        var always = GuidanceWindow.Always;
        var all = new List<IGuidanceCondition>();
        if (n >= 1) all.Add(Own(new IdentityCondition(_arcFace, _reference, new IdentityOptions { Window = always })));
        if (n >= 2) all.Add(Own(new ParsingCondition(_parser, _reference, new ParsingOptions { Window = always })));
        if (n >= 3) all.Add(Own(new LandmarksCondition(_landmarker, _reference, new FaceCropBox(40, 216, 40, 216), new LandmarksOptions { Window = always })));
        if (n > 3) all.AddRange(ToyCondition.Many(n - 3, channels, size, device, seed: 2));
        return all;
    }

    private T Own<T>(T condition) where T : IDisposable
    {
        _owned.Add(condition);
        return condition;
    }

    private static T Frozen<T>(T net, Device device) where T : nn.Module
    {
        FormulaWeights.Apply(net);
        FaceCheckpoints.Freeze(net);
        net.to(device);
        return net;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var c in _owned) c.Dispose();
        _arcFace.Dispose();
        _parser.Dispose();
        _landmarker.Dispose();
        _reference.Dispose();
    }
}
