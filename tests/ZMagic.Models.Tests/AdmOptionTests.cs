using TorchSharp;
using ZMagic.Models.Adm;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests;

/// <summary>Every UNetModel constructor option builds, runs forward and backward, and has the reference's key layout.</summary>
public class AdmOptionTests
{
    private static readonly AdmUNetConfig Small = new()
    {
        ImageSize = 8, InChannels = 3, ModelChannels = 32, OutChannels = 6, NumResBlocks = 1, AttentionResolutions = [1, 2],
        ChannelMult = [1, 2], NumHeads = 2, NumHeadChannels = -1, UseScaleShiftNorm = true, ResblockUpdown = true,
        UseFp16 = false, NoiseScheduleName = "linear", DiffusionSteps = 1000,
    };

    public static TheoryData<bool, bool, bool, bool> Combinations()
    {
        var d = new TheoryData<bool, bool, bool, bool>();
        foreach (var ss in new[] { false, true })
            foreach (var ud in new[] { false, true })
                foreach (var headCh in new[] { false, true })
                    foreach (var newOrder in new[] { false, true })
                        d.Add(ss, ud, headCh, newOrder);
        return d;
    }

    [Theory]
    [MemberData(nameof(Combinations))]
    public void Option_combination_builds_runs_and_backpropagates(bool scaleShift, bool resblockUpdown, bool headChannels, bool newOrder)
    {
        var c = Small with
        {
            UseScaleShiftNorm = scaleShift, ResblockUpdown = resblockUpdown, UseNewAttentionOrder = newOrder,
            NumHeadChannels = headChannels ? 16 : -1, NumHeads = headChannels ? 1 : 2,
        };
        using var scope = torch.NewDisposeScope();
        using var d = new AdmDenoiser(c);
        var sd = d.Module.state_dict();
        // scale-shift doubles the embedding projection
        Assert.Equal(scaleShift ? 64 : 32, sd["input_blocks.1.0.emb_layers.1.weight"].shape[0]);
        // the level transition is a ResBlock (no conv of its own) or a Downsample with op.weight
        Assert.Equal(resblockUpdown, sd.ContainsKey("input_blocks.2.0.in_layers.2.weight"));
        Assert.Equal(!resblockUpdown, sd.ContainsKey("input_blocks.2.0.op.weight"));
        Assert.Equal(!resblockUpdown, sd.ContainsKey("output_blocks.1.2.conv.weight"));
        Assert.Equal(resblockUpdown, sd.ContainsKey("output_blocks.1.2.out_layers.3.weight"));
        Assert.Equal(new long[] { 96, 32, 1 }, sd["input_blocks.1.1.qkv.weight"].shape);

        var x = torch.randn(2, 3, 8, 8).requires_grad_(true);
        var y = d.Forward(x, torch.tensor(new float[] { 7, 800 }));
        Assert.Equal(new long[] { 2, 6, 8, 8 }, y.shape);
        Assert.True(d.LearnedSigma);
        var g = torch.autograd.grad([y.narrow(1, 0, 3).square().sum()], [x], retain_graph: false)[0];
        Assert.True(g.isfinite().all().item<bool>());
        Assert.True(g.abs().sum().item<float>() > 0);
    }

    private static Tensor LegacyRowsFromNewOrder(Tensor w, int heads, long ch)
    {
        // new order rows: [part p][head h][c]  ->  legacy rows: [head h][part p][c]
        long rest = w.shape.Length > 1 ? w.shape.Skip(1).Aggregate(1L, (a, b) => a * b) : 1;
        var v = w.reshape(3, heads, ch, rest).permute(1, 0, 2, 3).reshape(w.shape);
        return v;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void New_attention_order_equals_legacy_with_regrouped_qkv_rows(int heads)
    {
        using var scope = torch.NewDisposeScope();
        var cNew = Small with { UseNewAttentionOrder = true, NumHeads = heads, NumHeadChannels = -1, OutChannels = 3 };
        using var dNew = new AdmDenoiser(cNew);
        using var dOld = new AdmDenoiser(cNew with { UseNewAttentionOrder = false });
        var sd = dNew.Module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
        var legacy = new Dictionary<string, Tensor>(sd);
        foreach (var key in sd.Keys.Where(k => k.Contains(".qkv.")))
        {
            long channels = sd[key].shape[0] / 3;
            legacy[key] = LegacyRowsFromNewOrder(sd[key], heads, channels / heads);
        }
        dOld.LoadStateDict(legacy, "regrouped");
        using var noGrad = torch.no_grad();
        var x = torch.randn(new long[] { 2, 3, 8, 8 }, generator: new Generator(11));
        var t = torch.tensor(new float[] { 1, 500 });
        var yNew = dNew.Forward(x, t);
        var yOld = dOld.Forward(x, t);
        Assert.True((yNew - yOld).abs().max().item<float>() < 1e-5, "QKVAttention != QKVAttentionLegacy on regrouped weights");
        // and without regrouping they differ as soon as there is more than one head
        dOld.LoadStateDict(sd, "same rows");
        var ySame = dOld.Forward(x, t);
        Assert.Equal(heads == 1, (yNew - ySame).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void Class_conditional_model_needs_labels_and_uses_them()
    {
        using var scope = torch.NewDisposeScope();
        using var d = new AdmDenoiser(Small with { NumClasses = 5 });
        Assert.Equal(new long[] { 5, 128 }, d.Module.state_dict()["label_emb.weight"].shape);
        var x = torch.randn(2, 3, 8, 8);
        var t = torch.tensor(new float[] { 3, 3 });
        using var noGrad = torch.no_grad();
        Assert.Throws<InvalidOperationException>(() => d.Forward(x, t));
        d.ClassLabels = torch.tensor(new long[] { 0, 4 });
        var a = d.Forward(x, t);
        d.ClassLabels = torch.tensor(new long[] { 1, 4 });
        var b = d.Forward(x, t);
        Assert.True((a[0] - b[0]).abs().max().item<float>() > 0, "label 0 vs 1 gave the same output");
        Assert.True((a[1] - b[1]).abs().max().item<float>() == 0, "unchanged label changed the output");
        using var unconditional = new AdmDenoiser(Small);
        Assert.Throws<InvalidOperationException>(() => unconditional.ClassLabels = torch.tensor(new long[] { 0, 1 }));
    }

    [Fact]
    public void Other_options_build_and_run()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var t = torch.tensor(new float[] { 5 });
        // no conv resampling, fractional channel_mult, different upsampling heads, attention only in the middle, odd embedding width
        foreach (var c in new[]
        {
            Small with { ResblockUpdown = false, ConvResample = false },
            Small with { ModelChannels = 64, ChannelMult = [0.5, 1], NumHeadChannels = -1, NumHeads = 2, NumHeadsUpsample = 4 },
            Small with { AttentionResolutions = [], NumResBlocks = 2, OutChannels = 3 },
            Small with { ChannelMult = [1, 1, 2], AttentionResolutions = [4], Dropout = 0.1 },
        })
        {
            using var d = new AdmDenoiser(c);
            var y = d.Forward(torch.randn(1, 3, 8, 8), t);
            Assert.Equal(new long[] { 1, c.OutChannels, 8, 8 }, y.shape);
            Assert.True(y.isfinite().all().item<bool>());
        }
        Assert.Equal(new long[] { 32 * 3, 32, 1 }, new AdmUNet(Small with { ModelChannels = 64, ChannelMult = [0.5, 1] }, torch.META).state_dict()["input_blocks.1.1.qkv.weight"].shape);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void One_and_three_dimensional_networks_build_and_run(int dims)
    {
        using var scope = torch.NewDisposeScope();
        using var net = new AdmUNet(Small with { Dims = dims });
        net.eval();
        using var noGrad = torch.no_grad();
        var x = dims == 1 ? torch.randn(2, 3, 8) : torch.randn(new long[] { 2, 3, 2, 8, 8 });
        var y = net.forward(x, torch.tensor(new float[] { 1, 2 }));
        Assert.Equal(x.shape[0], y.shape[0]);
        Assert.Equal(6, y.shape[1]);
        Assert.Equal(x.shape.Skip(2), y.shape.Skip(2));
        Assert.Throws<ArgumentException>(() => new AdmDenoiser(Small with { Dims = dims }));
    }

    [Fact]
    public void Forward_is_twice_differentiable_in_float64()
    {
        using var scope = torch.NewDisposeScope();
        using var d = AdmDenoiser.Load(TestPaths.AdmTinyWeights, (AdmUNetConfig)BackbonePresets.ConfigFromCase(TestPaths.AdmTinyCase));
        d.To(ScalarType.Float64);
        var x = torch.randn(new long[] { 1, 3, 16, 16 }, dtype: ScalarType.Float64, generator: new Generator(9));
        var t = torch.tensor(new float[] { 250 });
        GradientCheck.Run(xx => d.Forward(xx, t).narrow(1, 0, 3), x);
    }

    [Fact]
    public void Schedules_follow_guided_diffusion()
    {
        var lin = AdmUNetConfig.ImageNet256Uncond.CreateSchedule();
        Assert.Equal(1e-4, lin.Betas[0], 15);
        Assert.Equal(0.02, lin.Betas[^1], 15);
        var lin250 = (AdmUNetConfig.ImageNet256Uncond with { DiffusionSteps = 250 }).CreateSchedule();
        Assert.Equal(4e-4, lin250.Betas[0], 15);
        Assert.Equal(0.08, lin250.Betas[^1], 15);
        var cos = (AdmUNetConfig.ImageNet256Uncond with { NoiseScheduleName = "cosine" }).CreateSchedule();
        Assert.Equal(1000, cos.TrainSteps);
        Assert.True(cos.Betas[^1] <= 0.999);
    }

    [Fact]
    public void Config_json_forms_agree()
    {
        Assert.Equal(AdmUNetConfig.ImageNet256Uncond, BackboneConfig.FromJson(AdmUNetConfig.ImageNet256Uncond.ToJson()));
        var flags = """{"image_size": 64, "num_channels": 128, "num_res_blocks": 3, "learn_sigma": true, "class_cond": true, "attention_resolutions": "32,16,8", "num_heads": 4, "use_scale_shift_norm": true, "noise_schedule": "cosine", "diffusion_steps": 4000}""";
        var c = Assert.IsType<AdmUNetConfig>(BackboneConfig.FromJson(flags));
        Assert.Equal(new double[] { 1, 2, 3, 4 }, c.ChannelMult);
        Assert.Equal(new[] { 2, 4, 8 }, c.AttentionResolutions);
        Assert.Equal(6, c.OutChannels);
        Assert.Equal(1000, c.NumClasses);
        Assert.Equal(4000, c.CreateSchedule().TrainSteps);
        Assert.Throws<FormatException>(() => BackboneConfig.FromJson("""{"image_size": 100, "num_channels": 64}"""));
        Assert.Throws<FormatException>(() => BackboneConfig.FromJson("""{"foo": 1}"""));
    }
}
