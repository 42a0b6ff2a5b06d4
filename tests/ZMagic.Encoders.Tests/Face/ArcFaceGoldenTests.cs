using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.IO;
using ZMagic.Encoders.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>IR-SE50 parity with FreeDoM's reference using formula (b) weights (golden/arcface_irse50).</summary>
[Trait("Category", "Golden")]
public class ArcFaceGoldenTests(ITestOutputHelper log)
{
    public static TheoryData<string> BackboneCases => Golden.Cases("arcface_irse50", d => Golden.Load(d, "inputs.safetensors").ContainsKey("x"));
    public static TheoryData<string> IdLossCases => Golden.Cases("arcface_irse50", d => Golden.Load(d, "inputs.safetensors").ContainsKey("image"));

    internal static IrSeBackbone Build(string caseDir)
    {
        var c = Golden.CaseJson(caseDir).GetProperty("constructor");
        var mode = c.GetProperty("mode").GetString() switch
        {
            "ir_se" => IrMode.IrSe,
            "ir" => IrMode.Ir,
            var m => throw new InvalidOperationException($"unknown mode {m}"),
        };
        var net = new IrSeBackbone(c.GetProperty("input_size").GetInt32(), c.GetProperty("num_layers").GetInt32(), mode,
            c.GetProperty("drop_ratio").GetDouble(), c.GetProperty("affine").GetBoolean());
        FormulaWeights.Apply(net);
        FaceCheckpoints.Freeze(net);
        return net;
    }

    [Theory]
    [MemberData(nameof(BackboneCases))]
    public void Backbone(string caseDir)
    {
        using var scope = NewDisposeScope();
        var (abs, rel) = FaceTestUtil.Tol(Golden.CaseJson(caseDir));
        using var net = Build(caseDir);
        var x = Golden.Load(caseDir, "inputs.safetensors")["x"];
        var e = Golden.Load(caseDir, "outputs.safetensors");
        using var noGrad = no_grad();
        var o = net.Forward(x);
        TensorAssert.Close(o.Body, e["body_output"], abs, rel, "body_output");
        TensorAssert.Close(o.Unnormalized, e["embedding_before_l2norm"], abs, rel, "embedding_before_l2norm");
        TensorAssert.Close(o.Embedding, e["embedding"], abs, rel, "embedding");
        log.WriteLine($"embedding max |diff| {(o.Embedding - e["embedding"]).abs().max().item<float>():E2}");
    }

    [Theory]
    [MemberData(nameof(IdLossCases))]
    public void FreeDoMIdLossWrapper(string caseDir)
    {
        using var scope = NewDisposeScope();
        var tol = Golden.CaseJson(caseDir).GetProperty("tolerance");
        using var net = Build(caseDir);
        var image = Golden.Load(caseDir, "inputs.safetensors")["image"];
        var e = Golden.Load(caseDir, "outputs.safetensors");
        double featAbs = tol.GetProperty("float32 img_feat/ref_feat/face_input_112").GetProperty("abs").GetDouble();

        // Reference branch: image[:1] (pooled to 256 when needed) flipped horizontally, no gradient.
        var refImage = image[..1];
        if (refImage.shape[2] != 256) refImage = FacePreprocessing.AdaptiveAvgPool(refImage, 256, 256);
        refImage = refImage.flip(-1);
        Tensor refFeat;
        using (no_grad()) refFeat = net.call(FacePreprocessing.ArcFaceInput(refImage));
        TensorAssert.Close(refFeat, e["ref_feat"], featAbs, 0, "ref_feat");

        var x = image.clone().requires_grad_(true);
        var face = FacePreprocessing.ArcFaceInput(x);
        TensorAssert.Close(face, e["face_input_112"], featAbs, 0, "face_input_112");
        var imgFeat = net.call(face);
        TensorAssert.Close(imgFeat, e["img_feat"], featAbs, 0, "img_feat");
        var residual = refFeat - imgFeat;
        TensorAssert.Close(residual, e["residual"], tol.GetProperty("float32 residual").GetProperty("abs").GetDouble(), 0, "residual");
        var loss = residual.norm();
        TensorAssert.Close(loss, e["loss_norm"], 0, tol.GetProperty("float32 loss_norm").GetProperty("rel").GetDouble(), "loss_norm");
        var grad = torch.autograd.grad([loss], [x], retain_graph: false)[0];
        var (maxAbs, relL2) = FaceTestUtil.GradClose(grad, e["grad_loss_wrt_image"], tol.GetProperty("float32 grad"), "grad_loss_wrt_image");
        log.WriteLine($"f32: loss {loss.item<float>()} vs {e["loss_norm"].item<float>()}; grad max |diff| {maxAbs:E2}, rel L2 {relL2:E2}");

        // Float64 run against the f64/* reference values (weights and inputs cast from the float32 values).
        var t64 = tol.GetProperty("float64 run vs f64/*");
        double abs64 = t64.GetProperty("abs").GetDouble(), rel64 = t64.GetProperty("rel").GetDouble();
        net.to(ScalarType.Float64);
        using (no_grad())
        {
            var ref64 = net.call(FacePreprocessing.ArcFaceInput(refImage.to(ScalarType.Float64)));
            var img64 = net.call(FacePreprocessing.ArcFaceInput(image.to(ScalarType.Float64)));
            TensorAssert.Close(img64, e["f64/img_feat"], abs64, rel64, "f64/img_feat");
            var res64 = ref64 - img64;
            TensorAssert.Close(res64, e["f64/residual"], abs64, rel64, "f64/residual");
            TensorAssert.Close(res64.norm(), e["f64/loss_norm"], abs64, rel64, "f64/loss_norm");
            log.WriteLine($"f64: residual max |diff| {(res64 - e["f64/residual"]).abs().max().item<double>():E2}");
        }
    }
}
