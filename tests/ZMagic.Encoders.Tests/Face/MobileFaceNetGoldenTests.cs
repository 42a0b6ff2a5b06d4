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
    public static TheoryData<string> ForwardCases => Golden.Cases("mobilefacenet_landmark", d => File.Exists(Golden.File(d, "weights.safetensors")) && !Golden.CaseJson(d).TryGetProperty("crop_box", out _));
    public static TheoryData<string> ResidualCases => Golden.Cases("mobilefacenet_landmark", d => Golden.CaseJson(d).TryGetProperty("crop_box", out _));

    internal static MobileFaceNet LoadNet(string caseDir)
    {
        var json = Golden.CaseJson(caseDir);
        int emb = json.GetProperty("constructor").GetProperty("embedding_size").GetInt32();
        // The residual case reuses the forward case's weights ("same as ../forward_b2_seed1234/weights.safetensors").
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
        var face = FacePreprocessing.LandmarkInput(image, box, 112);
        TensorAssert.Close(face, expected["face_112"], abs, rel, "face_112");
        var landmarkImg = net.call(face).Landmarks;
        TensorAssert.Close(landmarkImg, expected["landmark_img"], abs, rel, "landmark_img");
        var residual = landmarkRef - landmarkImg;
        TensorAssert.Close(residual, expected["residual"], abs, rel, "residual");
        var loss = residual.norm();
        TensorAssert.Close(loss, expected["loss_norm"], abs, rel, "loss_norm");
        var grad = torch.autograd.grad([loss], [image], retain_graph: false)[0];
        var (maxAbs, relL2) = FaceTestUtil.GradClose(grad, expected["grad_loss_wrt_image"], g, "grad_loss_wrt_image");
        log.WriteLine($"loss {loss.item<float>()} vs {expected["loss_norm"].item<float>()}; grad max |diff| {maxAbs:E2}, rel L2 {relL2:E2}");
    }
}
