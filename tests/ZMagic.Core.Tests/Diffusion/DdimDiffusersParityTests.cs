using ZMagic.Core.Diffusion;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Diffusion;

/// <summary>
/// <see cref="DdimStep"/> and <see cref="Tweedie.X0"/> against diffusers' DDIMScheduler.step (SD 1.5 config, float32),
/// fed the stored sample, model output, abar values and variance noise of every step of every chain, the last
/// step (abar' = final_alpha_cumprod) included. Tolerance: the case's own (abs 1e-5, rel 1e-5).
/// </summary>
public class DdimDiffusersParityTests
{
    public static TheoryData<string> Cases => Golden.Cases("sd_scheduler");

    [Theory]
    [Trait("Category", "Golden")]
    [MemberData(nameof(Cases))]
    public void DdimStepMatchesDiffusers(string caseDir)
    {
        var json = Golden.CaseJson(caseDir);
        double abs = json.GetProperty("tolerance").GetProperty("abs").GetDouble();
        double rel = json.GetProperty("tolerance").GetProperty("rel").GetDouble();
        using var scope = NewDisposeScope();
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        int checkedSteps = 0;
        foreach (var chain in json.GetProperty("chains").EnumerateArray())
        {
            string name = chain.GetProperty("name").GetString()!;
            double eta = chain.GetProperty("eta").GetDouble();
            var step = new DdimStep(eta);
            int count = chain.GetProperty("timesteps").GetArrayLength();
            for (int j = 0; j < count; j++)
            {
                string p = $"{name}/step{j}/";
                double a = outputs[p + "alpha_prod_t"].to(ScalarType.Float64).item<double>();
                double an = outputs[p + "alpha_prod_t_prev"].to(ScalarType.Float64).item<double>();
                var sample = outputs[p + "sample"];
                var eps = inputs[p + "model_output"];
                var x0 = Tweedie.X0(sample, eps, a);
                TensorAssert.Close(x0, outputs[p + "pred_original_sample"], abs, rel, p + "pred_original_sample");
                double variance = outputs[p + "variance"].to(ScalarType.Float64).item<double>();
                // diffusers forms 1 - a/a' in float32 (cancellation): its variance carries ~1e-5 relative error.
                if (eta > 0) Assert.Equal(variance, Math.Pow(step.Sigma(a, an) / eta, 2), 1e-4 * variance);
                var noise = eta > 0 ? inputs[p + "variance_noise"] : null;
                TensorAssert.Close(step.Step(sample, x0, eps, a, an, noise), outputs[p + "prev_sample"], abs, rel, p + "prev_sample");
                checkedSteps++;
            }
        }
        Assert.True(checkedSteps >= 6, $"only {checkedSteps} steps checked");
        foreach (var t in inputs.Values.Concat(outputs.Values)) t.Dispose();
    }
}
