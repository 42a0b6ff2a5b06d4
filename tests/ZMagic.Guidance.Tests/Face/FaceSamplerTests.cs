using TorchSharp;
using Xunit.Abstractions;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Encoders.Face;
using ZMagic.Guidance.Face;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Face;

/// <summary>
/// Identity, landmarks and parsing conditions together inside <see cref="ConditionalSampler"/> (Vanilla and Z-Magic) on
/// the tiny 16x16 DDPM of golden/zmagic_steps. The conditions see 16x16 x0 estimates: identity pools them to 256 as
/// FreeDoM does, landmarks crop a box of the 16x16 frame, parsing resizes to 64.
/// </summary>
public class FaceSamplerTests(FaceNetsFixture nets, ITestOutputHelper log) : IClassFixture<FaceNetsFixture>
{
    private static DdpmDenoiser TinyDdpm() => DdpmDenoiser.Load(Path.Combine(Golden.Root, "zmagic_steps", "weights.safetensors"), new DdpmUNetConfig
    {
        Ch = 32, OutCh = 3, InChannels = 3, ChMult = [1, 2], NumResBlocks = 1, AttnResolutions = [8],
        Dropout = 0, Resolution = 16, VarType = "fixedlarge",
    });

    [Theory]
    [InlineData("vanilla")]
    [InlineData("zmagic")]
    public void IdentityLandmarksAndParsingRunInsideTheSampler(string strategyName)
    {
        using var scope = NewDisposeScope();
        using var denoiser = TinyDdpm();
        var reference = FaceTestData.Astronaut(16);
        var always = GuidanceWindow.Always;
        using var id = new IdentityCondition(nets.ArcFace, reference, new IdentityOptions { Scale = 1, Window = always });
        using var lm = new LandmarksCondition(nets.Landmarker, reference, new FaceCropBox(2, 14, 2, 14), new LandmarksOptions { Scale = 0.5, Window = always });
        using var ps = new ParsingCondition(nets.Parser, reference, new ParsingOptions { Scale = 0.01, Window = always, InputSize = 64 });
        IGuidanceStrategy strategy = strategyName == "vanilla" ? new VanillaStrategy() : new ZMagicStrategy();
        var options = new SamplerOptions { Timesteps = [700, 300], Seed = 11, Strategy = strategy };
        var sampler = new ConditionalSampler(denoiser);

        using var guided = sampler.Sample([id, lm, ps], options);
        using var plain = sampler.Sample([], options with { Strategy = null });

        Assert.Equal([1L, 3L, 16L, 16L], guided.Images.shape);
        Assert.True(guided.Images.isfinite().all().item<bool>());
        Assert.Equal([700, 300], guided.Trace.Steps.Select(s => s.T));
        foreach (var step in guided.Trace.Steps)
        {
            Assert.Equal(["identity", "landmarks", "parsing"], step.Conditions.Select(c => c.Name));
            foreach (var c in step.Conditions)
            {
                Assert.True(c.Active && !c.Skipped, $"{c.Name} at t={step.T} inactive or skipped");
                Assert.True(double.IsFinite(c.Energy) && c.Energy > 0, $"{c.Name} energy {c.Energy} at t={step.T}");
                // Vanilla's default fused backward (one pass for all conditions, as FreeDoM) records no per-condition norms;
                // neither do Z-Magic's fused later conditions (sum combiner, gradient-free step sizes): only its anchor has one.
                if (strategyName == "zmagic" && c == step.Conditions[0])
                    Assert.True(double.IsFinite(c.GradientNorm) && c.GradientNorm > 0, $"{c.Name} gradient norm {c.GradientNorm} at t={step.T}");
                Assert.True(c.StepSize > 0, $"{c.Name} step size {c.StepSize}");
            }
            Assert.True(step.Passes.EncoderCalls >= 3);
            log.WriteLine($"{strategyName} t={step.T}: " + string.Join("; ", step.Conditions.Select(c => $"{c.Name} E={c.Energy:G4} |g|={c.GradientNorm:G3} rho={c.StepSize:G3}"))
                + $"; encoder {step.Timings.EncoderMs:F0} ms, forward {step.Timings.ForwardMs:F0} ms, backward {step.Timings.BackwardMs:F0} ms");
        }
        // Guidance changed the sample (same seed, same noise).
        double diff = (guided.Images - plain.Images).abs().max().item<float>();
        Assert.True(diff > 1e-4, $"guided and unguided samples are identical (max diff {diff})");
    }
}
