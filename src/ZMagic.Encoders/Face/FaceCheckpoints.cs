using System.Text.RegularExpressions;
using TorchSharp;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Face;

/// <summary>
/// Builds the face networks and loads their public checkpoints (safetensors, or PyTorch <c>.pth</c> /
/// <c>.pth.tar</c> with a <c>state_dict</c> wrapper and/or a <c>module.</c> prefix), strictly: every key must be
/// present with its shape (<c>num_batches_tracked</c> is optional, as old files lack it). Loaded networks are in eval
/// mode with their parameters frozen (<c>requires_grad = false</c>); gradients still flow to the input.
/// </summary>
public static class FaceCheckpoints
{
    /// <summary>ArcFace IR-SE50 from <c>model_ir_se50.pth</c> (TreB1eN / pSp / FreeDoM).</summary>
    public static IrSeBackbone LoadIrSe50(string path) =>
        Load(new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, affine: true), path, "ArcFace IR-SE50 (model_ir_se50.pth)");

    /// <summary>
    /// insightface iresnet from <c>backbone.pth</c>; the depth (iresnet50 or iresnet100, or any four-stage layout) is
    /// read from the checkpoint's <c>layerN.M</c> keys.
    /// </summary>
    public static IResNet LoadIResNet(string path)
    {
        var sd = Checkpoint.LoadStateDict(path);
        try
        {
            return LoadIResNet(sd, path);
        }
        finally
        {
            foreach (var t in sd.Values) t.Dispose();
        }
    }

    /// <summary>insightface iresnet from an in-memory state dict; the depth is read from its <c>layerN.M</c> keys.</summary>
    public static IResNet LoadIResNet(IReadOnlyDictionary<string, Tensor> stateDict, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(stateDict);
        var layers = IResNetLayers(stateDict.Keys, sourceName);
        return Load(new IResNet(layers), stateDict, sourceName, $"insightface iresnet [{string.Join(", ", layers)}] (backbone.pth)");
    }

    /// <summary>BiSeNet(19) face parsing from <c>79999_iter.pth</c>.</summary>
    public static BiSeNet LoadBiSeNet(string path, int nClasses = 19) =>
        Load(new BiSeNet(nClasses), path, $"BiSeNet({nClasses}) face parsing (79999_iter.pth)");

    /// <summary>MobileFaceNet 68-point landmarks from <c>mobilefacenet_model_best.pth.tar</c> (its <c>state_dict</c>).</summary>
    public static MobileFaceNet LoadMobileFaceNet(string path) =>
        Load(new MobileFaceNet(136), path, "MobileFaceNet landmarks (mobilefacenet_model_best.pth.tar)");

    /// <summary>
    /// Loads <paramref name="path"/> into <paramref name="module"/> strictly, then puts it in eval mode with frozen
    /// parameters. On a mismatch the module is disposed and a <see cref="CheckpointFormatException"/> names the file,
    /// the expected network, the network the keys look like, and the missing/unexpected/mismatched keys.
    /// </summary>
    public static T Load<T>(T module, string path, string expected) where T : nn.Module
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentException.ThrowIfNullOrEmpty(path);
        Dictionary<string, Tensor> sd;
        try
        {
            sd = Checkpoint.LoadStateDict(path);
        }
        catch
        {
            module.Dispose();
            throw;
        }
        try
        {
            return Load(module, sd, path, expected);
        }
        finally
        {
            foreach (var t in sd.Values) t.Dispose();
        }
    }

    /// <summary>Loads an in-memory state dict with the same strictness and messages as <see cref="Load{T}(T, string, string)"/>.</summary>
    public static T Load<T>(T module, IReadOnlyDictionary<string, Tensor> stateDict, string sourceName, string expected) where T : nn.Module
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(stateDict);
        try
        {
            StateDictLoader.Load(module, stateDict, new StateDictLoadOptions { SourceName = sourceName });
        }
        catch (StateDictMismatchException ex)
        {
            module.Dispose();
            string guess = Identify(stateDict.Keys);
            throw new CheckpointFormatException(sourceName,
                $"does not fit {expected}; its keys look like {guess}. {ex.Report.Describe()}", ex);
        }
        catch
        {
            module.Dispose();
            throw;
        }
        Freeze(module);
        return module;
    }

    /// <summary>Puts a network in eval mode and stops gradients to its parameters (inputs still get gradients).</summary>
    public static void Freeze(nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        module.eval();
        foreach (var p in module.parameters()) p.requires_grad = false;
    }

    /// <summary>Names the face network whose checkpoint keys these look like (for error messages).</summary>
    public static string Identify(IEnumerable<string> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var set = keys.Select(k => k.StartsWith("module.", StringComparison.Ordinal) ? k["module.".Length..] : k).ToHashSet(StringComparer.Ordinal);
        if (set.Count == 0) return "nothing (no tensors)";
        if (set.Any(k => k.StartsWith("cp.resnet.", StringComparison.Ordinal))) return "BiSeNet face parsing";
        if (set.Any(k => k.StartsWith("body.", StringComparison.Ordinal)) && set.Contains("input_layer.0.weight"))
            return set.Any(k => k.Contains(".fc1.", StringComparison.Ordinal)) ? "ArcFace IR-SE (TreB1eN Backbone, ir_se)" : "ArcFace IR (TreB1eN Backbone, ir)";
        if (set.Contains("conv_23.conv.conv.weight")) return "MobileFaceNet";
        if (set.Contains("layer1.0.prelu.weight") && set.Contains("features.weight")) return "insightface iresnet";
        if (set.Any(k => k.StartsWith("model.diffusion_model.", StringComparison.Ordinal))) return "a Stable Diffusion UNet";
        return $"an unknown network (first keys: {string.Join(", ", set.OrderBy(k => k, StringComparer.Ordinal).Take(3))})";
    }

    private static readonly Regex LayerKey = new(@"^layer([1-4])\.(\d+)\.", RegexOptions.CultureInvariant);

    private static int[] IResNetLayers(IEnumerable<string> keys, string source)
    {
        var depth = new int[4];
        foreach (var k in keys)
        {
            var m = LayerKey.Match(k.StartsWith("module.", StringComparison.Ordinal) ? k["module.".Length..] : k);
            if (!m.Success) continue;
            int stage = m.Groups[1].Value[0] - '1';
            depth[stage] = Math.Max(depth[stage], int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) + 1);
        }
        if (depth.Any(d => d == 0))
            throw new CheckpointFormatException(source, $"is not an insightface iresnet checkpoint: no layer1..layer4 blocks found; its keys look like {Identify(keys)}.");
        return depth;
    }
}
