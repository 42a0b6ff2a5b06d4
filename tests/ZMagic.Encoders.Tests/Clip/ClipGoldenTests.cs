using System.Text.Json;
using TorchSharp;
using ZMagic.Encoders.Clip;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.Clip;

[Trait("Category", "Golden")]
public class ClipGoldenTests
{
    public static TheoryData<string> Cases() => Golden.Cases("clip");

    internal static ClipModel LoadCase(string caseDir, string weightsFile = "weights.safetensors")
    {
        var config = ClipConfig.FromConstructorJson(Golden.CaseJson(caseDir).GetProperty("constructor"));
        var model = new ClipModel(config);
        var sd = ZMagic.Core.IO.Checkpoint.LoadStateDict(Golden.File(caseDir, weightsFile));
        ClipWeights.Load(model, sd, Golden.File(caseDir, weightsFile));
        foreach (var t in sd.Values) t.Dispose();
        return model;
    }

    private static (double Abs, double Rel) Tol(JsonElement tol, string? section = null)
    {
        double abs = tol.GetProperty("abs").GetDouble(), rel = tol.GetProperty("rel").GetDouble();
        if (section is not null && tol.TryGetProperty(section, out var s))
        {
            if (s.TryGetProperty("abs", out var a)) abs = a.GetDouble();
            if (s.TryGetProperty("rel", out var r)) rel = r.GetDouble();
        }
        return (abs, rel);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Encoders_logits_and_block_features_match(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        using var model = LoadCase(caseDir);
        var tol = Golden.CaseJson(caseDir).GetProperty("tolerance");
        var (abs, rel) = Tol(tol);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        using var _ = torch.no_grad();

        var (img, blocks) = model.EncodeImageWithFeatures(inputs["image"]);
        TensorAssert.Close(img, outputs["encode_image"], abs, rel, "encode_image");
        TensorAssert.Close(model.EncodeImage(inputs["image"]), outputs["encode_image"], abs, rel, "encode_image (plain)");
        for (int i = 0; i < blocks.Count; i++)
        {
            var key = $"visual_block{i}_output_LND";
            if (outputs.TryGetValue(key, out var expected))
                TensorAssert.Close(blocks[i].permute(1, 0, 2), expected, abs, rel, key);
        }
        Assert.True(outputs.ContainsKey($"visual_block{blocks.Count - 1}_output_LND"), "every block's output is compared");

        var txt = model.EncodeText(inputs["text_tokens"]);
        TensorAssert.Close(txt, outputs["encode_text"], abs, rel, "encode_text");

        var (la, lr) = Tol(tol, "logits");
        var (perImage, perText) = model.forward(inputs["image"], inputs["text_tokens"]);
        TensorAssert.Close(perImage, outputs["logits_per_image"], la, lr, "logits_per_image");
        TensorAssert.Close(perText, outputs["logits_per_text"], la, lr, "logits_per_text");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Freedom_residual_loss_and_gradient_match(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        using var model = LoadCase(caseDir);
        var tol = Golden.CaseJson(caseDir).GetProperty("tolerance");
        var (abs, rel) = Tol(tol);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");

        var x0 = inputs["freedom/x0"].clone().requires_grad_(true);
        var pre = ClipPreprocess.FromSignedUnit(x0, model.Config.ImageResolution);
        TensorAssert.Close(pre, outputs["freedom/preprocessed_image"], abs, rel, "freedom/preprocessed_image");
        var (imageFeature, _) = model.EncodeImageWithFeatures(pre);
        Tensor textFeature;
        using (torch.no_grad()) textFeature = model.EncodeText(inputs["freedom/prompt_tokens"]);
        // FreeDoM: encode_text(tokenize(prompt)).repeat(N, 1) for one prompt; one row per item is used as is.
        if (textFeature.shape[0] == 1) textFeature = textFeature.repeat(x0.shape[0], 1);
        var residual = textFeature - imageFeature;
        TensorAssert.Close(residual, outputs["freedom/residual"], abs, rel, "freedom/residual");
        // FreeDoM's loss is one norm over the whole [N, D] residual (couples the items); the library guides per item,
        // so the per-item gradients are also compared item by item through dL/dx_b = (l_b/L) dl_b/dx_b.
        var loss = residual.norm();
        TensorAssert.Close(loss, outputs["freedom/loss_norm"], abs, rel, "freedom/loss_norm");
        var grad = torch.autograd.grad(new[] { loss }, new[] { x0 }, retain_graph: true)[0];
        var perItem = residual.square().sum(1).sqrt();
        var gItem = torch.autograd.grad(new[] { perItem.sum() }, new[] { x0 }, retain_graph: false)[0];
        var perItemScaled = gItem * (perItem.detach() / loss.detach()).view(-1, 1, 1, 1);
        var g = tol.GetProperty("grad");
        var expectedGrad = outputs["freedom/grad_loss_wrt_x0"];
        TensorAssert.Close(grad, expectedGrad, g.GetProperty("abs").GetDouble(), 0, "freedom/grad (abs)");
        TensorAssert.RelL2(grad, expectedGrad, g.GetProperty("rel_l2").GetDouble(), "freedom/grad (rel L2)");
        for (long b = 0; b < x0.shape[0]; b++)
        {
            TensorAssert.Close(perItemScaled[b], expectedGrad[b], g.GetProperty("abs").GetDouble(), 0, $"freedom/grad[{b}] per-item relation (abs)");
            TensorAssert.RelL2(perItemScaled[b], expectedGrad[b], g.GetProperty("rel_l2").GetDouble(), $"freedom/grad[{b}] per-item relation (rel L2)");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Pytorch_weights_file_gives_the_same_outputs(string caseDir)
    {
        // case.json: "weights.safetensors (and weights.pt where present ...)": nothing to compare when it is absent.
        if (!File.Exists(Golden.File(caseDir, "weights.pt"))) return;
        using var scope = torch.NewDisposeScope();
        using var model = LoadCase(caseDir, "weights.pt");
        var (abs, rel) = Tol(Golden.CaseJson(caseDir).GetProperty("tolerance"));
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        using var _ = torch.no_grad();
        TensorAssert.Close(model.EncodeImage(inputs["image"]), outputs["encode_image"], abs, rel, "encode_image (weights.pt)");
        TensorAssert.Close(model.EncodeText(inputs["text_tokens"]), outputs["encode_text"], abs, rel, "encode_text (weights.pt)");
        using var viaFile = ClipWeights.LoadModel(Golden.File(caseDir, "weights.pt"), model.Config);
        TensorAssert.Close(viaFile.EncodeImage(inputs["image"]), outputs["encode_image"], abs, rel, "encode_image (LoadModel weights.pt)");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Float64_model_matches_too(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        using var model = LoadCase(caseDir);
        model.to(ScalarType.Float64);
        Assert.Equal(ScalarType.Float64, model.ParameterType);
        var (abs, rel) = Tol(Golden.CaseJson(caseDir).GetProperty("tolerance"));
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        var x0 = inputs["freedom/x0"].to(ScalarType.Float64).requires_grad_(true);
        var (f, _) = model.EncodeImageWithFeatures(ClipPreprocess.FromSignedUnit(x0, model.Config.ImageResolution));
        Assert.Equal(ScalarType.Float64, f.dtype);
        var text = model.EncodeText(inputs["freedom/prompt_tokens"]).detach();
        if (text.shape[0] == 1) text = text.repeat(x0.shape[0], 1);
        var residual = text - f;
        TensorAssert.Close(residual, outputs["freedom/residual"], abs, rel, "freedom/residual (float64)");
        var loss = residual.norm();
        var grad = torch.autograd.grad(new[] { loss }, new[] { x0 }, retain_graph: false)[0];
        var gTol = Golden.CaseJson(caseDir).GetProperty("tolerance").GetProperty("grad").GetProperty("rel_l2").GetDouble();
        TensorAssert.RelL2(grad, outputs["freedom/grad_loss_wrt_x0"], gTol, "freedom/grad (float64)");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Loads_from_huggingface_layout_with_same_outputs(string caseDir)
    {
        // Build an HF-layout dict from the OpenAI weights (the inverse of the key map) and check it loads to the
        // same module: q/k/v split, projections transposed, position_ids present.
        using var scope = torch.NewDisposeScope();
        using var reference = LoadCase(caseDir);
        var hf = ClipHfLayout.ToHuggingFace(reference.state_dict());
        using var model = new ClipModel(reference.Config);
        ClipWeights.Load(model, hf, "hf dict");
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        var (abs, rel) = Tol(Golden.CaseJson(caseDir).GetProperty("tolerance"));
        using var _ = torch.no_grad();
        TensorAssert.Close(model.EncodeImage(inputs["image"]), outputs["encode_image"], abs, rel, "encode_image (HF layout)");
        TensorAssert.Close(model.EncodeText(inputs["text_tokens"]), outputs["encode_text"], abs, rel, "encode_text (HF layout)");
    }
}
