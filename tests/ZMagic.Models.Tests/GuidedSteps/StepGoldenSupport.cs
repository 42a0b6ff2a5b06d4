using System.Text.Json;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests.GuidedSteps;

/// <summary>The toy energies of zmagic_steps (README "Toy energies"): plain L2 norms of residuals, per item.</summary>
internal sealed class ToyEnergy : IGuidanceCondition
{
    private readonly Func<Tensor, Tensor> _residual;

    public ToyEnergy(string name, Func<Tensor, Tensor> residual, IStepSizeRule rule, GuidanceWindow window)
    {
        Name = name;
        _residual = residual;
        Schedule = new GuidanceSchedule(rule, window);
    }

    public string Name { get; }
    public GuidanceSchedule Schedule { get; }

    public Tensor Energy(Tensor x0) => _residual(x0).flatten(1).square().sum(1).sqrt();

    public static ToyEnergy A(Dictionary<string, Tensor> inputs, IStepSizeRule rule, GuidanceWindow w) =>
        new("A", x0 => nn.functional.avg_pool2d(x0, 4) - inputs["yA"], rule, w);

    public static ToyEnergy B(Dictionary<string, Tensor> inputs, IStepSizeRule rule, GuidanceWindow w) =>
        new("B", x0 => nn.functional.conv2d(x0, ZMagic.Core.Native.NumericsSelfCheck.ConvolutionWeight(inputs["K"]), padding: new long[] { 1, 1 }) - inputs["yB"], rule, w);

    public static ToyEnergy C(Dictionary<string, Tensor> inputs, IStepSizeRule rule, GuidanceWindow w) =>
        new("C", x0 => x0.mean(new long[] { 1 }, keepdim: true) - inputs["yC"], rule, w);
}

/// <summary>One loaded zmagic_steps case: the tiny DDPM UNet in the case's dtype, its schedule from the stored betas.</summary>
internal sealed class StepCase : IDisposable
{
    public StepCase(string caseId)
    {
        var dir = Golden.Dir(caseId);
        Dir = dir;
        Name = Path.GetFileName(dir);
        Json = Golden.CaseJson(dir);
        Inputs = Golden.Load(dir, "inputs.safetensors");
        Outputs = Golden.Load(dir, "outputs.safetensors");
        DType = Json.GetProperty("dtype").GetString() == "float32" ? ScalarType.Float32 : ScalarType.Float64;
        var config = Assert.IsType<DdpmUNetConfig>(BackboneConfig.FromJson(Json));
        var weights = Path.GetFullPath(Path.Combine(dir, Json.GetProperty("model").GetProperty("weights").GetString()!));
        Model = DdpmDenoiser.Load(weights, config);
        if (DType == ScalarType.Float64)
        {
            Model.To(ScalarType.Float64);
            ReferenceSinusoidSeam.UseReferenceCpuSinusoid(Model); // tolerances of 1e-10: the reference's exact sinusoid
        }
        var betas = Inputs["betas"].to(ScalarType.Float64).data<double>().ToArray();
        Schedule = new NoiseSchedule(betas);
        Sampler = Json.GetProperty("sampler");
    }

    public string Dir { get; }
    public string Name { get; }
    public JsonElement Json { get; }
    public JsonElement Sampler { get; }
    public Dictionary<string, Tensor> Inputs { get; }
    public Dictionary<string, Tensor> Outputs { get; }
    public ScalarType DType { get; }
    public DdpmDenoiser Model { get; }
    public NoiseSchedule Schedule { get; }

    public double[] RhoScale => Sampler.GetProperty("rho_scale").EnumerateArray().Select(e => e.GetDouble()).ToArray();
    public int Stop => Sampler.GetProperty("stop").GetInt32();

    /// <summary>
    /// abar as the reference computes it: cumprod of (1 - b) in the betas' dtype (float32 in the f32 case).
    /// </summary>
    public double AlphaBar(int t) => t < 0 ? 1.0 : DType == ScalarType.Float64
        ? Schedule.AlphaBar(t)
        : (1 - Inputs["betas"]).cumprod(0)[t].item<float>();

    public (double Abs, double Rel) Before
    {
        get
        {
            var t = Tolerance("intermediates before CAGrad");
            return (t.GetProperty("abs").GetDouble(), t.GetProperty("rel").GetDouble());
        }
    }

    public (double Abs, double Rel) After
    {
        get
        {
            var t = Tolerance("CAGrad-dependent");
            return (t.GetProperty("abs").GetDouble(), t.GetProperty("rel").GetDouble());
        }
    }

    public JsonElement Tolerance(string prefix) =>
        Json.GetProperty("tolerance").EnumerateObject().First(p => p.Name.StartsWith(prefix, StringComparison.Ordinal)).Value;

    public GuidedStep MakeStep(Tensor x, int t, int next, ISamplerStep sampler, Tensor? noise, IReadOnlyList<IGuidanceCondition> conditions,
        IGradientCombiner combiner, Dictionary<string, Tensor> seen, Func<Tensor>? drawNoise = null) => new()
    {
        Denoiser = Model,
        X = x,
        TimestepTensor = torch.ones(x.shape[0], dtype: ScalarType.Float32) * t,
        Timesteps = new TimestepPair(t, next),
        AlphaBar = AlphaBar(t),
        AlphaBarNext = AlphaBar(next),
        Sampler = sampler,
        Noise = noise,
        Conditions = conditions,
        Combiner = combiner,
        Trace = new StepTrace { T = t, Next = next },
        DrawNoise = drawNoise,
        Inspect = (n, v) => seen[n] = v.clone(),
    };

    public void Dispose() => Model.Dispose();
}

/// <summary>Compares outputs by key and remembers which stored outputs were checked.</summary>
internal sealed class Checker
{
    private readonly StepCase _case;
    private readonly string _prefix;
    private readonly HashSet<string> _checked = new(StringComparer.Ordinal);

    public Checker(StepCase c, string prefix = "")
    {
        _case = c;
        _prefix = prefix;
    }

    public bool F32 => _case.DType == ScalarType.Float32;

    /// <summary>Before-CAGrad quantity.</summary>
    public void Before(string key, Tensor ours) => Compare(key, ours, after: false);

    /// <summary>CAGrad-dependent quantity (the Brent port's tolerance).</summary>
    public void After(string key, Tensor ours) => Compare(key, ours, after: true);

    public void Scalar(string key, double ours, bool after = false) => Compare(key, torch.tensor(ours, ScalarType.Float64), after, reshape: true);

    public void RelL2(string key, Tensor ours, double tol)
    {
        var expected = _case.Outputs[_prefix + key];
        TensorAssert.RelL2(ours.reshape(expected.shape), expected, tol, $"{_case.Name} {_prefix}{key}");
        _checked.Add(_prefix + key);
    }

    /// <summary>Marks a stored key as covered by another comparison (e.g. the same tensor under two names).</summary>
    public void Covered(string key) => _checked.Add(_prefix + key);

    public bool Has(string key) => _case.Outputs.ContainsKey(_prefix + key);

    public Tensor Ref(string key) => _case.Outputs[_prefix + key];

    private void Compare(string key, Tensor ours, bool after, bool reshape = false)
    {
        var fullKey = _prefix + key;
        Assert.True(_case.Outputs.ContainsKey(fullKey), $"{_case.Name}: no stored output '{fullKey}'");
        var expected = _case.Outputs[fullKey];
        // A scalar of ours against a per-item stored value (e.g. at of shape [n,1,1,1] at batch n) is broadcast.
        var actual = ours.numel() == 1 && expected.numel() > 1 ? ours.reshape(new long[] { 1 }).expand(expected.numel()).reshape(expected.shape)
            : reshape || ours.numel() == expected.numel() ? ours.reshape(expected.shape) : ours;
        string what = $"{_case.Name} {fullKey}";
        if (F32)
        {
            var tol = after ? _case.Tolerance("float32 CAGrad-dependent") : _case.Tolerance("float32 intermediates before CAGrad");
            TensorAssert.RelL2(actual, expected, tol.GetProperty("rel_l2").GetDouble(), what);
        }
        else
        {
            var (abs, rel) = after ? _case.After : _case.Before;
            TensorAssert.Close(actual, expected, abs, rel, what);
        }
        _checked.Add(fullKey);
    }

    /// <summary>Every stored output with this checker's prefix was compared.</summary>
    public void AssertAllChecked(params string[] notApplicable)
    {
        var missing = _case.Outputs.Keys
            .Where(k => k.StartsWith(_prefix, StringComparison.Ordinal) && !_checked.Contains(k) && !notApplicable.Contains(k[_prefix.Length..]))
            .OrderBy(k => k, StringComparer.Ordinal).ToList();
        Assert.True(missing.Count == 0, $"{_case.Name}: stored outputs not compared: {string.Join(", ", missing)}");
    }
}
