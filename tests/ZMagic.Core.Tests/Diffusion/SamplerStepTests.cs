using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Diffusion;

/// <summary>The sampler steps against the reference formulas, the golden FreeDoM steps and each other.</summary>
public class SamplerStepTests
{
    public static TheoryData<string> GoldenStepCases => Golden.Cases("zmagic_steps", IsSingleStepCase);

    /// <summary>A case of one sampler step from a stored x_t (sampler.timestep_i in case.json).</summary>
    internal static bool IsSingleStepCase(string dir)
    {
        var json = Golden.CaseJson(dir);
        return json.TryGetProperty("sampler", out var sampler) && sampler.ValueKind == System.Text.Json.JsonValueKind.Object
            && sampler.TryGetProperty("timestep_i", out _) && File.Exists(Golden.File(dir, "inputs.safetensors"));
    }

    /// <summary>
    /// The base (unguided) step of every single-step FreeDoM / Z-Magic case: Tweedie x0 and the FreeDoM eta step or the
    /// DDPM posterior step from the stored x_t, eps, abar values and noise draw. Tolerance: the case's own float64
    /// tolerance for intermediates (abs 1e-10, rel 1e-9); float32 case: abs 1e-5, rel 1e-5 (the reference multiplies
    /// by float32 abar tensors, we by float64 scalars).
    /// </summary>
    [Theory]
    [Trait("Category", "Golden")]
    [MemberData(nameof(GoldenStepCases))]
    public void BaseStepMatchesTheReference(string caseDir)
    {
        var json = Golden.CaseJson(caseDir);
        bool f64 = json.GetProperty("dtype").GetString() == "float64";
        double abs = f64 ? 1e-10 : 1e-5, rel = f64 ? 1e-9 : 1e-5;
        using var scope = torch.NewDisposeScope();
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        double a = PerItemScalar(outputs["at"]), an = PerItemScalar(outputs["at_next"]);
        var xt = inputs["x_t"];
        var eps = outputs["eps_xt"];
        var x0 = Tweedie.X0(xt, eps, a);
        TensorAssert.Close(x0, outputs["x0_t"], abs, rel, "x0_t");

        ISamplerStep step;
        if (outputs.ContainsKey("c1"))
        {
            step = new DdpmPosteriorStep();
            var (c1, c2, c3) = DdpmPosteriorStep.Coefficients(a, an);
            Assert.True(Math.Abs(c1 - PerItemScalar(outputs["c1"])) <= abs + rel * Math.Abs(c1), $"c1 {c1:R}");
            Assert.True(Math.Abs(c3 - PerItemScalar(outputs["c3"])) <= abs + rel * Math.Abs(c3), $"c3 {c3:R}");
            if (outputs.TryGetValue("c2", out var c2Ref)) Assert.True(Math.Abs(c2 - PerItemScalar(c2Ref)) <= abs + rel * Math.Abs(c2), $"c2 {c2:R}");
        }
        else
        {
            step = new FreeDoMEtaStep(json.GetProperty("sampler").GetProperty("eta").GetDouble());
        }
        var next = step.Step(xt, outputs["x0_t"], eps, a, an, inputs["noise_0"]);
        TensorAssert.Close(next, outputs["xt_next_base"], abs, rel, $"{step.Name} xt_next_base");
        if (f64)
        {
            // Same operations in the same order as the reference (elementwise IEEE multiplies and adds, the scalar
            // coefficients in float64): the float64 result is bit-exact, which the tolerance above cannot show.
            double maxDiff = (next - outputs["xt_next_base"]).abs().max().item<double>();
            Assert.True(maxDiff == 0, $"{step.Name}: max |diff| {maxDiff:E3}; expected bit-exact (an operation-order change shows here)");
        }
        foreach (var t in inputs.Values.Concat(outputs.Values)) t.Dispose();
    }

    [Fact]
    public void FreeDoMStepMatchesItsFormula()
    {
        using var scope = torch.NewDisposeScope();
        var gen = new Generator(1);
        var x0 = torch.randn(new long[] { 2, 3, 4, 4 }, ScalarType.Float64, generator: gen);
        var eps = torch.randn(new long[] { 2, 3, 4, 4 }, ScalarType.Float64, generator: gen);
        var z = torch.randn(new long[] { 2, 3, 4, 4 }, ScalarType.Float64, generator: gen);
        double an = 0.6;
        var got = new FreeDoMEtaStep(0.5).Step(x0, x0, eps, 0.4, an, z);
        var want = x0 * Math.Sqrt(an) + z * (0.5 * Math.Sqrt(1 - an)) + eps * (Math.Sqrt(0.75) * Math.Sqrt(1 - an));
        TensorAssert.Close(got, want, 1e-15, 1e-14, "freedom step");
        // eta = 0 is DDIM(0).
        TensorAssert.Close(new FreeDoMEtaStep(0).Step(x0, x0, eps, 0.4, an, null), new DdimStep(0).Step(x0, x0, eps, 0.4, an, null), 1e-15, 1e-15, "eta 0");
        Assert.False(new FreeDoMEtaStep(0).UsesNoise);
        Assert.True(new FreeDoMEtaStep(0.5).UsesNoise);
    }

    [Theory]
    [InlineData(0.9, 0.95)]
    [InlineData(0.01, 0.02)]
    [InlineData(0.3, 1.0)] // the last step
    public void DdimWithEtaOneIsTheDdpmPosterior(double a, double an)
    {
        // Song et al.: eta = 1 gives sigma^2 = the posterior variance and the posterior mean, once eps and x0 are
        // consistent (x0 = Tweedie(x_t, eps)).
        using var scope = torch.NewDisposeScope();
        var gen = new Generator(2);
        var xt = torch.randn(new long[] { 2, 3, 4, 4 }, ScalarType.Float64, generator: gen);
        var eps = torch.randn(new long[] { 2, 3, 4, 4 }, ScalarType.Float64, generator: gen);
        var z = torch.randn(new long[] { 2, 3, 4, 4 }, ScalarType.Float64, generator: gen);
        var x0 = Tweedie.X0(xt, eps, a);
        var ddim = new DdimStep(1.0).Step(xt, x0, eps, a, an, z);
        var ddpm = new DdpmPosteriorStep().Step(xt, x0, eps, a, an, z);
        Assert.True(ddim.isfinite().all().item<bool>() && ddpm.isfinite().all().item<bool>());
        TensorAssert.Close(ddim, ddpm, 1e-12, 1e-12, "ddim(1) vs ddpm posterior");
        Assert.Equal(DdpmPosteriorStep.Coefficients(a, an).C3, new DdimStep(1.0).Sigma(a, an), 14);
    }

    [Fact]
    public void LastStepCoefficientsAreFinite()
    {
        // abar' = 1 at t' = -1: no NaN from log(0), 0/0 or a negative square root.
        var (c1, c2, c3) = DdpmPosteriorStep.Coefficients(0.9999, 1.0);
        Assert.Equal(1.0, c1, 14);
        Assert.Equal(0.0, c2);
        Assert.Equal(0.0, c3);
        Assert.Equal(0.0, new DdimStep(1.0).Sigma(0.9999, 1.0));
        Assert.Equal(0.0, new FreeDoMEtaStep(0.5).NoiseCoefficient(1.0));
        Assert.Equal(0.0, new FreeDoMEtaStep(0.5).EpsilonCoefficient(1.0));
    }

    [Fact]
    public void StepsRejectBadArguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new FreeDoMEtaStep(1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FreeDoMEtaStep(double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DdimStep(-0.1));
        using var scope = torch.NewDisposeScope();
        var x = torch.zeros(1, 1, 2, 2, ScalarType.Float64);
        // Going away from the clean end, or abar outside (0, 1].
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new DdimStep(0).Step(x, x, x, 0.5, 0.4, null));
        Assert.Contains("abar_t'", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => DdpmPosteriorStep.Coefficients(0.0, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FreeDoMEtaStep(0.5).Step(x, x, x, 0.5, 1.5, x));
        // A noisy step without its draw.
        var n = Assert.Throws<ArgumentNullException>(() => new FreeDoMEtaStep(0.5).Step(x, x, x, 0.5, 0.6, null));
        Assert.Contains("noise", n.Message);
        Assert.Throws<ArgumentNullException>(() => new DdpmPosteriorStep().Step(x, x, x, 0.5, 0.6, null));
        Assert.Throws<ArgumentNullException>(() => new DdimStep(1).Step(x, x, x, 0.5, 0.6, null));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tweedie.X0(x, x, 0.0));
    }

    /// <summary>
    /// A per-step constant the reference stores per item ([n,1,1,1] at batch n; every item has the same t): asserts all
    /// items agree and returns the value.
    /// </summary>
    internal static double PerItemScalar(Tensor stored)
    {
        var v = stored.to(ScalarType.Float64).flatten().data<double>().ToArray();
        Assert.All(v, e => Assert.Equal(v[0], e));
        return v[0];
    }
}
