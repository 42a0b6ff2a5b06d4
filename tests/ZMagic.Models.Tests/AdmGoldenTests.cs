using TorchSharp;
using ZMagic.Models.Adm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>Parity of AdmUNet with guided-diffusion's UNetModel (guided_unet/* cases, FreeDoM's copy), from .safetensors and .pt weights.</summary>
public class AdmGoldenTests
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var dir in Golden.Cases("guided_unet"))
            foreach (var file in new[] { "weights.safetensors", "weights.pt" })
                if (File.Exists(Path.Combine(dir, file))) data.Add(dir, file);
        return data;
    }

    [Theory, Trait("Category", "Golden")]
    [MemberData(nameof(Cases))]
    public void Forward_matches_reference(string caseDir, string weightsFile)
    {
        using var scope = torch.NewDisposeScope();
        var cj = Golden.CaseJson(caseDir);
        var config = Assert.IsType<AdmUNetConfig>(BackboneConfig.FromJson(cj));
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        using var d = AdmDenoiser.Load(Path.Combine(caseDir, weightsFile), config);
        Assert.Equal(config.LearnSigma, d.LearnedSigma);
        using var noGrad = torch.no_grad();
        var y = d.Forward(inputs["x"], inputs["t"]);
        var (abs, rel) = CaseTolerance.Get(cj, "out");
        TensorAssert.Close(y, outputs["out"], abs, rel, $"{Path.GetFileName(caseDir)}/{weightsFile} out");
    }

    [Theory, Trait("Category", "Golden")]
    [MemberData(nameof(Cases))]
    public void Float64_forward_agrees_with_the_float32_reference(string caseDir, string weightsFile)
    {
        if (weightsFile != "weights.safetensors") return; // one dtype check per case is enough
        using var scope = torch.NewDisposeScope();
        var cj = Golden.CaseJson(caseDir);
        var config = Assert.IsType<AdmUNetConfig>(BackboneConfig.FromJson(cj));
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        using var d = AdmDenoiser.Load(Path.Combine(caseDir, weightsFile), config);
        d.To(ScalarType.Float64);
        using var noGrad = torch.no_grad();
        var y = d.Forward(inputs["x"].to(ScalarType.Float64), inputs["t"]);
        Assert.Equal(ScalarType.Float64, y.dtype);
        var (abs, rel) = CaseTolerance.Get(cj, "out");
        TensorAssert.Close(y, outputs["out"], abs, rel, $"{Path.GetFileName(caseDir)} float64 out");
    }
}
