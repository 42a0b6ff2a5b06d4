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
        var (f8, f16, f32) = net.ResNetFeatures(x);
        TensorAssert.Close(f8, e["resnet_feat8"], abs, rel, "resnet_feat8");
        TensorAssert.Close(f16, e["resnet_feat16"], abs, rel, "resnet_feat16");
        TensorAssert.Close(f32, e["resnet_feat32"], abs, rel, "resnet_feat32");
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
        Tensor Sub8(Tensor t) => t[.., .., TensorIndex.Slice(null, null, 8), TensorIndex.Slice(null, null, 8)];

        Tensor refMask;
        using (no_grad()) refMask = net.Logits(FacePreprocessing.ParsingInput(image.flip(-1), 512));
        var x = image.clone().requires_grad_(true);
        var prep = FacePreprocessing.ParsingInput(x, 512);
        TensorAssert.Close(Sub8(prep), e["prep_image_512_sub8"], abs, rel, "prep_image_512_sub8");
        var imgMask = net.Logits(prep);
        TensorAssert.Close(Sub8(imgMask), e["img_mask_sub8"], abs, rel, "img_mask_sub8");
        var residual = refMask - imgMask;
        TensorAssert.Close(Sub8(residual), e["residual_sub8"], abs, rel, "residual_sub8");
        TensorAssert.Close(residual.sum([2, 3]), e["residual_sum_per_class"], abs, rel, "residual_sum_per_class");
        var loss = residual.norm();
        TensorAssert.Close(loss, e["loss_norm"], 0, tol.GetProperty("loss_norm").GetProperty("rel").GetDouble(), "loss_norm");
        var grad = torch.autograd.grad([loss], [x], retain_graph: false)[0];
        var (maxAbs, relL2) = FaceTestUtil.GradClose(grad, e["grad_loss_wrt_image"], tol.GetProperty("grad"), "grad_loss_wrt_image");
        log.WriteLine($"loss {loss.item<float>()} vs {e["loss_norm"].item<float>()}; grad max |diff| {maxAbs:E2}, rel L2 {relL2:E2}");
    }
}
