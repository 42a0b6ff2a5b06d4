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
/// strategy: the whole loop chained, every model call's input, eps, x0 and the final state checked.
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
    public void LoopMatchesTheReference(string caseDir)
    {
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
        ISamplerStep sampler = clip ? new DdpmPosteriorStep() : new FreeDoMEtaStep(0.5);
        IGuidanceCondition condition = clip
            ? new Target(inputs["target"], new NormRelativeStepSize(0.02), GuidanceWindow.Always)
            : new Target(inputs["target"], new SqrtAlphaBarStepSize(called.GetProperty("rho_scale").GetDouble()), new GuidanceWindow(Stop: called.GetProperty("stop").GetInt32()));
        var noise = inputs["noise"];
        int draw = 0, call = 0;
        var x = inputs["x_T"];
        Tensor? lastX0 = null;
        for (int s = seq.Length - 1; s >= 0; s--)
        {
            int i = seq[s], j = s > 0 ? seq[s - 1] : -1;
            int repeat = imagenet && i >= 500 && i <= 800 ? 10 : 1;
            for (int r = 0; r < repeat; r++)
            {
                string key = $"step{call:D3}/";
                // The state entering this call: chained (ours) and stored (to isolate the step).
                TensorAssert.Close(x, outputs[key + "xt"], abs, relTol, $"{name} {key}xt");
                Assert.Equal((float)i, outputs[key + "t"].data<float>()[0]);
                // Chained: each call starts from our previous state, which is itself checked against the stored x_t
                // above, so every call is also checked in isolation up to the accumulated error.
                var stepNoise = noise[draw++];
                var (next, seen) = Run(model, x, i, j, Abar(i), Abar(j), sampler, stepNoise, condition);
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
            }
        }
        Assert.Equal((int)noise.shape[0], draw);
        Assert.False(outputs.ContainsKey($"step{call:D3}/xt"), $"{name}: the reference made more model calls than {call}");
        TensorAssert.Close(x, outputs["x_final"], abs, relTol, $"{name} x_final (chained)");
        TensorAssert.Close(lastX0!, outputs["x0_final"], abs, relTol, $"{name} x0_final (chained)");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EnergyNormsMatch(string caseDir)
    {
        using var scope = torch.NewDisposeScope();
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var target = new Target(inputs["target"], new ConstantStepSize(0), GuidanceWindow.Always);
        foreach (var key in outputs.Keys.Where(k => k.EndsWith("/x0_t", StringComparison.Ordinal)))
        {
            var e = target.Energy(outputs[key]);
            var expected = outputs[key[..^"x0_t".Length] + "energy_norm"];
            TensorAssert.Close(e.reshape(expected.shape), expected, 1e-4, 1e-4, $"{Path.GetFileName(caseDir)} {key} energy_norm");
        }
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
