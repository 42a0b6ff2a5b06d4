// A plug-in style ZMagic app: registers ZMagic through DI, contributes its own condition ("brightness"),
// and runs it together with a built-in condition (ReferenceImageCondition) under Vanilla and Z-Magic guidance.
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.Conditions;
using ZMagic.Guidance.DependencyInjection;
using ZMagic.Guidance.Generation;
using static TorchSharp.torch;

int steps = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 20;

var services = new ServiceCollection();
services.AddZMagic(o =>
{
    // The embedded digits prior that ships inside ZMagic.Demo.Digits (1x32x32), sampled with x0 clipping. Any IDenoiser
    // works here: GaussianPrior below is a one-class example; with a real checkpoint:
    // o.Backbone = "celebahq-ddpm"; o.WeightsPath = "celeba_hq.ckpt";
    o.DenoiserFactory = _ => new X0ClippingDenoiser(ZMagic.Demo.Digits.DigitsModels.LoadPrior());
    o.Steps = steps;
});
// The plug-in's own condition type, configured through the options pattern.
services.AddZMagicCondition<BrightnessCondition, BrightnessOptions>("brightness", o => o.Target = 0.4);
// A built-in condition: the coarse layout of a reference image (left half dark, right half bright).
services.AddZMagicCondition("layout", sp =>
{
    var d = sp.GetRequiredService<IDenoiser>();
    var reference = torch.cat([torch.full(1, d.SampleSize, d.SampleSize / 2, -0.8f), torch.full(1, d.SampleSize, d.SampleSize / 2, 0.8f)], 2);
    return new ReferenceImageCondition(reference, new GuidanceSchedule(new ConstantStepSize(60.0)), compareSize: 4, name: "layout");
});

using var provider = services.BuildServiceProvider();
provider.GetRequiredService<IStartupValidator>().Validate();
var generator = provider.GetRequiredService<ZMagicGenerator>();
var conditions = provider.GetRequiredService<GuidanceConditionCatalog>().Create(["brightness", "layout"]);

var runs = new (string Name, IGuidanceStrategy? Strategy, IGradientCombiner? Combiner, bool Guided)[]
{
    ("unguided", null, null, false),
    ("vanilla", new VanillaStrategy(), null, true),
    ("zmagic", new ZMagicStrategy(), new CAGradCombiner(), true),
};
foreach (var run in runs)
{
    var options = new SamplerOptions { Steps = steps, Seed = 1, BatchSize = 2, Strategy = run.Strategy, Combiner = run.Combiner };
    using var result = await generator.GenerateAsync(new GenerationRequest(run.Guided ? conditions : [], options));
    using var final = torch.NewDisposeScope();
    var x = result.Images;
    var energies = conditions.Select(c => $"{c.Name}={c.Energy(x).sum().item<float>():F5}");
    Console.WriteLine($"{run.Name,-9} final energies: {string.Join(" ", energies)}  ({result.Trace.Steps.Count} steps, {result.Trace.Elapsed.TotalSeconds:F2} s)");
}

int previews = 0;
await foreach (var p in generator.PreviewsAsync(new GenerationRequest(conditions, Seed: 1), every: 5))
    previews++;
Console.WriteLine($"previews streamed: {previews}");

/// <summary>Options of the plug-in condition.</summary>
public sealed class BrightnessOptions
{
    /// <summary>The wanted mean pixel value in [-1, 1].</summary>
    public double Target { get; set; }
}

/// <summary>A plug-in condition: squared distance of the image's mean brightness to a target.</summary>
public sealed class BrightnessCondition(BrightnessOptions options) : IGuidanceCondition
{
    /// <inheritdoc />
    public string Name => "brightness";

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(60.0));

    /// <inheritdoc />
    public Tensor Energy(Tensor x0) => (x0.flatten(1).mean([1L]) - options.Target).square();
}

/// <summary>
/// The exact epsilon-predictor of data x0 ~ N(0, std^2) per pixel under a linear DDPM schedule:
/// eps(x_t) = sqrt(1 - abar) x_t / (abar std^2 + 1 - abar). A real prior in a few lines, so the sample runs in seconds.
/// </summary>
public sealed class GaussianPrior(int channels, int size, double std) : IDenoiser
{
    /// <inheritdoc />
    public NoiseSchedule Schedule { get; } = NoiseSchedule.Linear();

    /// <inheritdoc />
    public PredictionType Prediction => PredictionType.Epsilon;

    /// <inheritdoc />
    public int Channels => channels;

    /// <inheritdoc />
    public int SampleSize => size;

    /// <inheritdoc />
    public bool LearnedSigma => false;

    /// <inheritdoc />
    public Tensor Forward(Tensor x, Tensor t)
    {
        double a = Schedule.AlphaBar((int)t[0].item<float>());
        return x * (Math.Sqrt(1 - a) / (a * std * std + 1 - a));
    }
}
