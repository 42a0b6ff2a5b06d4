using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Core.Tests.Analytic;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Sampling;

/// <summary>Bad input gives an exception that names the problem.</summary>
public class BadInputTests
{
    private static readonly IGuidanceCondition[] None = Array.Empty<IGuidanceCondition>();

    private static GaussianDataDenoiser Bed() => GaussianDataDenoiser.Spread(NoiseSchedule.Linear(), 1, 4);

    private sealed class NamedCondition(string name) : IGuidanceCondition
    {
        public string Name => name;
        public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(0));
        public Tensor Energy(Tensor x0) => x0.sum(new long[] { 1, 2, 3 }) * 0;
    }

    /// <summary>A test-only strategy that returns whatever it is told to.</summary>
    private sealed class FixedStrategy(Func<GuidedStep, Tensor> step) : IGuidanceStrategy
    {
        public string Name => "fixed";
        public Tensor Step(GuidedStep s) => step(s);
    }

    private static T Throws<T>(SamplerOptions o, IReadOnlyList<IGuidanceCondition>? conditions = null, GaussianDataDenoiser? d = null) where T : Exception
        => Assert.Throws<T>(() => new ConditionalSampler(d ?? Bed()).Sample(conditions ?? None, o).Dispose());

    [Fact]
    public void InitialNoiseWithTheWrongShape()
    {
        using var x = zeros(2, 3, 4, 4);
        var e = Throws<ArgumentException>(new SamplerOptions { BatchSize = 2, InitialNoise = x });
        Assert.Contains("InitialNoise", e.Message);
        Assert.Contains("[2, 3, 4, 4]", e.Message);
        Assert.Contains("expected [2, 1, 4, 4]", e.Message);
    }

    [Theory]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void InitialNoiseWithNonFiniteValues(double bad)
    {
        using var x = zeros(1, 1, 4, 4);
        x[0, 0, 2, 1] = tensor(bad);
        var e = Throws<ArgumentException>(new SamplerOptions { InitialNoise = x });
        Assert.Contains("InitialNoise contains NaN or infinite", e.Message);
    }

    [Fact]
    public void IntegerInitialNoise()
    {
        using var x = zeros(new long[] { 1, 1, 4, 4 }, ScalarType.Int32);
        Assert.Contains("floating-point", Throws<ArgumentException>(new SamplerOptions { InitialNoise = x }).Message);
    }

    [Theory]
    [InlineData(double.NaN)]
    [InlineData(double.NegativeInfinity)]
    public void NonFiniteDenoiserOutputNamesTheStep(double bad)
    {
        var d = Bed();
        d.OutputHook = o => d.ForwardCalls == 6 ? o.index_put_(tensor(bad, o.dtype), TensorIndex.Single(0), TensorIndex.Single(0), TensorIndex.Single(1), TensorIndex.Single(2)) : o;
        var e = Throws<SamplingException>(new SamplerOptions { Steps = 20, SamplerStep = new DdimStep(0) }, d: d);
        Assert.Equal(5, e.StepIndex);
        Assert.Equal(700, e.Timestep);
        Assert.Equal(650, e.Next);
        Assert.Contains("step 5 (t = 700 -> 650)", e.Message);
        Assert.Contains("NaN or infinite", e.Message);
        Assert.Equal(6, d.ForwardCalls); // stopped at once
    }

    [Fact]
    public void StrategyReturningTheWrongShape()
    {
        var o = new SamplerOptions { Steps = 5, Strategy = new FixedStrategy(s => s.X.narrow(2, 0, 2)) };
        var e = Throws<InvalidOperationException>(o);
        Assert.Contains("'fixed' returned shape [1, 1, 2, 4]", e.Message);
        Assert.Contains("expected [1, 1, 4, 4]", e.Message);
    }

    [Fact]
    public void DenoiserReturningTheWrongShape()
    {
        var d = Bed();
        d.OutputHook = o => o.narrow(3, 0, 3);
        var e = Throws<InvalidOperationException>(new SamplerOptions { Steps = 5 }, d: d);
        Assert.Contains("Forward returned shape [1, 1, 4, 3]", e.Message);
    }

    [Theory]
    [InlineData(new[] { 1000, 500 }, "Timestep 1000 at position 0 is outside [0, 999]")]
    [InlineData(new[] { 500, -3 }, "Timestep -3 at position 1 is outside [0, 999]")]
    [InlineData(new[] { 500, 500 }, "strictly descending; got 500 followed by 500")]
    [InlineData(new[] { 100, 200 }, "strictly descending; got 100 followed by 200")]
    [InlineData(new int[0], "timestep list is empty")]
    public void BadExplicitTimesteps(int[] timesteps, string expected)
    {
        var e = Throws<ArgumentException>(new SamplerOptions { Timesteps = timesteps });
        Assert.Contains("SamplerOptions.Timesteps", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1001)]
    [InlineData(-5)]
    public void StepsOutsideTheTrainingTimesteps(int steps)
    {
        var e = Throws<ArgumentException>(new SamplerOptions { Steps = steps });
        Assert.Contains("SamplerOptions.Steps", e.Message);
        Assert.Contains("[1, 1000]", e.Message);
    }

    [Fact]
    public void EmptyAndBadSchedules()
    {
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => new NoiseSchedule(Array.Empty<double>())).Message);
        foreach (var bad in new[] { 0.0, 1.0, -0.1, 1.5, double.NaN, double.PositiveInfinity })
        {
            var e = Assert.Throws<ArgumentException>(() => new NoiseSchedule(new[] { 0.1, bad, 0.2 }));
            Assert.Contains("beta[1]", e.Message);
            Assert.Contains("(0, 1)", e.Message);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => NoiseSchedule.Linear(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => NoiseSchedule.Cosine(-1));
        Assert.Throws<ArgumentException>(() => NoiseSchedule.Linear(10, start: 0.0));
        Assert.Throws<ArgumentException>(() => NoiseSchedule.ScaledLinear(10, end: 1.0));
        var s = NoiseSchedule.Linear(10);
        Assert.Contains("[-1, 9]", Assert.Throws<ArgumentOutOfRangeException>(() => s.AlphaBar(10)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.AlphaBar(-2));
        Assert.Throws<ArgumentOutOfRangeException>(() => TimestepSpacing.Uniform(0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => TimestepSpacing.Explicit(new[] { 1 }, 0));
    }

    [Fact]
    public void DuplicateNullAndUnnamedConditions()
    {
        var o = new SamplerOptions { Steps = 5 };
        var dup = Throws<ArgumentException>(o, new IGuidanceCondition[] { new NamedCondition("id"), new NamedCondition("landmarks"), new NamedCondition("id") });
        Assert.Contains("Two conditions are named 'id'", dup.Message);
        var nul = Throws<ArgumentException>(o, new IGuidanceCondition[] { new NamedCondition("id"), null! });
        Assert.Contains("null at position 1", nul.Message);
        var unnamed = Throws<ArgumentException>(o, new IGuidanceCondition[] { new NamedCondition(" ") });
        Assert.Contains("position 0", unnamed.Message);
        Assert.Throws<ArgumentNullException>(() => new ConditionalSampler(Bed()).Sample(null!, o));
        Assert.Throws<ArgumentNullException>(() => new ConditionalSampler(Bed()).Sample(None, null!));
        Assert.Throws<ArgumentNullException>(() => new ConditionalSampler(null!));
    }

    [Fact]
    public void BadOptions()
    {
        Assert.Contains("BatchSize", Throws<ArgumentException>(new SamplerOptions { BatchSize = 0 }).Message);
        Assert.Contains("FirstItem", Throws<ArgumentException>(new SamplerOptions { FirstItem = -1 }).Message);
        Assert.Contains("SamplerStep", Throws<ArgumentException>(new SamplerOptions { SamplerStep = null! }).Message);
        Assert.Contains("Int32", Throws<ArgumentException>(new SamplerOptions { DType = ScalarType.Int32 }).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new TimeTravel(0, 1, 2));
        Assert.Contains("[500, 100]", Assert.Throws<ArgumentException>(() => new TimeTravel(2, 500, 100)).Message);
        var tt = new TimeTravel(2, 100, 500) with { From = 900 }; // `with` bypasses the constructor; the sampler checks again
        Assert.Contains("TimeTravel", Throws<ArgumentException>(new SamplerOptions { TimeTravel = tt }).Message);
    }
}
