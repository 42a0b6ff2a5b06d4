using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.IO;
using ZMagic.Encoders.Face;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Face;

/// <summary>BiSeNet parity with FreeDoM's reference using formula (b) weights (golden/bisenet_parsing).</summary>
[Trait("Category", "Golden")]
public class BiSeNetGoldenTests(ITestOutputHelper log)
{
    public static TheoryData<string> ForwardCases => Golden.Cases("bisenet_parsing", d => Golden.Load(d, "inputs.safetensors").ContainsKey("x"));
    public static TheoryData<string> ResidualCases => Golden.Cases("bisenet_parsing", d => Golden.Load(d, "inputs.safetensors").ContainsKey("image"));

    public static TheoryData<string> AllCases => Golden.Cases("bisenet_parsing");

    [Theory]
    [MemberData(nameof(AllCases))]
    public void Every_case_is_run_by_one_harness(string caseDir)
    {
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        FaceTestUtil.AssertClaimed(caseDir, ("Forward", inputs.ContainsKey("x")), ("FreeDoMResidualAndGradient", inputs.ContainsKey("image")));
    }

    internal static BiSeNet Build(string caseDir)
    {
        var net = new BiSeNet(Golden.CaseJson(caseDir).GetProperty("constructor").GetProperty("n_classes").GetInt32());
        FormulaWeights.Apply(net);
        FaceCheckpoints.Freeze(net);
        return net;
    }

    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void Forward(string caseDir)
    {
        using var scope = NewDisposeScope();
        var (abs, rel) = FaceTestUtil.Tol(Golden.CaseJson(caseDir));
        using var net = Build(caseDir);
        var x = Golden.Load(caseDir, "inputs.safetensors")["x"];
        var e = Golden.Load(caseDir, "outputs.safetensors");
        using var noGrad = no_grad();
        // resnet_feat* are "intermediate (for debugging)": compared when stored. Any batch and input size: x is [B,3,H,W].
        if (e.Keys.Any(k => k.StartsWith("resnet_feat", StringComparison.Ordinal)))
        {
            var (f8, f16, f32) = net.ResNetFeatures(x);
            FaceTestUtil.CloseIfPresent(e, "resnet_feat8", f8, abs, rel);
            FaceTestUtil.CloseIfPresent(e, "resnet_feat16", f16, abs, rel);
            FaceTestUtil.CloseIfPresent(e, "resnet_feat32", f32, abs, rel);
        }
        var (o, o16, o32) = net.call(x);
        TensorAssert.Close(o, e["feat_out"], abs, rel, "feat_out");
        TensorAssert.Close(o16, e["feat_out16"], abs, rel, "feat_out16");
        TensorAssert.Close(o32, e["feat_out32"], abs, rel, "feat_out32");
        log.WriteLine($"feat_out max |diff| {(o - e["feat_out"]).abs().max().item<float>():E2}");
    }

    [Theory]
    [MemberData(nameof(ResidualCases))]
    public void FreeDoMResidualAndGradient(string caseDir)
    {
        using var scope = NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        var (abs, rel) = FaceTestUtil.Tol(json);
        var tol = json.GetProperty("tolerance");
        using var net = Build(caseDir);
        var image = Golden.Load(caseDir, "inputs.safetensors")["image"];
        var e = Golden.Load(caseDir, "outputs.safetensors");
        // FreeDoM resizes to 512 (FaceParseTool); the stored "*_sub8" tensors are [:, :, ::8, ::8] of the 512 maps.
        const long size = 512;
        Tensor Sub8(Tensor t) => t[.., .., TensorIndex.Slice(null, null, 8), TensorIndex.Slice(null, null, 8)];

        // image_y = image.flip(-1) for the whole batch (per item), no gradient.
        Tensor refMask;
        using (no_grad()) refMask = net.Logits(FacePreprocessing.ParsingInput(image.flip(-1), size));
        var x = image.clone().requires_grad_(true);
        var prep = FacePreprocessing.ParsingInput(x, size);
        FaceTestUtil.CloseIfPresent(e, "prep_image_512_sub8", Sub8(prep), abs, rel);
        var imgMask = net.Logits(prep);
        FaceTestUtil.CloseIfPresent(e, "img_mask_sub8", Sub8(imgMask), abs, rel);
        var residual = refMask - imgMask;
        FaceTestUtil.CloseIfPresent(e, "residual_sub8", Sub8(residual), abs, rel);
        FaceTestUtil.CloseIfPresent(e, "residual_sum_per_class", residual.sum([2, 3]), abs, rel);
        // FreeDoM's loss is one norm over the whole [B,19,512,512] residual (couples the items); the library guides per
        // item, so the per-item gradients are also compared item by item through dL/dx_b = (l_b/L) dl_b/dx_b.
        var (loss, grad, perItem) = FaceTestUtil.CoupledAndPerItemGrads(residual, x);
        TensorAssert.Close(loss, e["loss_norm"], 0, tol.GetProperty("loss_norm").GetProperty("rel").GetDouble(), "loss_norm");
        var expectedGrad = e["grad_loss_wrt_image"];
        var (maxAbs, relL2) = FaceTestUtil.GradClose(grad, expectedGrad, tol.GetProperty("grad"), "grad_loss_wrt_image");
        for (long b = 0; b < image.shape[0]; b++)
            FaceTestUtil.GradClose(perItem[b], expectedGrad[b], tol.GetProperty("grad"), $"grad_loss_wrt_image[{b}] (per-item relation)");
        log.WriteLine($"loss {loss.item<float>()} vs {e["loss_norm"].item<float>()}; grad max |diff| {maxAbs:E2}, rel L2 {relL2:E2}");
    }
}
