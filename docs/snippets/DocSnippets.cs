// Snippets shown in docs/*.md. This file is compiled (and the runnable parts run) by
// tests/ZMagic.Guidance.Tests/Packaging/DocSnippetTests.cs; each "// <snippet:NAME>" ... "// </snippet>" region is
// copied verbatim into the ```csharp block that follows "<!-- snippet: NAME -->" in the markdown, and the test fails
// when the two differ. Edit here, then paste (or run the test to see the expected text).
#pragma warning disable CS1591
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Demo.Digits;
using ZMagic.Guidance.Conditions;
using ZMagic.Guidance.DependencyInjection;
using ZMagic.Guidance.Generation;
using ZMagic.Guidance.Recipes;
using ZMagic.Encoders.Face;
using ZMagic.Models;
using static TorchSharp.torch;

namespace ZMagic.Docs;

// <snippet:conditions-custom>
/// <summary>Low when the image's mean brightness is close to a target.</summary>
public sealed class BrightnessCondition(double target) : IGuidanceCondition
{
    public string Name => "brightness";

    // Step size rule and window: a constant step, active at every timestep.
    public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(60.0));

    // x0 is [B, C, H, W] in [-1, 1]; return one non-negative, differentiable energy per item: [B].
    public Tensor Energy(Tensor x0) => (x0.flatten(1).mean([1L]) - target).square();
}
// </snippet>

// <snippet:backbones-custom>
/// <summary>Any network (or formula) that predicts the noise is a backbone: here the exact denoiser of N(0, std^2) data.</summary>
public sealed class GaussianPrior(int channels, int size, double std) : IDenoiser
{
    public NoiseSchedule Schedule { get; } = NoiseSchedule.Linear();
    public PredictionType Prediction => PredictionType.Epsilon;
    public int Channels => channels;
    public int SampleSize => size;
    public bool LearnedSigma => false;

    public Tensor Forward(Tensor x, Tensor t)
    {
        double a = Schedule.AlphaBar((int)t[0].item<float>());
        return x * (Math.Sqrt(1 - a) / (a * std * std + 1 - a));
    }
}
// </snippet>

public static class DocSnippets
{
    public static IDenoiser LoadPreset(string checkpointPath)
    {
        // <snippet:backbones-preset>
        foreach (var preset in BackbonePresets.All)
            Console.WriteLine($"{preset.Name}: {preset.Description}");

        // Load a public checkpoint into its preset (weights are not shipped in the packages).
        var denoiser = BackbonePresets.Load(BackbonePresets.CelebAHqDdpm, checkpointPath);
        // </snippet>
        return denoiser;
    }

    public static async Task<SamplingResult> GettingStarted()
    {
        // <snippet:getting-started>
        var services = new ServiceCollection();
        services.AddZMagic(o =>
        {
            // A preset with its checkpoint: o.Backbone = "celebahq-ddpm"; o.WeightsPath = "celeba_hq.ckpt";
            o.DenoiserFactory = _ => new GaussianPrior(channels: 1, size: 16, std: 0.5);
            o.Steps = 20;
            o.Strategy = ZMagicStrategyKind.ZMagic;
        });
        // Your own condition type, with options.
        services.AddZMagicCondition<BrightnessOptionsCondition, BrightnessOptions>("brightness", o => o.Target = 0.4);

        using var provider = services.BuildServiceProvider();
        provider.GetRequiredService<IStartupValidator>().Validate();   // a generic host does this at start

        var generator = provider.GetRequiredService<ZMagicGenerator>();
        var conditions = provider.GetRequiredService<GuidanceConditionCatalog>().Create(["brightness"]);
        var result = await generator.GenerateAsync(new GenerationRequest(conditions, Seed: 1));
        Console.WriteLine($"images {string.Join("x", result.Images.shape)}, final brightness energy {result.Trace.Steps[^1].Conditions[0].Energy:G4}");
        // </snippet>
        return result;
    }

    public static async Task<int> Previews(ZMagicGenerator generator, IReadOnlyList<IGuidanceCondition> conditions)
    {
        int count = 0;
        // <snippet:getting-started-previews>
        await foreach (var preview in generator.PreviewsAsync(new GenerationRequest(conditions, Seed: 1), every: 5))
        {
            // preview.Sample is a CPU float[] copy (shape preview.Shape): safe to keep, draw or send anywhere.
            Console.WriteLine($"step {preview.Step}/{preview.TotalSteps} (t = {preview.Timestep})");
            count++;
        }
        // </snippet>
        return count;
    }

    public static SamplingResult EmbeddedPrior()
    {
        // <snippet:getting-started-digits>
        // The digits prior embedded in ZMagic.Demo.Digits (1x32x32 MNIST, no download), sampled with x0 clipping.
        var prior = new X0ClippingDenoiser(DigitsModels.LoadPrior());
        using var guide = DigitsModels.LoadGuide();
        IGuidanceCondition[] conditions =
        [
            new DigitClassCondition(guide, targetClass: 3, new GuidanceSchedule(new SqrtAlphaBarStepSize(1.0))),
            new StrokeThicknessCondition(targetInk: 0.17, tolerance: 0.025, new GuidanceSchedule(new SqrtAlphaBarStepSize(4.0))),
        ];
        var result = new ConditionalSampler(prior).Sample(conditions, new SamplerOptions
        {
            Steps = 25, BatchSize = 8, Seed = 0, Strategy = new ZMagicStrategy(), Combiner = new CAGradCombiner(0.5),
        });
        // result.Images: [8, 1, 32, 32] in [-1, 1]; result.Trace: every step's energies, step sizes and timings.
        // </snippet>
        return result;
    }

    public static (SamplingResult Vanilla, SamplingResult ZMagic) Strategies(IDenoiser denoiser)
    {
        // <snippet:strategies>
        IGuidanceCondition[] conditions =
        [
            new BrightnessCondition(target: 0.4),
            new ReferenceImageCondition(torch.full(1, 16, 16, -0.5f), new GuidanceSchedule(new ConstantStepSize(60.0)), compareSize: 4, name: "layout"),
        ];
        var sampler = new ConditionalSampler(denoiser);

        // FreeDoM-style: every condition's gradient at x_t, summed.
        using var vanilla = sampler.Sample(conditions, new SamplerOptions { Steps = 20, Seed = 1, Strategy = new VanillaStrategy() });

        // Z-Magic: the first condition proposes a step, later ones are evaluated at the proposal, CAGrad combines them.
        using var zmagic = sampler.Sample(conditions, new SamplerOptions
        {
            Steps = 20, Seed = 1, Strategy = new ZMagicStrategy(), Combiner = new CAGradCombiner(),
        });
        // </snippet>
        return (Detach(vanilla), Detach(zmagic));
    }

    public static IGradientCombiner[] Combiners()
    {
        // <snippet:combiners>
        IGradientCombiner[] combiners =
        [
            SumCombiner.Instance,                                  // plain sum (the default)
            new CAGradCombiner(new CAGradOptions { C = 0.5 }),     // conflict-averse (Z-Magic)
            new CAGradCombiner(CAGradOptions.ResearchCode),        // the paper's code: per channel, its constants
            new PCGradCombiner(),                                  // project away conflicting components
            new MGDACombiner(),                                    // min-norm point of the convex hull
        ];
        // Any of them: new SamplerOptions { Strategy = new ZMagicStrategy(), Combiner = combiners[1] }
        // </snippet>
        return combiners;
    }

    public static string Trace(SamplingResult result, string outputDir)
    {
        // <snippet:trace>
        SamplingTrace trace = result.Trace;
        Console.WriteLine($"{trace.Strategy} / {trace.Combiner}: {trace.Steps.Count} steps in {trace.Elapsed.TotalSeconds:F2} s");
        foreach (var step in trace.Steps.Where(s => s.Index % 5 == 0))
            foreach (var c in step.Conditions)
                Console.WriteLine($"t={step.T,4} {c.Name,-10} energy={c.Energy:G4} |grad|={c.GradientNorm:G3} rho={c.StepSize:G3}");

        File.WriteAllText(Path.Combine(outputDir, "trace.json"), trace.ToJson());   // or trace.ToCsv() for a spreadsheet
        // </snippet>
        return trace.ToCsv();
    }

    private static SamplingResult Detach(SamplingResult r) => new(r.Images.clone(), r.Trace);

    public static SamplingResult Recipe(IDenoiser denoiser, Tensor idImage, Tensor poseImage)
    {
        // <snippet:recipes-face>
        var recipe = RecipeCatalog.Get("face-id-landmarks");
        using var arcFace = FaceCheckpoints.LoadIrSe50("model_ir_se50.pth");
        using var landmarker = FaceCheckpoints.LoadMobileFaceNet("mobilefacenet_model_best.pth.tar");
        using var run = FaceRecipeBuilder.Build(recipe, new FaceRecipeInputs
        {
            IdentityEncoder = arcFace, IdentityReference = idImage,      // [1, 3, 256, 256] in [-1, 1]
            Landmarker = landmarker, LandmarksReference = poseImage,
        }, new RecipeOverrides { Parity = GuidanceParity.ResearchCode, Steps = 50 });
        var result = new ConditionalSampler(denoiser).Sample(run.Conditions, run.Options with { Seed = 1, BatchSize = 4 });
        // </snippet>
        return result;
    }
}

/// <summary>Options of <see cref="BrightnessOptionsCondition"/>.</summary>
public sealed class BrightnessOptions
{
    public double Target { get; set; }
}

/// <summary><see cref="BrightnessCondition"/> constructed from options (what AddZMagicCondition needs).</summary>
public sealed class BrightnessOptionsCondition(BrightnessOptions options) : IGuidanceCondition
{
    private readonly BrightnessCondition _inner = new(options.Target);
    public string Name => _inner.Name;
    public GuidanceSchedule Schedule => _inner.Schedule;
    public Tensor Energy(Tensor x0) => _inner.Energy(x0);

    public static void ModelsTable()
    {
        // <snippet:models-load>
        using var ddpm = BackbonePresets.Load("celebahq-ddpm", "/models/celeba_hq.ckpt");        // IDenoiser, eval, frozen
        using var adm  = BackbonePresets.Load("adm-256-uncond", "/models/256x256_diffusion_uncond.pt");
        var preset = BackbonePresets.ForCheckpointFile("/models/celeba_hq.ckpt");               // by file name
        var config = BackboneConfig.FromJson(File.ReadAllText("case.json"));                      // a golden case / FreeDoM / yml config
        // </snippet>
    }
}
