using TorchSharp;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>DDPM UNet configs beyond the golden one, dtype moves and differentiability.</summary>
public class DdpmBehaviourTests
{
    private static DdpmUNetConfig Tiny => (DdpmUNetConfig)BackbonePresets.ConfigFromCase(TestPaths.DdpmTinyCase);

    [Fact]
    public void Forward_is_twice_differentiable_in_float64()
    {
        using var scope = torch.NewDisposeScope();
        using var d = DdpmDenoiser.Load(TestPaths.DdpmTinyWeights, Tiny);
        d.To(ScalarType.Float64);
        var x = torch.randn(new long[] { 1, 3, 16, 16 }, dtype: ScalarType.Float64, generator: new Generator(5));
        var t = torch.tensor(new float[] { 321 });
        GradientCheck.Run(xx => d.Forward(xx, t), x);
    }

    [Fact]
    public void Parameters_are_frozen_and_the_module_is_in_eval_mode()
    {
        using var d = new DdpmDenoiser(Tiny with { Dropout = 0.5 });
        Assert.All(d.Module.parameters(), p => Assert.False(p.requires_grad));
        Assert.False(d.Module.training);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = torch.randn(1, 3, 16, 16);
        var t = torch.tensor(new float[] { 10 });
        Assert.True(d.Forward(x, t).eq(d.Forward(x, t)).all().item<bool>(), "dropout is active in eval mode");
    }

    public static TheoryData<string> Variants() => new() { "digits", "bayesian", "no-conv-resample", "three-levels", "two-res-blocks-attn-everywhere" };

    private static DdpmUNetConfig Variant(string name) => name switch
    {
        "digits" => DdpmUNetConfig.Digits32,
        "bayesian" => Tiny with { ModelType = "bayesian" },
        "no-conv-resample" => Tiny with { ResampWithConv = false },
        "three-levels" => Tiny with { ChMult = [1, 2, 2], AttnResolutions = [4] },
        "two-res-blocks-attn-everywhere" => Tiny with { NumResBlocks = 2, AttnResolutions = [16, 8] },
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void Variant_builds_runs_and_backpropagates(string name)
    {
        var config = Variant(name);
        using var scope = torch.NewDisposeScope();
        using var d = new DdpmDenoiser(config);
        Assert.Equal(config.InChannels, d.Channels);
        Assert.Equal(config.Resolution, d.SampleSize);
        var x = torch.randn(2, config.InChannels, config.Resolution, config.Resolution).requires_grad_(true);
        var y = d.Forward(x, torch.tensor(new float[] { 3, 999 }));
        Assert.Equal(new long[] { 2, config.OutCh, config.Resolution, config.Resolution }, y.shape);
        var g = torch.autograd.grad([y.square().sum()], [x], retain_graph: false)[0];
        Assert.True(g.isfinite().all().item<bool>());
        Assert.True(g.abs().sum().item<float>() > 0);
        if (name == "bayesian") Assert.Contains("logvar", d.Module.state_dict().Keys);
        else Assert.DoesNotContain("logvar", d.Module.state_dict().Keys);
    }

    [Fact]
    public void Digits_config_is_small_and_one_channel()
    {
        var c = DdpmUNetConfig.Digits32;
        Assert.Equal(1, c.InChannels);
        Assert.Equal(1, c.OutCh);
        Assert.Equal(32, c.Resolution);
        long n = c.CountParameters();
        Assert.InRange(n, 500_000, 5_000_000);
    }

    [Fact]
    public void Schedule_is_the_linear_ddpm_schedule()
    {
        var s = DdpmUNetConfig.CelebAHq.CreateSchedule();
        Assert.Equal(1000, s.TrainSteps);
        Assert.Equal(1e-4, s.Betas[0], 15);
        Assert.Equal(0.02, s.Betas[999], 15);
        Assert.Equal(1e-4 + 500 * (0.02 - 1e-4) / 999, s.Betas[500], 15);
    }

    [Fact]
    public void Moves_between_float32_and_float64_keep_the_values()
    {
        using var scope = torch.NewDisposeScope();
        using var d = DdpmDenoiser.Load(TestPaths.DdpmTinyWeights, Tiny);
        using var noGrad = torch.no_grad();
        var x = torch.randn(1, 3, 16, 16);
        var t = torch.tensor(new float[] { 100 });
        var y32 = d.Forward(x, t);
        d.To(ScalarType.Float64);
        Assert.Equal(ScalarType.Float64, d.DType);
        var y64 = d.Forward(x.to(ScalarType.Float64), t);
        d.To(ScalarType.Float32);
        var y32b = d.Forward(x, t);
        Assert.True(y32.eq(y32b).all().item<bool>());
        Assert.True((y64 - y32.to(ScalarType.Float64)).abs().max().item<double>() < 1e-4);
        Assert.Equal(torch.CPU.type, d.Device.type);
    }

    [Fact]
    public void Config_json_round_trips()
    {
        foreach (var c in new[] { DdpmUNetConfig.CelebAHq, DdpmUNetConfig.Digits32, Tiny })
            Assert.Equal(c, BackboneConfig.FromJson(c.ToJson()));
        var yml = """{"data": {"image_size": 64, "channels": 1}, "model": {"ch": 64, "out_ch": 1, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16]}, "diffusion": {"beta_schedule": "quad", "beta_start": 0.0001, "beta_end": 0.02, "num_diffusion_timesteps": 500}}""";
        var y = Assert.IsType<DdpmUNetConfig>(BackboneConfig.FromJson(yml));
        Assert.Equal((64, 1, 1, 64, "quad", 500), (y.Resolution, y.InChannels, y.OutCh, y.Ch, y.BetaSchedule, y.NumDiffusionTimesteps));
    }

    [Fact]
    public void Invalid_configs_are_refused_with_the_offending_value()
    {
        Assert.Contains("32 GroupNorm groups", Assert.Throws<ArgumentException>(() => new DdpmUNet(Tiny with { Ch = 48 }, torch.META)).Message);
        Assert.Contains("divisible by 2^(levels-1)", Assert.Throws<ArgumentException>(() => new DdpmUNet(Tiny with { Resolution = 15 }, torch.META)).Message);
        Assert.Contains("jsd", Assert.Throws<NotSupportedException>(() => (Tiny with { BetaSchedule = "jsd" }).CreateSchedule()).Message);
    }
}
