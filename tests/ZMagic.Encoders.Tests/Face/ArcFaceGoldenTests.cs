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
    // A case is classified by its inputs (README layout): "x" = backbone forward, "image" = FreeDoM IDLoss wrapper.
    public static TheoryData<string> AllCases => Golden.Cases("arcface_irse50");
    public static TheoryData<string> BackboneCases => Golden.Cases("arcface_irse50", d => Golden.Load(d, "inputs.safetensors").ContainsKey("x"));
    public static TheoryData<string> IdLossCases => Golden.Cases("arcface_irse50", d => Golden.Load(d, "inputs.safetensors").ContainsKey("image"));

    [Theory]
    [MemberData(nameof(AllCases))]
    public void Every_case_is_run_by_one_harness(string caseDir)
    {
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        FaceTestUtil.AssertClaimed(caseDir, ("Backbone", inputs.ContainsKey("x")), ("FreeDoMIdLossWrapper", inputs.ContainsKey("image")));
    }

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
        // The intermediates are diagnostics: compared when the case stores them; the embedding is the case's output.
        FaceTestUtil.CloseIfPresent(e, "body_output", o.Body, abs, rel);
        FaceTestUtil.CloseIfPresent(e, "embedding_before_l2norm", o.Unnormalized, abs, rel);
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
        static Tensor RefImage(Tensor image)
        {
            var r = image[..1];
            if (r.shape[2] != 256) r = FacePreprocessing.AdaptiveAvgPool(r, 256, 256);
            return r.flip(-1);
        }
        var refImage = RefImage(image);
        Tensor refFeat;
        long face = net.InputSize;
        using (no_grad()) refFeat = net.call(FacePreprocessing.ArcFaceInput(refImage, face));
        TensorAssert.Close(refFeat, e["ref_feat"], featAbs, 0, "ref_feat");

        var x = image.clone().requires_grad_(true);
        var faceInput = FacePreprocessing.ArcFaceInput(x, face);
        TensorAssert.Close(faceInput, e["face_input_112"], featAbs, 0, "face_input_112");
        var imgFeat = net.call(faceInput);
        TensorAssert.Close(imgFeat, e["img_feat"], featAbs, 0, "img_feat");
        var residual = refFeat - imgFeat; // [1,512] - [B,512]: the reference image is image[:1], broadcast
        TensorAssert.Close(residual, e["residual"], tol.GetProperty("float32 residual").GetProperty("abs").GetDouble(), 0, "residual");
        // FreeDoM's loss is torch.linalg.norm over the whole [B,512] residual, coupling the items; the library guides per
        // item. Compare the coupled gradient directly and, item by item, the per-item gradients through
        // dL/dx_b = (||r_b|| / L) d||r_b||/dx_b (identical for B = 1).
        var (loss, grad, perItem) = FaceTestUtil.CoupledAndPerItemGrads(residual, x);
        TensorAssert.Close(loss, e["loss_norm"], 0, tol.GetProperty("float32 loss_norm").GetProperty("rel").GetDouble(), "loss_norm");
        var gradTol = tol.GetProperty("float32 grad");
        var expectedGrad = e["grad_loss_wrt_image"];
        var (maxAbs, relL2) = FaceTestUtil.GradClose(grad, expectedGrad, gradTol, "grad_loss_wrt_image");
        for (long b = 0; b < image.shape[0]; b++)
            FaceTestUtil.GradClose(perItem[b], expectedGrad[b], gradTol, $"grad_loss_wrt_image[{b}] (per-item relation)");
        log.WriteLine($"f32 B={image.shape[0]}: loss {loss.item<float>()} vs {e["loss_norm"].item<float>()}; grad max |diff| {maxAbs:E2}, rel L2 {relL2:E2}");

        // Float64 run against the f64/* reference values (weights and inputs cast from the float32 values), when stored.
        if (!e.ContainsKey("f64/img_feat"))
        {
            log.WriteLine("no f64/* outputs in this case: float64 run skipped");
            return;
        }
        var t64 = tol.GetProperty("float64 run vs f64/*");
        double abs64 = t64.GetProperty("abs").GetDouble(), rel64 = t64.GetProperty("rel").GetDouble();
        net.to(ScalarType.Float64);
        using (no_grad())
        {
            // The float64 reference derives its reference image from the float64 input (pooling before the cast would
            // differ by float32 rounding when H != 256).
            var ref64 = net.call(FacePreprocessing.ArcFaceInput(RefImage(image.to(ScalarType.Float64)), face));
            var img64 = net.call(FacePreprocessing.ArcFaceInput(image.to(ScalarType.Float64), face));
            TensorAssert.Close(img64, e["f64/img_feat"], abs64, rel64, "f64/img_feat");
            var res64 = ref64 - img64;
            FaceTestUtil.CloseIfPresent(e, "f64/residual", res64, abs64, rel64);
            FaceTestUtil.CloseIfPresent(e, "f64/loss_norm", res64.norm(), abs64, rel64);
            log.WriteLine($"f64: residual max |diff| {(res64 - e["f64/residual"]).abs().max().item<double>():E2}");
        }
    }
}
