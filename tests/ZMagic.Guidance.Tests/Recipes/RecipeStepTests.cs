using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.Sampling;
using ZMagic.Encoders.Clip;
using ZMagic.Encoders.Face;
using ZMagic.Encoders.Vgg;
using ZMagic.Guidance.Recipes;
using ZMagic.Guidance.StableDiffusion;
using ZMagic.Guidance.Tests.StableDiffusion;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Recipes;

/// <summary>The full-size networks with reproducible random weights, built once for the class.</summary>
public sealed class FullFaceNetsFixture : IDisposable
{
    public FullFaceNetsFixture()
    {
        Ddpm = (DdpmDenoiser)DdpmUNetConfig.CelebAHq.CreateDenoiser();
        SeededWeights.Init(Ddpm.Module, 1);
        torch.random.manual_seed(2);
        ArcFace = Frozen(new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, true));
        Landmarker = Frozen(new MobileFaceNet(136));
        Parser = Frozen(new BiSeNet(19));
        Clip = Frozen(new ClipModel(ClipConfig.VitB16));
        Tokenizer = ClipTokenizer.FromSimpleVocab(Path.Combine(Golden.Root, "clip", "bpe_simple_vocab_16e6.txt.gz"));
    }

    public DdpmDenoiser Ddpm { get; }
    public IrSeBackbone ArcFace { get; }
    public MobileFaceNet Landmarker { get; }
    public BiSeNet Parser { get; }
    public ClipModel Clip { get; }
    public ClipTokenizer Tokenizer { get; }

    private static T Frozen<T>(T module) where T : nn.Module
    {
        FaceCheckpoints.Freeze(module);
        return module;
    }

    public void Dispose()
    {
        Ddpm.Dispose();
        ArcFace.Dispose();
        Landmarker.Dispose();
        Parser.Dispose();
        Clip.Dispose();
    }
}

/// <summary>
/// Every face recipe builds on random weights of the full networks (the CelebA-HQ 256 DDPM, IR-SE50, MobileFaceNet,
/// BiSeNet, CLIP ViT-B/16) and runs one sampler step end to end; the three-condition recipe also under research
/// parity (its branch-noise path; the two-condition research step has golden cases in ZMagic.Models.Tests). One
/// class, so the full-size steps (several GiB each) never run side by side: 45-75 s each on one CPU thread, up to
/// 4 minutes on a loaded machine.
/// </summary>
[Trait("Category", "Slow")]
public sealed class FaceRecipeStepTests(FullFaceNetsFixture nets, ITestOutputHelper log) : IClassFixture<FullFaceNetsFixture>
{
    [Theory]
    [InlineData("face-id-landmarks", GuidanceParity.Library)]
    [InlineData("face-text-parsing", GuidanceParity.Library)]
    [InlineData("face-text-parsing-identity", GuidanceParity.Library)]
    [InlineData("face-text-parsing-identity", GuidanceParity.ResearchCode)]
    public void OneStepOfTheRecipeOnTheFullNetworksIsFinite(string name, GuidanceParity parity)
    {
        using var scope = NewDisposeScope();
        var recipe = RecipeCatalog.Get(name);
        var reference = (torch.rand(1, 3, 256, 256, generator: new Generator(9)) * 2 - 1);
        var inputs = new FaceRecipeInputs
        {
            IdentityEncoder = nets.ArcFace, IdentityReference = reference,
            Landmarker = nets.Landmarker, LandmarksReference = reference,
            Parser = nets.Parser, ParsingReference = reference,
            Clip = nets.Clip, Tokenizer = nets.Tokenizer, Prompt = "blonde beauty",
        };
        using var run = FaceRecipeBuilder.Build(recipe, inputs, new RecipeOverrides { Parity = parity });
        // One step, high enough that every condition acts (the face recipes stop at t = 200).
        var options = run.Options with { Timesteps = [990], Seed = 3 };
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var result = new ConditionalSampler(nets.Ddpm).Sample(run.Conditions, options);
        log.WriteLine($"{name} ({parity}): one step {sw.Elapsed.TotalSeconds:F1} s, strategy {result.Trace.Strategy}, combiner {result.Trace.Combiner}");
        Assert.Equal([1L, 3L, 256L, 256L], result.Images.shape);
        Assert.True(result.Images.isfinite().all().item<bool>());
        var step = Assert.Single(result.Trace.Steps);
        Assert.Equal(recipe.Conditions.Select(c => c.Kind.ToString().ToLowerInvariant()), step.Conditions.Select(c => c.Name));
        foreach (var c in step.Conditions)
        {
            Assert.True(c.Active && !c.Skipped, $"{c.Name} inactive or skipped");
            Assert.True(double.IsFinite(c.Energy), $"{c.Name} energy {c.Energy}");
            Assert.True(c.StepSize > 0 && double.IsFinite(c.StepSize), $"{c.Name} step size {c.StepSize}");
        }
        Assert.Contains("cagrad", result.Trace.Combiner);
    }
}

/// <summary>
/// The Stable Diffusion recipes on the tiny diffusers folder of golden/sd_* (a full SD 1.5 UNet step does not fit a CI
/// CPU) with full-size random VGG16 features: three steps (t = 667, 334, 1), which cross both style windows.
/// </summary>
public sealed class StableDiffusionRecipeStepTests(TinySdFixture fx) : IClassFixture<TinySdFixture>
{
    [Theory]
    [InlineData("sd-text-style", GuidanceParity.Library)]
    [InlineData("sd-text-style-content", GuidanceParity.Library)]
    [InlineData("sd-text-style-content", GuidanceParity.ResearchCode)]
    public void ThreeStepsOfTheRecipeAreFiniteAndFollowItsWindows(string name, GuidanceParity parity)
    {
        using var scope = NewDisposeScope();
        using var sd = StableDiffusionModel.LoadDiffusersFolder(fx.Root);
        using var vgg = new VggFeatures(VggKind.Vgg16);
        SeededWeights.Init(vgg, 6);
        foreach (var p in vgg.parameters()) p.requires_grad_(false);
        var style = torch.rand(1, 3, 32, 32, generator: new Generator(1)) * 2 - 1;
        var content = torch.rand(1, 3, 32, 32, generator: new Generator(2)) * 2 - 1;
        var recipe = RecipeCatalog.Get(name);
        using var run = StableDiffusionRecipeBuilder.Build(recipe,
            new StableDiffusionRecipeInputs { Prompt = "a cat wearing glasses.", Vgg = vgg, StyleReference = style, ContentReference = content },
            new RecipeOverrides { Steps = 3, Parity = parity });
        Assert.Equal(5.0, run.Request.GuidanceScale);
        Assert.IsType<ZMagic.Core.Diffusion.DdpmPosteriorStep>(run.Request.SamplerStep);
        using var result = new StableDiffusionGenerator(sd).Generate(run.Request with { Size = 32, Seed = 4 });
        Assert.True(result.Images.isfinite().all().item<bool>());
        Assert.Equal(3 * 3, result.Trace.Steps.Count); // time travel 3 at every step
        Assert.Equal([667, 667, 667, 334, 334, 334, 1, 1, 1], result.Trace.Steps.Select(s => s.T));
        foreach (var step in result.Trace.Steps)
        {
            Assert.Equal(recipe.Conditions.Select(c => c.Kind.ToString().ToLowerInvariant()), step.Conditions.Select(c => c.Name));
            foreach (var (c, rc) in step.Conditions.Zip(recipe.Conditions))
            {
                // The windows: style t > 300 (sd-text-style), content always and style t <= 400 (sd-text-style-content).
                Assert.Equal(rc.Window.IsActive(step.T), c.Active);
                if (c.Active) Assert.True(double.IsFinite(c.Energy) && c.StepSize > 0, $"{c.Name} at t={step.T}");
            }
        }
    }
}
