using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Guidance.DependencyInjection;
using ZMagic.Guidance.Generation;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Packaging;

public sealed class DependencyInjectionTests
{
    public sealed class MeanOptions
    {
        public double Target { get; set; }
    }

    public sealed class MeanCondition(MeanOptions options) : IGuidanceCondition
    {
        public double Target { get; } = options.Target;
        public string Name => "mean";
        public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(1));
        public Tensor Energy(Tensor x0) => (x0.flatten(1).mean([1L]) - Target).square();
    }

    /// <summary>Takes its options through the options pattern (bound to the registration name, not the default name).</summary>
    public sealed class OptionsPatternCondition(IOptions<MeanOptions> options, IOptionsMonitor<MeanOptions> monitor) : IGuidanceCondition
    {
        public double Target { get; } = options.Value.Target;
        public double MonitorTarget { get; } = monitor.CurrentValue.Target;
        public string Name => "options";
        public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(1));
        public Tensor Energy(Tensor x0) => (x0.flatten(1).mean([1L]) - Target).square();
    }

    /// <summary>A service a plug-in condition needs and nobody registers.</summary>
    public interface IFaceEncoder;

    public sealed class NeedsEncoderCondition(MeanOptions options, IFaceEncoder encoder) : IGuidanceCondition
    {
        public IFaceEncoder Encoder { get; } = encoder;
        public string Name => "needs-encoder";
        public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(options.Target));
        public Tensor Energy(Tensor x0) => x0.sum();
    }

    private sealed class FaceEncoder : IFaceEncoder;

    [Fact]
    public void Options_pattern_constructors_get_the_named_options()
    {
        using var sp = new ServiceCollection()
            .AddZMagic(o => o.DenoiserFactory = _ => TinyBackbone.Create())
            .AddZMagicCondition<OptionsPatternCondition, MeanOptions>("options", o => o.Target = 0.75)
            .AddZMagicCondition<MeanCondition, MeanOptions>("mean", o => o.Target = -0.5)
            .BuildServiceProvider();
        sp.GetRequiredService<IStartupValidator>().Validate();
        var catalog = sp.GetRequiredService<GuidanceConditionCatalog>();
        var c = Assert.IsType<OptionsPatternCondition>(catalog.Create("options"));
        Assert.Equal(0.75, c.Target);
        Assert.Equal(0.75, c.MonitorTarget);
        Assert.Equal(-0.5, Assert.IsType<MeanCondition>(catalog.Create("mean")).Target);
    }

    [Fact]
    public void Unconstructible_plugin_condition_fails_start_up_validation_naming_type_and_missing_service()
    {
        int created = 0;
        using var sp = new ServiceCollection()
            .AddZMagic(o => o.DenoiserFactory = _ => { created++; return TinyBackbone.Create(); })
            .AddZMagicCondition<NeedsEncoderCondition, MeanOptions>("needs-encoder")
            .BuildServiceProvider();
        var e = Assert.Throws<OptionsValidationException>(() => sp.GetRequiredService<IStartupValidator>().Validate());
        Assert.Contains("'needs-encoder'", e.Message);
        Assert.Contains(typeof(NeedsEncoderCondition).FullName!, e.Message);
        Assert.Contains(typeof(IFaceEncoder).FullName + " 'encoder'", e.Message);
        Assert.Equal(0, created);
        // Creating it anyway fails with the same explanation rather than a bare activation error.
        var e2 = Assert.ThrowsAny<Exception>(() => sp.GetRequiredService<GuidanceConditionCatalog>().Create("needs-encoder"));
        Assert.Contains(typeof(IFaceEncoder).FullName!, e2.Message);
    }

    [Fact]
    public void Plugin_condition_with_its_service_registered_validates_and_gets_it()
    {
        var encoder = new FaceEncoder();
        using var sp = new ServiceCollection()
            .AddZMagic(o => o.DenoiserFactory = _ => TinyBackbone.Create())
            .AddSingleton<IFaceEncoder>(encoder)
            .AddZMagicCondition<NeedsEncoderCondition, MeanOptions>("needs-encoder")
            .BuildServiceProvider();
        sp.GetRequiredService<IStartupValidator>().Validate();
        Assert.Same(encoder, Assert.IsType<NeedsEncoderCondition>(sp.GetRequiredService<GuidanceConditionCatalog>().Create("needs-encoder")).Encoder);
    }

    [Fact]
    public void Missing_backbone_fails_validation_at_start_with_a_clear_message()
    {
        using var sp = new ServiceCollection().AddZMagic(o => o.Steps = 0).BuildServiceProvider();
        var e = Assert.Throws<OptionsValidationException>(() => sp.GetRequiredService<IStartupValidator>().Validate());
        Assert.Contains("Backbone", e.Message);
        Assert.Contains("Steps must be at least 1", e.Message);
    }

    [Fact]
    public void Unknown_preset_and_missing_weights_are_named()
    {
        using var sp = new ServiceCollection().AddZMagic(o => { o.Backbone = "nope"; o.WeightsPath = "/no/such.ckpt"; o.Device = "tpu"; })
            .BuildServiceProvider();
        var e = Assert.Throws<OptionsValidationException>(() => sp.GetRequiredService<IOptions<ZMagicServiceOptions>>().Value);
        Assert.Contains("unknown Backbone 'nope'", e.Message);
        Assert.Contains("/no/such.ckpt", e.Message);
        Assert.Contains("Device 'tpu'", e.Message);
    }

    [Fact]
    public void Backbone_is_a_lazy_singleton_and_plugin_conditions_resolve_by_name()
    {
        int created = 0;
        var services = new ServiceCollection()
            .AddZMagic(o => { o.DenoiserFactory = _ => { created++; return TinyBackbone.Create(); }; o.Steps = 4; o.Strategy = ZMagicStrategyKind.Vanilla; })
            .AddZMagicCondition<MeanCondition, MeanOptions>("mean", o => o.Target = 0.25);
        using var sp = services.BuildServiceProvider();
        sp.GetRequiredService<IStartupValidator>().Validate();
        Assert.Equal(0, created);
        var d1 = sp.GetRequiredService<IDenoiser>();
        var d2 = sp.GetRequiredService<IDenoiser>();
        Assert.Same(d1, d2);
        Assert.Equal(1, created);

        var catalog = sp.GetRequiredService<GuidanceConditionCatalog>();
        Assert.Equal(["mean"], catalog.Names);
        var c = Assert.IsType<MeanCondition>(catalog.Create("MEAN"));
        Assert.Equal(0.25, c.Target);
        var e = Assert.Throws<KeyNotFoundException>(() => catalog.Create("brightness"));
        Assert.Contains("known: mean", e.Message);

        var gen = sp.GetRequiredService<ZMagicGenerator>();
        Assert.Same(d1, gen.Denoiser);
        using var result = gen.Generate(new GenerationRequest([c], Seed: 1));
        Assert.Equal(4, result.Trace.Steps.Count);
        Assert.Equal("vanilla", result.Trace.Strategy);
    }

    [Fact]
    public void Duplicate_condition_names_are_rejected()
    {
        using var sp = new ServiceCollection()
            .AddZMagic(o => o.DenoiserFactory = _ => TinyBackbone.Create())
            .AddZMagicCondition<MeanCondition, MeanOptions>("mean")
            .AddZMagicCondition("Mean", _ => new MeanCondition(new MeanOptions()))
            .BuildServiceProvider();
        var e = Assert.Throws<InvalidOperationException>(() => sp.GetRequiredService<GuidanceConditionCatalog>());
        Assert.Contains("'Mean'", e.Message);
    }
}
