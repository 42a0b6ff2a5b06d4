using System.Text.Json;
using TorchSharp;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>Parity of the ermongroup DDPM UNet with FreeDoM's Face-GD/models/diffusion.py Model (zmagic_steps/denoiser_forward*).</summary>
public class DdpmGoldenTests
{
    public static TheoryData<string> ForwardCases() =>
        Golden.Cases("zmagic_steps", d => Path.GetFileName(d).StartsWith("denoiser_forward", StringComparison.Ordinal));

    private static (DdpmUNetConfig Config, string Weights) ModelOf(string caseId, JsonElement cj)
    {
        var caseDir = Golden.Dir(caseId);
        var config = Assert.IsType<DdpmUNetConfig>(BackboneConfig.FromJson(cj));
        var weights = Path.GetFullPath(Path.Combine(caseDir, cj.GetProperty("model").GetProperty("weights").GetString()!));
        return (config, weights);
    }

    [Theory, Trait("Category", "Golden")]
    [MemberData(nameof(ForwardCases))]
    public void Forward_float32_matches_reference(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        var cj = Golden.CaseJson(caseDir);
        var (config, weights) = ModelOf(caseDir, cj);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        using var d = DdpmDenoiser.Load(weights, config);
        Assert.Equal(ScalarType.Float32, d.DType);
        using var noGrad = torch.no_grad();
        var eps = d.Forward(inputs["x"].to(ScalarType.Float32), inputs["t"]);
        var (abs, rel) = CaseTolerance.Get(cj, "eps_f32");
        TensorAssert.Close(eps, outputs["eps_f32"], abs, rel, $"{Path.GetFileName(caseDir)} eps_f32");
    }

    [Theory, Trait("Category", "Golden")]
    [MemberData(nameof(ForwardCases))]
    public void Forward_float64_matches_reference(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        var cj = Golden.CaseJson(caseDir);
        var (config, weights) = ModelOf(caseDir, cj);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        using var d = DdpmDenoiser.Load(weights, config);
        d.To(ScalarType.Float64);
        ReferenceSinusoidSeam.UseReferenceCpuSinusoid(d);
        Assert.Equal(ScalarType.Float64, d.DType);
        using var noGrad = torch.no_grad();
        var eps = d.Forward(inputs["x"].to(ScalarType.Float64), inputs["t"]);
        Assert.Equal(ScalarType.Float64, eps.dtype);
        var (abs, rel) = CaseTolerance.Get(cj, "eps_f64");
        TensorAssert.Close(eps, outputs["eps_f64"], abs, rel, $"{Path.GetFileName(caseDir)} eps_f64");
    }

    /// <summary>
    /// The test-support reference sinusoid (what the float64 cases above feed the UNet) equals the reference's bit for bit. The
    /// production torch-op sinusoid is bounded against float64 in <see cref="TimestepSinusoidTests"/>: on libtorch 2.10 its
    /// exp rounds two DDPM frequencies (k = 3, 5 of 16) correctly where the reference's SLEEF exp is one ulp off, which moves
    /// sin(500 f) by up to 5.8e-6, more than this case's 2e-6.
    /// </summary>
    [Theory, Trait("Category", "Golden")]
    [MemberData(nameof(ForwardCases))]
    public void Timestep_sinusoid_matches_reference(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        var cj = Golden.CaseJson(caseDir);
        var (config, _) = ModelOf(caseDir, cj);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        var emb = ReferenceSinusoidSeam.Ddpm(inputs["t"], config.Ch);
        Assert.Equal(ScalarType.Float32, emb.dtype);
        var tol = cj.GetProperty("tolerance").GetProperty("temb_sinusoid_f32");
        double abs = tol.GetProperty("abs").GetDouble();
        double rel = tol.TryGetProperty("rel", out var r) ? r.GetDouble() : 0;
        TensorAssert.Close(emb, outputs["temb_sinusoid_f32"], abs, rel, $"{Path.GetFileName(caseDir)} temb_sinusoid_f32");
        Assert.True(emb.equal(outputs["temb_sinusoid_f32"]).all().item<bool>(), "the reference CPU sinusoid is not bit-exact");
    }
}

/// <summary>
/// The step cases of zmagic_steps store the reference denoiser output eps_xt = Model(x_t, ones(1)*i) in float64 (batch 1, several t):
/// an extra check of the DDPM port at other timesteps and batch size (the sinusoid's lane grouping differs from batch 2).
/// </summary>
public class DdpmStepCaseEpsTests
{
    public static TheoryData<string> StepCases() => Golden.Cases("zmagic_steps", d =>
    {
        var cj = Golden.CaseJson(d);
        return cj.TryGetProperty("sampler", out var s) && s.TryGetProperty("timestep_i", out _)
            && cj.TryGetProperty("dtype", out var dt) && dt.GetString() == "float64"
            && cj.TryGetProperty("model", out var m) && m.TryGetProperty("config", out _);
    });

    [Theory, Trait("Category", "Golden")]
    [MemberData(nameof(StepCases))]
    public void Eps_of_x_t_matches_reference_in_float64(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        var cj = Golden.CaseJson(caseDir);
        var config = Assert.IsType<DdpmUNetConfig>(BackboneConfig.FromJson(cj));
        var weights = Path.GetFullPath(Path.Combine(Golden.Dir(caseDir), cj.GetProperty("model").GetProperty("weights").GetString()!));
        int i = cj.GetProperty("sampler").GetProperty("timestep_i").GetInt32();
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        Assert.True(outputs.ContainsKey("eps_xt"), "case has no eps_xt");
        using var d = DdpmDenoiser.Load(weights, config);
        d.To(ScalarType.Float64);
        ReferenceSinusoidSeam.UseReferenceCpuSinusoid(d);
        var x = inputs["x_t"];
        var t = torch.ones(x.shape[0], dtype: ScalarType.Float32) * i;
        using var noGrad = torch.no_grad();
        var eps = d.Forward(x, t);
        var tol = cj.GetProperty("tolerance").EnumerateObject().First(p => p.Name.StartsWith("intermediates before CAGrad", StringComparison.Ordinal)).Value;
        TensorAssert.Close(eps, outputs["eps_xt"], tol.GetProperty("abs").GetDouble(), tol.GetProperty("rel").GetDouble(), $"{Path.GetFileName(caseDir)} eps_xt (t={i})");
    }
}
