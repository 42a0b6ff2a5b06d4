using System.Diagnostics;
using System.Text.Json;
using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Guidance.StableDiffusion;
using ZMagic.Models.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Benchmarks;

/// <summary>
/// Peak memory of one guided Stable Diffusion step at SD 1.5 sizes with random weights (no download needed):
/// <c>dotnet run -c Release --project benchmarks/ZMagic.Benchmarks -- sd-memory [--size 512] [--method vanilla|zmagic]</c>.
/// Prints one JSON object: peak resident memory (VmHWM) before and after the step, the step time and its passes.
/// </summary>
public static class SdMemoryProbe
{
    /// <summary>Runs the probe with command-line arguments (after "sd-memory").</summary>
    public static int Run(string[] args)
    {
        int size = 512;
        string method = "vanilla";
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (args[i] == "--size") size = int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture);
            else if (args[i] == "--method") method = args[i + 1];
        }
        torch.manual_seed(0);
        var sw = Stopwatch.StartNew();
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.Sd15);
        using var vae = new AutoencoderKL(AutoencoderKLConfig.Sd15);
        foreach (var m in new nn.Module[] { unet, vae })
        {
            m.eval();
            foreach (var p in m.parameters()) p.requires_grad_(false);
        }
        using var scheduler = new SdDdimScheduler(SdSchedulerConfig.Sd15);
        // Random text states stand in for the CLIP text encoder's output (it runs once per request, not per step).
        using var cond = torch.randn(1, 77, 768);
        using var uncond = torch.randn(1, 77, 768);
        var denoiser = new ClassifierFreeDenoiser(unet, scheduler.Schedule, PredictionType.Epsilon, cond, uncond, 7.5);
        var cache = new VaeDecodeCache(vae);
        var condition = new DecodedImageCondition(new MeanColourEnergy(), cache, new GuidanceSchedule(new CfgRelativeStepSize(0.2)));
        double setupS = sw.Elapsed.TotalSeconds;
        long before = PeakRssKiB();

        IGuidanceStrategy strategy = method == "zmagic" ? new ZMagicStrategy(new ZMagicOptions { AnchorOnBaseStep = true }) : new VanillaStrategy();
        int latent = size / vae.DownsampleFactor;
        var trace = new ZMagic.Core.Sampling.StepTrace { T = 501, Next = 481 };
        sw.Restart();
        using (var scope = torch.NewDisposeScope())
        {
            var x = torch.randn(1, 4, latent, latent);
            var step = new GuidedStep
            {
                Denoiser = new SizedDenoiser(denoiser, latent),
                X = x,
                TimestepTensor = torch.full(1, 501f),
                Timesteps = new TimestepPair(501, 481),
                AlphaBar = scheduler.AlphaBar(501),
                AlphaBarNext = scheduler.AlphaBar(481),
                Sampler = new DdimStep(0),
                Conditions = new IGuidanceCondition[] { condition },
                Combiner = SumCombiner.Instance,
                Trace = trace,
            };
            strategy.Step(step);
        }
        double stepS = sw.Elapsed.TotalSeconds;
        long after = PeakRssKiB();
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            size,
            method,
            setup_seconds = Math.Round(setupS, 1),
            step_seconds = Math.Round(stepS, 1),
            peak_rss_mb_after_setup = before / 1024,
            peak_rss_mb_after_step = after / 1024,
            forwards = trace.Passes.DenoiserForwards,
            backwards = trace.Passes.DenoiserBackwards,
            vjps = trace.Passes.Vjps,
            torch_threads = torch.get_num_threads(),
        }));
        return 0;
    }

    private static long PeakRssKiB()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
        return -1;
    }

    private sealed class MeanColourEnergy : IGuidanceCondition
    {
        public string Name => "mean-colour";
        public GuidanceSchedule Schedule { get; } = new(new ConstantStepSize(1));
        public Tensor Energy(Tensor x0) => (x0.mean(new long[] { 2, 3 }) - 0.5).square().sum(1).sqrt();
    }

    private sealed class SizedDenoiser(IDenoiser inner, int size) : IDenoiser
    {
        public NoiseSchedule Schedule => inner.Schedule;
        public PredictionType Prediction => inner.Prediction;
        public int Channels => inner.Channels;
        public int SampleSize => size;
        public bool LearnedSigma => false;
        public Tensor Forward(Tensor x, Tensor t) => inner.Forward(x, t);
    }
}
