using System.Text.RegularExpressions;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Models.Adm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests.GuidedSteps;

/// <summary>
/// golden/freedom_step: FreeDoM's own guided sampling loops (arcface-style DDIM eta 0.5 with a stop, clip-style DDPM
/// posterior with the norm-relative step, and time-travel) run with the tiny guided UNet, reproduced by the Vanilla
/// strategy: every model call from its stored input state (eps, x0, the next state and the final state checked), for
/// any batch size, number of steps and seed the case holds. At batch B > 1 each item runs alone, with the
/// reference's whole-batch norm folded into its step size (docs/strategies.md, "Batches").
/// </summary>
[Trait("Category", "Golden")]
public class FreeDoMStepGoldenTests
{
    public static TheoryData<string> Cases() => Golden.Cases("freedom_step");

    private sealed class Target : IGuidanceCondition
    {
        private readonly Tensor _target;
        public Target(Tensor target, IStepSizeRule rule, GuidanceWindow window) { _target = target; Schedule = new GuidanceSchedule(rule, window); }
        public string Name => "target";
        public GuidanceSchedule Schedule { get; }
        public Tensor Energy(Tensor x0) => (_target - x0).flatten(1).square().sum(1).sqrt();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LoopMatchesTheReference(string caseId)
    {
        var caseDir = Golden.Dir(caseId);
        using var scope = torch.NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        string name = Path.GetFileName(caseDir);
        var modelNote = json.GetProperty("model").GetString()!;
        var rel = Regex.Match(modelNote, @"from (\S+weights\.safetensors)").Groups[1].Value;
        var weights = Path.GetFullPath(Path.Combine(caseDir, rel));
        var unetCase = Path.GetDirectoryName(weights)!;
        var config = Assert.IsType<AdmUNetConfig>(BackboneConfig.FromJson(Golden.CaseJson(unetCase)));
        using var model = AdmDenoiser.Load(weights, config);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        double abs = json.GetProperty("tolerance").GetProperty("abs").GetDouble(), relTol = json.GetProperty("tolerance").GetProperty("rel").GetDouble();
        var alphas = inputs["alphas_cumprod_with_leading_1"].data<float>().ToArray();
        double Abar(int t) => alphas[t + 1];
        var seq = json.GetProperty("seq").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var called = json.GetProperty("called_with");
        bool clip = json.GetProperty("reference_function").GetString()!.EndsWith("clip_ddim_diffusion", StringComparison.Ordinal);
        bool imagenet = called.TryGetProperty("domain", out var dom) && dom.GetString() == "imagenet";
        var x = inputs["x_T"];
        long batch = x.shape[0];
        // clip_ddim_diffusion calls .item() on a [n,1,1,1] tensor, so the reference itself only runs at batch 1.
        Assert.True(!clip || batch == 1, $"{name}: clip_ddim_diffusion cannot run with batch {batch} in the reference (.item() on [n,1,1,1]); the case cannot come from it");
        ISamplerStep sampler = clip ? new DdpmPosteriorStep() : new FreeDoMEtaStep(0.5);
        // The condition for one item. At batch 1 it is exactly the reference's. At batch B the reference's energy is
        // the norm over the whole batch, so item b's gradient is the library's per-item gradient times
        // ||r_b|| / ||r|| (docs/strategies.md, "Batches"); that factor goes into item b's step size. Each item then runs
        // alone (batch 1), so the comparison holds whether the library's step sizes are per item or batch-wide.
        IGuidanceCondition Condition(double factor) => clip
            ? new Target(inputs["target"], new NormRelativeStepSize(0.02), GuidanceWindow.Always)
            : new Target(inputs["target"], new SqrtAlphaBarStepSize(called.GetProperty("rho_scale").GetDouble() * factor), new GuidanceWindow(Stop: called.GetProperty("stop").GetInt32()));
        var noise = inputs["noise"];
        Assert.Equal(batch, noise.shape[1]);
        int draw = 0, call = 0;
        Tensor? lastX0 = null;
        for (int s = seq.Length - 1; s >= 0; s--)
        {
            int i = seq[s], j = s > 0 ? seq[s - 1] : -1;
            int repeat = imagenet && i >= 500 && i <= 800 ? 10 : 1;
            for (int r = 0; r < repeat; r++)
            {
                string key = $"step{call:D3}/";
                // Step by step, as the case's tolerance note asks: every call starts from the stored state entering it
                // (errors of a chained run grow with the number of calls, which an unseen case may make large), and its
                // result is compared with the stored state entering the next call (or x_final).
                if (call == 0) TensorAssert.Close(x, outputs[key + "xt"], abs, relTol, $"{name} {key}xt = x_T");
                x = outputs[key + "xt"];
                Assert.All(outputs[key + "t"].data<float>().ToArray(), v => Assert.Equal((float)i, v));
                var stepNoise = noise[draw++];
                var factors = CouplingFactors(inputs["target"], outputs[key + "x0_t"], outputs[key + "energy_norm"]);
                var (next, seen) = RunPerItem(model, x, i, j, Abar(i), Abar(j), sampler, stepNoise, factors.Select(Condition).ToArray());
                TensorAssert.Close(seen["eps"], outputs[key + "model_out"].narrow(1, 0, 3), abs, relTol, $"{name} {key}model_out[:, :3]");
                TensorAssert.Close(seen["x0"], outputs[key + "x0_t"], abs, relTol, $"{name} {key}x0_t");
                lastX0 = seen["x0"];
                x = next;
                if (r + 1 < repeat)
                {
                    // Time travel back to t (FreeDoM's recurrent strategy, as ConditionalSampler applies it).
                    var z = noise[draw++];
                    double a = Abar(i), an = Abar(j);
                    x = x * Math.Sqrt(a / an) + z * Math.Sqrt(1 - a / an);
                }
                call++;
                var nextKey = $"step{call:D3}/xt";
                if (outputs.ContainsKey(nextKey)) TensorAssert.Close(x, outputs[nextKey], abs, relTol, $"{name} {nextKey} (from stored {key}xt)");
            }
        }
        Assert.Equal((int)noise.shape[0], draw);
        Assert.False(outputs.ContainsKey($"step{call:D3}/xt"), $"{name}: the reference made more model calls than {call}");
        TensorAssert.Close(x, outputs["x_final"], abs, relTol, $"{name} x_final (from the last stored xt)");
        TensorAssert.Close(lastX0!, outputs["x0_final"], abs, relTol, $"{name} x0_final");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EnergyNormsMatch(string caseId)
    {
        var caseDir = Golden.Dir(caseId);
        using var scope = torch.NewDisposeScope();
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var target = new Target(inputs["target"], new ConstantStepSize(0), GuidanceWindow.Always);
        var tol = Golden.CaseJson(caseDir).GetProperty("tolerance");
        double abs = tol.GetProperty("abs").GetDouble(), rel = tol.GetProperty("rel").GetDouble();
        foreach (var key in outputs.Keys.Where(k => k.EndsWith("/x0_t", StringComparison.Ordinal)))
        {
            // The library's energies are per item; the reference's norm runs over the whole batch = sqrt(sum e_b^2).
            var e = target.Energy(outputs[key]).square().sum().sqrt();
            var expected = outputs[key[..^"x0_t".Length] + "energy_norm"];
            TensorAssert.Close(e.reshape(expected.shape), expected, abs, rel, $"{Path.GetFileName(caseDir)} {key} energy_norm");
        }
    }

    /// <summary>
    /// ||r_b|| / ||r|| per item from the reference's stored x0_t (per item) and energy_norm (whole batch): the factor
    /// between the reference's coupled gradient and the library's per-item one. Exactly 1 at batch 1.
    /// </summary>
    private static double[] CouplingFactors(Tensor target, Tensor x0Ref, Tensor energyNorm)
    {
        long batch = x0Ref.shape[0];
        if (batch == 1) return new[] { 1.0 };
        var perItem = (target - x0Ref).to(ScalarType.Float64).flatten(1).square().sum(1).sqrt().data<double>().ToArray();
        double whole = energyNorm.to(ScalarType.Float64).item<double>();
        return perItem.Select(v => v / whole).ToArray();
    }

    /// <summary>Runs each batch item alone with its own condition and stacks the results (item order kept).</summary>
    private static (Tensor Next, Dictionary<string, Tensor> Seen) RunPerItem(IDenoiser model, Tensor x, int i, int j, double a, double an,
        ISamplerStep sampler, Tensor noise, IGuidanceCondition[] conditions)
    {
        if (conditions.Length == 1) return Run(model, x, i, j, a, an, sampler, noise, conditions[0]);
        var parts = Enumerable.Range(0, conditions.Length)
            .Select(b => Run(model, x.narrow(0, b, 1), i, j, a, an, sampler, noise.narrow(0, b, 1), conditions[b])).ToList();
        var seen = parts[0].Seen.Keys.Where(k => parts.All(p => p.Seen.ContainsKey(k) && p.Seen[k].dim() > 0 && p.Seen[k].shape[0] == 1))
            .ToDictionary(k => k, k => torch.cat(parts.Select(p => p.Seen[k]).ToArray(), 0));
        return (torch.cat(parts.Select(p => p.Next).ToArray(), 0), seen);
    }

    private static (Tensor Next, Dictionary<string, Tensor> Seen) Run(IDenoiser model, Tensor x, int i, int j, double a, double an,
        ISamplerStep sampler, Tensor noise, IGuidanceCondition condition)
    {
        var seen = new Dictionary<string, Tensor>();
        var step = new GuidedStep
        {
            Denoiser = model,
            X = x,
            TimestepTensor = torch.ones(x.shape[0], dtype: ScalarType.Float32) * i,
            Timesteps = new TimestepPair(i, j),
            AlphaBar = a,
            AlphaBarNext = an,
            Sampler = sampler,
            Noise = noise,
            Conditions = new[] { condition },
            Combiner = SumCombiner.Instance,
            Trace = new StepTrace { T = i, Next = j },
            Inspect = (n, v) => seen[n] = v.clone(),
        };
        var next = new VanillaStrategy().Step(step).detach();
        return (next, seen);
    }
}
