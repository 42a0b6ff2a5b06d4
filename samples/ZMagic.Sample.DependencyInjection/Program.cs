// ZMagic in an app on current Microsoft.Extensions packages (DependencyInjection/Options 10.0.15): registers ZMagic
// through AddZMagic, adds a plug-in condition whose constructor takes IOptionsMonitor<T> (the options pattern), shows
// start-up validation rejecting a plug-in that cannot be constructed, and samples the embedded digits prior
// unguided and guided for a few steps.
using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Guidance.DependencyInjection;
using ZMagic.Guidance.Generation;
using static TorchSharp.torch;

int steps = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 10;

static string InformationalVersion(Type t) =>
    t.Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0] ?? "?";
Console.WriteLine($"Microsoft.Extensions.DependencyInjection {InformationalVersion(typeof(ServiceCollection))}");
Console.WriteLine($"Microsoft.Extensions.Options {InformationalVersion(typeof(OptionsMonitor<>))}");

static IServiceCollection AddZMagicWithDigits(IServiceCollection services, int steps) => services.AddZMagic(o =>
{
    // The digits prior embedded in ZMagic.Demo.Digits (1x32x32), sampled with x0 clipping: no download needed.
    o.DenoiserFactory = _ => new X0ClippingDenoiser(ZMagic.Demo.Digits.DigitsModels.LoadPrior());
    o.Steps = steps;
    o.Strategy = ZMagicStrategyKind.Vanilla;
});

// 1. Start-up validation catches a plug-in condition that cannot be constructed (its IInkSensor is not registered),
//    before anything runs.
var broken = AddZMagicWithDigits(new ServiceCollection(), steps)
    .AddZMagicCondition<InkCondition, InkOptions>("ink");
using (var provider = broken.BuildServiceProvider())
{
    try
    {
        provider.GetRequiredService<IStartupValidator>().Validate();
        Console.WriteLine("start-up validation: passed (unexpected)");
    }
    catch (OptionsValidationException e)
    {
        Console.WriteLine($"start-up validation rejected: {e.Message}");
    }
}

// 2. The working app: the ink condition's dependency registered, configured through the options pattern.
var services = AddZMagicWithDigits(new ServiceCollection(), steps)
    .AddSingleton<IInkSensor, MeanInkSensor>()
    .AddZMagicCondition<InkCondition, InkOptions>("ink", o => o.Target = 0.2);
using var app = services.BuildServiceProvider();
app.GetRequiredService<IStartupValidator>().Validate();
Console.WriteLine("start-up validation: passed");
var generator = app.GetRequiredService<ZMagicGenerator>();
var ink = app.GetRequiredService<GuidanceConditionCatalog>().Create("ink");
Console.WriteLine($"ink target from IOptionsMonitor: {((InkCondition)ink).Target.ToString(CultureInfo.InvariantCulture)}");

foreach (bool guided in new[] { false, true })
{
    using var result = await generator.GenerateAsync(new GenerationRequest(guided ? [ink] : [], new SamplerOptions { Steps = steps, Seed = 1, BatchSize = 2 }));
    using var scope = NewDisposeScope();
    float energy = ink.Energy(result.Images).sum().item<float>();
    Console.WriteLine($"{(guided ? "guided" : "unguided"),-8} ink energy: {energy.ToString("F5", CultureInfo.InvariantCulture)} ({result.Trace.Steps.Count} steps)");
}

/// <summary>Options of the plug-in condition.</summary>
public sealed class InkOptions
{
    /// <summary>The wanted ink measure in [-1, 1].</summary>
    public double Target { get; set; }
}

/// <summary>A service the plug-in condition depends on.</summary>
public interface IInkSensor
{
    /// <summary>How much ink each image of the batch has, in [-1, 1].</summary>
    Tensor Measure(Tensor x0);
}

/// <summary>Mean pixel value as the ink measure.</summary>
public sealed class MeanInkSensor : IInkSensor
{
    /// <inheritdoc />
    public Tensor Measure(Tensor x0) => x0.flatten(1).mean([1L]);
}

/// <summary>
/// A plug-in condition taking its options through the options pattern (IOptionsMonitor, bound to the registration
/// name "ink") and a service: squared distance of the measured ink to the target.
/// </summary>
public sealed class InkCondition(IOptionsMonitor<InkOptions> options, IInkSensor sensor) : IGuidanceCondition
{
    /// <summary>The target, read from the named options.</summary>
    public double Target => options.CurrentValue.Target;

    /// <inheritdoc />
    public string Name => "ink";

    /// <inheritdoc />
    public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(60.0));

    /// <inheritdoc />
    public Tensor Energy(Tensor x0) => (sensor.Measure(x0) - Target).square();
}
