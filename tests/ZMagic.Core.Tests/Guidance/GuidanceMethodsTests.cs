using ZMagic.Core.Guidance;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>The one catalog of named methods and combiners (generate, bench, the demo and the DI generator use it).</summary>
public class GuidanceMethodsTests
{
    [Fact]
    public void EveryListedNameBuildsWhatItSays()
    {
        foreach (var m in GuidanceMethods.Methods)
        {
            var s = GuidanceMethods.Strategy(m);
            Assert.Equal(m == "unguided" ? typeof(UnguidedStrategy) : m.StartsWith("vanilla", StringComparison.Ordinal) ? typeof(VanillaStrategy) : typeof(ZMagicStrategy), s.GetType());
        }
        Assert.True(((VanillaStrategy)GuidanceMethods.Strategy("vanilla-percondition")).Options.PerConditionGradients);
        Assert.Equal(ZMagicJacobian.Full, ((ZMagicStrategy)GuidanceMethods.Strategy("ZMagic-Full")).Options.Jacobian);
        Assert.Equal(new ZMagicOptions(), ((ZMagicStrategy)GuidanceMethods.Strategy("zmagic")).Options);
        foreach (var c in GuidanceMethods.Combiners) Assert.NotNull(GuidanceMethods.Combiner(c));
        Assert.Same(SumCombiner.Instance, GuidanceMethods.Combiner("sum"));
        Assert.Equal(0.5, ((CAGradCombiner)GuidanceMethods.Combiner("cagrad")).Options.C);
        var perChannel = (CAGradCombiner)GuidanceMethods.Combiner("cagrad-per-channel", cagradC: 0.2);
        Assert.Equal((0.2, true), (perChannel.Options.C, perChannel.Options.PerChannel));
    }

    [Fact]
    public void UnknownNamesListTheKnownOnes()
    {
        Assert.Contains("zmagic-reuse", Assert.Throws<ArgumentException>(() => GuidanceMethods.Strategy("zmagik")).Message);
        Assert.Contains("pcgrad", Assert.Throws<ArgumentException>(() => GuidanceMethods.Combiner("cagard")).Message);
    }
}
