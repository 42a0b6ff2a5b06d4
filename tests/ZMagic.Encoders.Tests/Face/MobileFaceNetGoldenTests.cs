using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Encoders.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>MobileFaceNet parity with FreeDoM's reference on real weight files (golden/mobilefacenet_landmark).</summary>
[Trait("Category", "Golden")]
public class MobileFaceNetGoldenTests(ITestOutputHelper log)
{
    // A case is classified by its inputs (README layout): "x" = network forward, "image" = FreeDoM residual path.
    public static TheoryData<string> AllCases => Golden.Cases("mobilefacenet_landmark");
    public static TheoryData<string> ForwardCases => Golden.Cases("mobilefacenet_landmark", d => Golden.Load(d, "inputs.safetensors").ContainsKey("x"));
    public static TheoryData<string> ResidualCases => Golden.Cases("mobilefacenet_landmark", d => Golden.Load(d, "inputs.safetensors").ContainsKey("image"));

    [Theory]
    [MemberData(nameof(AllCases))]
    public void Every_case_is_run_by_one_harness(string caseDir)
    {
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        FaceTestUtil.AssertClaimed(caseDir, ("Forward", inputs.ContainsKey("x")), ("FreeDoMResidualAndGradient", inputs.ContainsKey("image")));
    }

    /// <summary>The network input side from the case's constructor (the library's MobileFaceNet is built for 112x112 only).</summary>
    internal static int InputSize(string caseDir)
    {
        var c = Golden.CaseJson(caseDir).GetProperty("constructor");
        var size = c.TryGetProperty("input_size", out var s) ? s.EnumerateArray().Select(v => v.GetInt32()).ToArray() : [112, 112];
        Assert.True(size is [112, 112], $"{caseDir}: MobileFaceNet input_size [{string.Join(", ", size)}] is not supported (GDC head: 112x112 only).");
        if (c.TryGetProperty("output_name", out var head))
            Assert.True(head.GetString()!.StartsWith("GDC", StringComparison.Ordinal), $"{caseDir}: head {head.GetString()} is not supported (GDC only).");
        return size[0];
    }

    internal static MobileFaceNet LoadNet(string caseDir)
    {
        var json = Golden.CaseJson(caseDir);
        int emb = json.GetProperty("constructor").GetProperty("embedding_size").GetInt32();
        InputSize(caseDir);
        // A case ships weights.safetensors, or names another case's file in "weights" (the residual case: "same as
        // ../forward_b2_seed1234/weights.safetensors").
        string dir = Golden.Dir(caseDir);
        string file = Path.Combine(dir, "weights.safetensors");
        if (!File.Exists(file))
        {
            var w = json.GetProperty("weights").GetString()!;
            var rel = w.Split(' ').First(s => s.EndsWith("weights.safetensors", StringComparison.Ordinal));
            file = Path.GetFullPath(Path.Combine(dir, rel));
        }
        var net = new MobileFaceNet(emb);
        var weights = ZMagic.Core.IO.SafeTensors.Load(file);
        FaceTestUtil.LoadExact(net, weights, file);
        // "weights.safetensors (+ weights.pt if present)": when a weights.pt sits beside it, it must hold the same state dict.
        var pt = Path.Combine(Path.GetDirectoryName(file)!, "weights.pt");
        if (File.Exists(pt))
        {
            var fromPt = ZMagic.Core.IO.Checkpoint.LoadStateDict(pt);
            Assert.Equal(weights.Keys.OrderBy(k => k, StringComparer.Ordinal), fromPt.Keys.OrderBy(k => k, StringComparer.Ordinal));
            foreach (var (k, v) in weights) Assert.True(v.equal(fromPt[k]).item<bool>(), $"{pt}: {k} differs from weights.safetensors");
            foreach (var t in fromPt.Values) t.Dispose();
        }
        foreach (var t in weights.Values) t.Dispose();
        net.eval();
        return net;
    }

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void Forward(string caseDir)
    {
        using var scope = NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        using var net = LoadNet(caseDir);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var expected = Golden.Load(caseDir, "outputs.safetensors");
        var (abs, rel) = FaceTestUtil.Tol(json);
        using var noGrad = no_grad();
        var (landmarks, features) = net.call(inputs["x"]);
        TensorAssert.Close(features, expected["conv_features"], abs, rel, "conv_features");
        TensorAssert.Close(landmarks, expected["landmarks"], abs, rel, "landmarks");
    }

    [Theory]
    [MemberData(nameof(ResidualCases))]
    public void FreeDoMResidualAndGradient(string caseDir)
    {
        using var scope = NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        using var net = LoadNet(caseDir);
        var cb = json.GetProperty("crop_box");
        var box = new FaceCropBox(cb.GetProperty("top").GetInt32(), cb.GetProperty("bottom").GetInt32(), cb.GetProperty("left").GetInt32(), cb.GetProperty("right").GetInt32());
        if (json.TryGetProperty("retinaface_detection_assumed", out var det))
        {
            var d = det.EnumerateArray().Select(e => e.GetDouble()).ToArray();
            Assert.Equal(box, FaceCropBox.FromDetection(d[0], d[1], d[2], d[3]));
        }
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var expected = Golden.Load(caseDir, "outputs.safetensors");
        var (abs, rel) = FaceTestUtil.Tol(json);
        var g = json.GetProperty("tolerance").GetProperty("grad");

        Tensor landmarkRef;
        using (no_grad()) landmarkRef = net.call(inputs["ref_face_112"]).Landmarks;
        TensorAssert.Close(landmarkRef, expected["landmark_ref"], abs, rel, "landmark_ref");

        var image = inputs["image"].clone().requires_grad_(true);
        var face = FacePreprocessing.LandmarkInput(image, box, InputSize(caseDir));
        TensorAssert.Close(face, expected["face_112"], abs, rel, "face_112");
        var landmarkImg = net.call(face).Landmarks;
        TensorAssert.Close(landmarkImg, expected["landmark_img"], abs, rel, "landmark_img");
        var residual = landmarkRef - landmarkImg;
        TensorAssert.Close(residual, expected["residual"], abs, rel, "residual");
        // FreeDoM's loss is one norm over the whole [B,136] residual (couples the items); the library guides per item,
        // so the per-item gradients are also compared item by item through dL/dx_b = (l_b/L) dl_b/dx_b.
        var (loss, grad, perItem) = FaceTestUtil.CoupledAndPerItemGrads(residual, image);
        TensorAssert.Close(loss, expected["loss_norm"], abs, rel, "loss_norm");
        var (maxAbs, relL2) = FaceTestUtil.GradClose(grad, expected["grad_loss_wrt_image"], g, "grad_loss_wrt_image");
        for (long b = 0; b < image.shape[0]; b++)
            FaceTestUtil.GradClose(perItem[b], expected["grad_loss_wrt_image"][b], g, $"grad_loss_wrt_image[{b}] (per-item relation)");
        log.WriteLine($"loss {loss.item<float>()} vs {expected["loss_norm"].item<float>()}; grad max |diff| {maxAbs:E2}, rel L2 {relL2:E2}");
    }
}
