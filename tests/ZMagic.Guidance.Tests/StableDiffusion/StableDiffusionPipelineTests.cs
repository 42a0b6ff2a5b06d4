using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.IO;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.StableDiffusion;
using ZMagic.Models.StableDiffusion;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.StableDiffusion;

/// <summary>One tiny diffusers folder, written once for the whole class.</summary>
public sealed class TinySdFixture : IDisposable
{
    public TinySdFixture()
    {
        Root = Path.Combine(Path.GetTempPath(), "zmagic-sd-" + Guid.NewGuid().ToString("N"));
        TinySdFolder.Create(Root);
    }

    public string Root { get; }

    public void Dispose()
    {
        try { Directory.Delete(Root, true); } catch (IOException) { }
    }
}

/// <summary>A toy image energy: distance of the image's channel means (a crude "colour style") to a target.</summary>
internal sealed class MeanColourCondition : IGuidanceCondition
{
    private readonly Tensor _target;
    public MeanColourCondition(string name, float r, float g, float b)
    {
        Name = name;
        _target = torch.tensor(new[] { r, g, b });
    }
    public string Name { get; }
    public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(1.0));
    public Tensor Energy(Tensor x0) => (x0.mean(new long[] { 2, 3 }) - _target.to(x0.dtype)).square().sum(1).sqrt();
}

/// <summary>A toy content energy: L2 distance of a 2x-downsampled image to a fixed reference.</summary>
internal sealed class LowPassContentCondition : IGuidanceCondition
{
    private readonly Tensor _reference;
    public LowPassContentCondition(Tensor reference) => _reference = reference;
    public string Name => "content";
    public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(1.0));
    public Tensor Energy(Tensor x0) =>
        (nn.functional.avg_pool2d(x0, 4) - nn.functional.avg_pool2d(_reference.to(x0.dtype), 4)).flatten(1).square().sum(1).sqrt();
}

public class StableDiffusionPipelineTests : IClassFixture<TinySdFixture>
{
    private readonly TinySdFixture _fx;

    public StableDiffusionPipelineTests(TinySdFixture fx) => _fx = fx;

    [Fact]
    public void DiffusersFolderLoadsTheGoldenComponentsExactly()
    {
        using var model = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
        var unetFile = SafeTensors.Load(Golden.File("sd_unet/tiny_seed1234", "weights.safetensors"));
        var sd = model.UNet.state_dict();
        foreach (var (k, v) in unetFile) Assert.True(v.eq(sd[k]).all().item<bool>(), k);
        // The SD 1.x tokenizer pads with the end token.
        var row = model.Tokenizer.EncodeRow("a photo of a cat");
        Assert.Equal(new long[] { 49406, 320, 1125, 539, 320, 2368, 49407, 49407 }, row.Take(8).ToArray());
    }

    [Fact]
    public void SingleFileLdmCheckpointLoadsIntoTheSameModules()
    {
        using var folder = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
        var ldm = LdmLayout.FromDiffusers(folder);
        var path = Path.Combine(_fx.Root, "single.safetensors");
        SafeTensors.Save(path, ldm);
        using var single = StableDiffusionModel.LoadSingleFile(path, folder.Tokenizer, folder.UNet.Config, folder.Vae.Config, folder.TextEncoder.Config);
        foreach (var (a, b) in new[] { ((nn.Module)folder.UNet, (nn.Module)single.UNet), (folder.Vae, single.Vae), (folder.TextEncoder, single.TextEncoder) })
        {
            var sa = a.state_dict();
            var sb = b.state_dict();
            Assert.Equal(sa.Keys.OrderBy(k => k), sb.Keys.OrderBy(k => k));
            foreach (var (k, v) in sa) Assert.True(v.eq(sb[k]).all().item<bool>(), $"{a.GetName()} {k}");
        }
    }

    [Fact]
    public void LegacyVaeAttentionNamesLoadFromAFolder()
    {
        var root = Path.Combine(Path.GetTempPath(), "zmagic-sd-legacy-" + Guid.NewGuid().ToString("N"));
        try
        {
            TinySdFolder.Create(root, legacyVaeNames: true);
            using var legacy = StableDiffusionModel.LoadDiffusersFolder(root);
            using var current = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
            var a = legacy.Vae.state_dict();
            foreach (var (k, v) in current.Vae.state_dict()) Assert.True(v.eq(a[k]).all().item<bool>(), k);
        }
        finally { Directory.Delete(root, true); }
    }

    private static StableDiffusionRequest Request(SdGuidanceMethod method, IReadOnlyList<IGuidanceCondition> conditions) => new()
    {
        Prompt = "cat wearing glasses",
        Steps = 10,
        GuidanceScale = 5,
        Size = 32,
        Seed = 7,
        Conditions = conditions,
        Method = method,
        CfgRelativeScale = 0.2,
        Window = new GuidanceWindow(Stop: 200, Start: 1000),
    };

    /// <summary>
    /// Image 0 is the same alone or with a batch mate: the CFG-relative step size (rms of the item's own CFG correction
    /// over rms of its own gradient) and CAGrad are per item. The UNet's kernels may round batch 2 differently, hence
    /// a tolerance; whole-batch RMS values or Gram matrices differ by far more.
    /// </summary>
    [Theory]
    [InlineData(SdGuidanceMethod.Vanilla, false)]
    [InlineData(SdGuidanceMethod.ZMagic, true)]
    public void FirstImageIsTheSameAloneOrInABatchOfTwo(SdGuidanceMethod method, bool cagrad)
    {
        using var model = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
        using var reference = torch.linspace(-1, 1, 32 * 32 * 3).reshape(1, 3, 32, 32);
        var conditions = new IGuidanceCondition[] { new MeanColourCondition("style", 0.6f, -0.2f, 0.1f), new LowPassContentCondition(reference) };
        var gen = new StableDiffusionGenerator(model);
        var request = Request(method, conditions) with { Combiner = cagrad ? new CAGradCombiner(0.5) : null };
        using var one = gen.Generate(request);
        using var two = gen.Generate(request with { BatchSize = 2 });
        using var unguided = gen.Generate(request with { Conditions = Array.Empty<IGuidanceCondition>() });
        double Rel(Tensor x, Tensor y) => (x - y).to(ScalarType.Float64).norm().item<double>() / y.to(ScalarType.Float64).norm().item<double>();
        Assert.True(Rel(unguided.Images[0], one.Images[0]) > 1e-3, "guidance barely acted; the comparison would be vacuous");
        double rel = Rel(two.Images[0], one.Images[0]);
        Assert.True(rel < 1e-4, $"image 0 alone vs in a batch of 2: rel L2 {rel:E2}");
    }

    [Theory]
    [InlineData(SdGuidanceMethod.Vanilla)]
    [InlineData(SdGuidanceMethod.ZMagic)]
    public void TextStyleContentRunUnderBothMethodsAndEveryEnergyDecreases(SdGuidanceMethod method)
    {
        using var model = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
        using var reference = torch.linspace(-1, 1, 32 * 32 * 3).reshape(1, 3, 32, 32);
        var conditions = new IGuidanceCondition[] { new MeanColourCondition("style", 0.6f, -0.2f, 0.1f), new LowPassContentCondition(reference) };
        var gen = new StableDiffusionGenerator(model);
        using var a = gen.Generate(Request(method, conditions));
        Assert.Equal(new long[] { 1, 3, 32, 32 }, a.Images.shape);
        Assert.True(a.Images.isfinite().all().item<bool>());
        Assert.True(a.GuidanceDecodes > 0);

        var guided = a.Trace.Steps.Where(s => s.Conditions.Any(c => c.Active)).ToList();
        Assert.True(guided.Count >= 5, $"only {guided.Count} guided steps");
        foreach (var name in new[] { "style", "content" })
        {
            var e = guided.Select(s => s.Conditions.Single(c => c.Name == name).Energy).ToList();
            Assert.True(e[^1] < e[0], $"{method}: {name} energy did not decrease over the guided window ({e[0]:G4} -> {e[^1]:G4})");
        }
        if (method == SdGuidanceMethod.ZMagic)
            Assert.All(guided, s => Assert.True(s.Passes.Vjps >= 1, "Z-Magic pulls later conditions back with a VJP"));

        // Same seed, same image.
        using var b = gen.Generate(Request(method, conditions));
        Assert.True(a.Images.eq(b.Images).all().item<bool>(), "same seed gave a different image");
    }

    [Fact]
    public void GuidanceChangesTheResultComparedToUnguided()
    {
        using var model = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
        var gen = new StableDiffusionGenerator(model);
        using var plain = gen.Generate(Request(SdGuidanceMethod.Vanilla, Array.Empty<IGuidanceCondition>()));
        using var guided = gen.Generate(Request(SdGuidanceMethod.Vanilla, new IGuidanceCondition[] { new MeanColourCondition("style", 0.9f, 0.9f, 0.9f) }));
        Assert.False(plain.Images.eq(guided.Images).all().item<bool>());
        double Mean(Tensor t) => t.mean().item<float>();
        Assert.True(Mean(guided.Images) > Mean(plain.Images), "guiding towards a bright mean colour did not brighten the image");
    }

    [Fact]
    public void IncompleteFolderNamesTheMissingComponent()
    {
        var root = Path.Combine(Path.GetTempPath(), "zmagic-sd-bad-" + Guid.NewGuid().ToString("N"));
        try
        {
            TinySdFolder.Create(root);
            Directory.Delete(Path.Combine(root, "vae"), true);
            var ex = Assert.Throws<DirectoryNotFoundException>(() => StableDiffusionModel.LoadDiffusersFolder(root));
            Assert.Contains("vae", ex.Message);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void ConfigThatDoesNotMatchItsWeightsListsTheKeys()
    {
        var root = Path.Combine(Path.GetTempPath(), "zmagic-sd-bad-" + Guid.NewGuid().ToString("N"));
        try
        {
            TinySdFolder.Create(root);
            var cfg = Path.Combine(root, "unet", "config.json");
            File.WriteAllText(cfg, File.ReadAllText(cfg).Replace("\"layers_per_block\": 1", "\"layers_per_block\": 2").Replace("\"layers_per_block\":1", "\"layers_per_block\":2"));
            var ex = Assert.Throws<StateDictMismatchException>(() => StableDiffusionModel.LoadDiffusersFolder(root));
            Assert.Contains("down_blocks.0.resnets.1", ex.Message);
            Assert.Contains("diffusion_pytorch_model.safetensors", ex.Message);
        }
        finally { Directory.Delete(root, true); }
    }

    [Fact]
    public void PromptOverSeventySevenTokensIsAClearError()
    {
        using var model = StableDiffusionModel.LoadDiffusersFolder(_fx.Root);
        var longPrompt = string.Join(" ", Enumerable.Repeat("cat", 80));
        var ex = Assert.Throws<ArgumentException>(() => new StableDiffusionGenerator(model).Generate(Request(SdGuidanceMethod.Vanilla, Array.Empty<IGuidanceCondition>()) with { Prompt = longPrompt }));
        Assert.Contains("too long", ex.Message);
    }
}

/// <summary>
/// Writes the diffusers components back into the CompVis/LDM single-file layout, following the LDM module structure
/// (written independently of the loader's map, so the round trip checks it).
/// </summary>
internal static class LdmLayout
{
    public static Dictionary<string, Tensor> FromDiffusers(StableDiffusionModel m)
    {
        var r = new Dictionary<string, Tensor>();
        int per = m.UNet.Config.LayersPerBlock + 1;
        int levels = m.UNet.Config.BlockOutChannels.Count;
        foreach (var (k, v) in m.UNet.state_dict())
        {
            string key = k;
            string Res(string s) => s.Replace("norm1.", "in_layers.0.").Replace("conv1.", "in_layers.2.").Replace("norm2.", "out_layers.0.")
                .Replace("conv2.", "out_layers.3.").Replace("time_emb_proj.", "emb_layers.1.").Replace("conv_shortcut.", "skip_connection.");
            var parts = k.Split('.');
            if (k.StartsWith("time_embedding.linear_1.")) key = "time_embed.0." + parts[^1];
            else if (k.StartsWith("time_embedding.linear_2.")) key = "time_embed.2." + parts[^1];
            else if (k.StartsWith("conv_in.")) key = "input_blocks.0.0." + parts[^1];
            else if (k.StartsWith("conv_norm_out.")) key = "out.0." + parts[^1];
            else if (k.StartsWith("conv_out.")) key = "out.2." + parts[^1];
            else if (k.StartsWith("down_blocks."))
            {
                int b = int.Parse(parts[1]);
                string rest = string.Join('.', parts.Skip(4));
                key = parts[2] switch
                {
                    "resnets" => $"input_blocks.{1 + b * per + int.Parse(parts[3])}.0.{Res(rest)}",
                    "attentions" => $"input_blocks.{1 + b * per + int.Parse(parts[3])}.1.{rest}",
                    _ => $"input_blocks.{1 + b * per + per - 1}.0.op.{string.Join('.', parts.Skip(5))}",
                };
            }
            else if (k.StartsWith("mid_block."))
            {
                string rest = string.Join('.', parts.Skip(3));
                key = parts[1] == "attentions" ? $"middle_block.1.{rest}" : $"middle_block.{(parts[2] == "0" ? 0 : 2)}.{Res(rest)}";
            }
            else if (k.StartsWith("up_blocks."))
            {
                int b = int.Parse(parts[1]);
                bool hasAttn = m.UNet.Config.UpBlockTypes[b] == "CrossAttnUpBlock2D";
                string rest = string.Join('.', parts.Skip(4));
                key = parts[2] switch
                {
                    "resnets" => $"output_blocks.{b * per + int.Parse(parts[3])}.0.{Res(rest)}",
                    "attentions" => $"output_blocks.{b * per + int.Parse(parts[3])}.1.{rest}",
                    _ => $"output_blocks.{b * per + per - 1}.{(hasAttn ? 2 : 1)}.{string.Join('.', parts.Skip(4))}",
                };
            }
            r["model.diffusion_model." + key] = v;
        }
        int vLevels = m.Vae.Config.BlockOutChannels.Count;
        foreach (var (k, v) in m.Vae.state_dict())
        {
            string key = k.Replace("conv_norm_out.", "norm_out.").Replace("conv_shortcut.", "nin_shortcut.")
                .Replace("mid_block.resnets.0.", "mid.block_1.").Replace("mid_block.resnets.1.", "mid.block_2.");
            var value = v;
            if (key.Contains("mid_block.attentions.0."))
            {
                key = key.Replace("mid_block.attentions.0.group_norm.", "mid.attn_1.norm.").Replace("mid_block.attentions.0.to_q.", "mid.attn_1.q.")
                    .Replace("mid_block.attentions.0.to_k.", "mid.attn_1.k.").Replace("mid_block.attentions.0.to_v.", "mid.attn_1.v.")
                    .Replace("mid_block.attentions.0.to_out.0.", "mid.attn_1.proj_out.");
                if (v.dim() == 2) value = v.unsqueeze(-1).unsqueeze(-1); // LDM stores them as 1x1 convs
            }
            var p = key.Split('.');
            if (key.StartsWith("encoder.down_blocks."))
                key = p[3] == "resnets" ? $"encoder.down.{p[2]}.block.{p[4]}.{string.Join('.', p.Skip(5))}" : $"encoder.down.{p[2]}.downsample.{string.Join('.', p.Skip(5))}";
            else if (key.StartsWith("decoder.up_blocks."))
            {
                int level = vLevels - 1 - int.Parse(p[2]);
                key = p[3] == "resnets" ? $"decoder.up.{level}.block.{p[4]}.{string.Join('.', p.Skip(5))}" : $"decoder.up.{level}.upsample.{string.Join('.', p.Skip(5))}";
            }
            r["first_stage_model." + key] = value;
        }
        foreach (var (k, v) in TinySdFolder.RandomTextEncoder(2, TinySdFolder.TextWidth, 1234))
            r["cond_stage_model.transformer." + k] = v;
        return r;
    }
}
