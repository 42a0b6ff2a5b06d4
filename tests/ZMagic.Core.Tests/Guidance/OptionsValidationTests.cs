using ZMagic.Core.Guidance;

namespace ZMagic.Core.Tests.Guidance;

/// <summary>
/// <see cref="ZMagicOptions.Validate"/> and <see cref="CAGradOptions.Validate"/>: every combination the strategy or the
/// combiner would silently ignore is rejected at construction, with a message naming both options; every combination
/// the repository uses still validates.
/// </summary>
public class OptionsValidationTests
{
    public static TheoryData<ZMagicOptions, string, string> ZMagicConflicts() => new()
    {
        { new ZMagicOptions { BranchNoise = true, Chaining = ZMagicChaining.Chain }, "BranchNoise", "Chaining = Chain" },
        { ZMagicOptions.ResearchCodeParity with { Chaining = ZMagicChaining.Chain }, "BranchNoise", "Chaining = Chain" },
        { new ZMagicOptions { Jacobian = ZMagicJacobian.Full, AnchorOnBaseStep = true }, "Jacobian = Full", "AnchorOnBaseStep" },
        { new ZMagicOptions { BatchConditionGradients = true, Proposal = ZMagicProposal.ReuseFirstForward }, "BatchConditionGradients", "Proposal = ReuseFirstForward" },
        { new ZMagicOptions { BatchConditionGradients = true, Chaining = ZMagicChaining.Chain }, "BatchConditionGradients", "Chaining = Chain" },
        { new ZMagicOptions { BatchConditionGradients = true, BranchNoise = true }, "BatchConditionGradients", "BranchNoise" },
        { ZMagicOptions.ResearchCodeParity with { BatchConditionGradients = true }, "BatchConditionGradients", "BranchNoise" },
    };

    [Theory]
    [MemberData(nameof(ZMagicConflicts))]
    public void Zmagic_conflicts_fail_at_construction_naming_both_options(ZMagicOptions options, string first, string second)
    {
        var ex = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Contains("ZMagicOptions." + first, ex.Message, StringComparison.Ordinal);
        Assert.Contains("ZMagicOptions." + second, ex.Message, StringComparison.Ordinal);
        Assert.Contains(": ", ex.Message, StringComparison.Ordinal);   // and says why
        var fromCtor = Assert.Throws<ArgumentException>(() => new ZMagicStrategy(options));
        Assert.Equal(ex.Message, fromCtor.Message);
    }

    [Fact]
    public void Zmagic_enum_values_outside_their_type_are_rejected()
    {
        Assert.Contains("ZMagicOptions.Jacobian", Assert.Throws<ArgumentException>(() => new ZMagicStrategy(new ZMagicOptions { Jacobian = (ZMagicJacobian)7 })).Message);
        Assert.Contains("ZMagicOptions.Chaining", Assert.Throws<ArgumentException>(() => new ZMagicStrategy(new ZMagicOptions { Chaining = (ZMagicChaining)2 })).Message);
        Assert.Contains("ZMagicOptions.UpdateRule", Assert.Throws<ArgumentException>(() => new ZMagicStrategy(new ZMagicOptions { UpdateRule = (ZMagicUpdateRule)(-1) })).Message);
        Assert.Contains("ZMagicOptions.Proposal", Assert.Throws<ArgumentException>(() => new ZMagicStrategy(new ZMagicOptions { Proposal = (ZMagicProposal)5 })).Message);
    }

    /// <summary>The whole option space: Validate rejects exactly the listed conflicts and nothing else.</summary>
    [Fact]
    public void Zmagic_validate_rejects_exactly_the_conflicting_combinations()
    {
        int valid = 0, rejected = 0;
        bool[] tf = { false, true };
        foreach (var j in Enum.GetValues<ZMagicJacobian>())
        foreach (var c in Enum.GetValues<ZMagicChaining>())
        foreach (var u in Enum.GetValues<ZMagicUpdateRule>())
        foreach (var p in Enum.GetValues<ZMagicProposal>())
        foreach (var branch in tf)
        foreach (var anchor in tf)
        foreach (var perCondition in tf)
        foreach (var batch in tf)
        {
            var o = new ZMagicOptions
            {
                Jacobian = j, Chaining = c, UpdateRule = u, Proposal = p, BranchNoise = branch, AnchorOnBaseStep = anchor,
                PerConditionGradients = perCondition, BatchConditionGradients = batch,
            };
            bool chain = c == ZMagicChaining.Chain;
            bool conflict = (branch && chain) || (j == ZMagicJacobian.Full && anchor)
                            || (batch && (p == ZMagicProposal.ReuseFirstForward || chain || branch));
            var ex = Record.Exception(o.Validate);
            if (conflict)
            {
                Assert.IsType<ArgumentException>(ex);
                rejected++;
            }
            else
            {
                Assert.True(ex is null, $"{o} should validate: {ex?.Message}");
                valid++;
            }
        }
        Assert.Equal(384, valid + rejected);
        Assert.True(valid > 0 && rejected > 0);
    }

    /// <summary>Every Z-Magic configuration the libraries, CLI, samples, benchmarks and tests construct.</summary>
    public static TheoryData<ZMagicOptions> UsedZMagicOptions() => new()
    {
        new ZMagicOptions(),
        ZMagicOptions.ResearchCodeParity,
        ZMagicOptions.ResearchCodeParity with { UpdateRule = ZMagicUpdateRule.Replacement },
        new ZMagicOptions { AnchorOnBaseStep = true },                                   // Stable Diffusion generator, SdMemoryProbe
        new ZMagicOptions { AnchorOnBaseStep = true, UpdateRule = ZMagicUpdateRule.ResearchCode },
        new ZMagicOptions { Jacobian = ZMagicJacobian.Full },
        new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder },
        new ZMagicOptions { Proposal = ZMagicProposal.ReuseFirstForward },
        new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder, Proposal = ZMagicProposal.ReuseFirstForward },
        new ZMagicOptions { Chaining = ZMagicChaining.Chain },
        new ZMagicOptions { UpdateRule = ZMagicUpdateRule.ResearchCode },
        new ZMagicOptions { PerConditionGradients = true },
        new ZMagicOptions { Jacobian = ZMagicJacobian.Full, PerConditionGradients = true },
        new ZMagicOptions { Jacobian = ZMagicJacobian.FirstOrder, PerConditionGradients = true },
        new ZMagicOptions { Proposal = ZMagicProposal.ReuseFirstForward, PerConditionGradients = true },
        new ZMagicOptions { PerConditionGradients = true, BatchConditionGradients = true },
        new ZMagicOptions { BatchConditionGradients = true },
        new ZMagicOptions { Jacobian = ZMagicJacobian.Full, BatchConditionGradients = true },
    };

    [Theory]
    [MemberData(nameof(UsedZMagicOptions))]
    public void Zmagic_configurations_used_in_the_repository_validate(ZMagicOptions options)
    {
        options.Validate();
        Assert.Same(options, new ZMagicStrategy(options).Options);
    }

    [Theory]
    [InlineData(-0.1)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void Cagrad_c_must_be_finite_and_non_negative(double c)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new CAGradCombiner(new CAGradOptions { C = c }));
        Assert.Contains("CAGradOptions.C", ex.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new CAGradCombiner(c));
    }

    [Theory]
    [InlineData(CAGradSolver.Exact)]
    [InlineData(CAGradSolver.BoundedBrent)]
    public void Cagrad_two_task_solver_conflicts_with_the_nyuv2_variant(CAGradSolver solver)
    {
        var ex = Assert.Throws<ArgumentException>(() => new CAGradCombiner(new CAGradOptions { Variant = CAGradVariant.NyuV2, Solver = solver }));
        Assert.Contains("CAGradOptions.Solver", ex.Message, StringComparison.Ordinal);
        Assert.Contains("CAGradOptions.Variant = NyuV2", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cagrad_enum_values_outside_their_type_are_rejected()
    {
        Assert.Contains("CAGradOptions.Variant", Assert.Throws<ArgumentException>(() => new CAGradOptions { Variant = (CAGradVariant)9 }.Validate()).Message);
        Assert.Contains("CAGradOptions.Rescale", Assert.Throws<ArgumentException>(() => new CAGradOptions { Rescale = (CAGradRescale)9 }.Validate()).Message);
        Assert.Contains("CAGradOptions.Solver", Assert.Throws<ArgumentException>(() => new CAGradOptions { Solver = (CAGradSolver)9 }.Validate()).Message);
    }

    [Fact]
    public void Cagrad_every_other_combination_validates()
    {
        foreach (var v in Enum.GetValues<CAGradVariant>())
        foreach (var r in Enum.GetValues<CAGradRescale>())
        foreach (var s in Enum.GetValues<CAGradSolver>())
        foreach (var perChannel in new[] { false, true })
        foreach (var c in new[] { 0.0, 0.5, 0.99, 2.0 })
        {
            var o = new CAGradOptions { C = c, Variant = v, Rescale = r, Solver = s, PerChannel = perChannel };
            var ex = Record.Exception(o.Validate);
            if (v == CAGradVariant.NyuV2 && s != CAGradSolver.Auto) Assert.IsType<ArgumentException>(ex);
            else Assert.True(ex is null, $"{o} should validate: {ex?.Message}");
        }
        CAGradOptions.ResearchCode.Validate();
        new CAGradOptions().Validate();
    }
}
