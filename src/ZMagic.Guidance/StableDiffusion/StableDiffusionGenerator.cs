using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Core.Sampling;
using ZMagic.Models.StableDiffusion;
using static TorchSharp.torch;

namespace ZMagic.Guidance.StableDiffusion;

/// <summary>How the image conditions of a Stable Diffusion request are combined.</summary>
public enum SdGuidanceMethod
{
    /// <summary>FreeDoM: each condition's gradient at the CFG step's x0, summed (or combined).</summary>
    Vanilla,
    /// <summary>
    /// Z-Magic: the CFG (text) step is the proposal; style/content are evaluated there (same t) and pulled back through
    /// it with one vector-Jacobian product each; per-latent-channel CAGrad by default.
    /// </summary>
    ZMagic,
}

/// <summary>One Stable Diffusion generation request.</summary>
public sealed record StableDiffusionRequest
{
    /// <summary>The text prompt (classifier-free guidance).</summary>
    public required string Prompt { get; init; }

    /// <summary>The negative / unconditional prompt ("" as SD).</summary>
    public string NegativePrompt { get; init; } = "";

    /// <summary>DDIM steps (leading spacing, as the SD scheduler).</summary>
    public int Steps { get; init; } = 50;

    /// <summary>CFG scale (SD default 7.5; FreeDoM's SD style experiments use 5).</summary>
    public double GuidanceScale { get; init; } = 7.5;

    /// <summary>DDIM eta (0 = deterministic).</summary>
    public double Eta { get; init; }

    /// <summary>Image side in pixels (square; a multiple of the VAE factor). Null: the model's native size.</summary>
    public int? Size { get; init; }

    /// <summary>Images per request.</summary>
    public int BatchSize { get; init; } = 1;

    /// <summary>Seed (item i's noise depends only on the seed and i).</summary>
    public long Seed { get; init; }

    /// <summary>Image-space conditions (style, content, ...) with energies of an image in [-1, 1].</summary>
    public IReadOnlyList<IGuidanceCondition> Conditions { get; init; } = Array.Empty<IGuidanceCondition>();

    /// <summary>Vanilla (FreeDoM) or Z-Magic.</summary>
    public SdGuidanceMethod Method { get; init; } = SdGuidanceMethod.ZMagic;

    /// <summary>The combiner; null = per-latent-channel CAGrad(0.5) for Z-Magic, the sum for Vanilla.</summary>
    public IGradientCombiner? Combiner { get; init; }

    /// <summary>
    /// Step size of each condition as a fraction of the CFG correction's RMS (FreeDoM SD: 0.2); null keeps each
    /// condition's own rule.
    /// </summary>
    public double? CfgRelativeScale { get; init; } = 0.2;

    /// <summary>Guidance window in timesteps (FreeDoM SD guides for 70 &gt; index &gt;= 30 of 100 steps, i.e. 300 &lt; t &lt;= 700).</summary>
    public GuidanceWindow? Window { get; init; } = new(Stop: 300, Start: 700);

    /// <summary>Time-travel (FreeDoM SD: 3 repeats for 400 &lt; t &lt;= 700); null for none.</summary>
    public TimeTravel? TimeTravel { get; init; }

    /// <summary>What to do with non-finite energies or gradients.</summary>
    public NonFinitePolicy NonFinitePolicy { get; init; } = NonFinitePolicy.Fail;

    /// <summary>
    /// Per-condition step sizes and windows, paired with <see cref="Conditions"/> by position (each a fraction of the CFG
    /// correction's RMS, as <see cref="CfgRelativeScale"/>, with its own window). Null: <see cref="CfgRelativeScale"/>
    /// and <see cref="Window"/> for every condition.
    /// </summary>
    public IReadOnlyList<CfgRelativeGuidance>? ConditionGuidance { get; init; }

    /// <summary>The base sampler step; null: DDIM with <see cref="Eta"/>. The research code's SD runs use the DDPM posterior step.</summary>
    public ISamplerStep? SamplerStep { get; init; }

    /// <summary>Z-Magic's options; null: <c>new ZMagicOptions { AnchorOnBaseStep = true }</c>. Must anchor on the base step.</summary>
    public ZMagicOptions? ZMagicOptions { get; init; }
}

/// <summary>One condition's step size (a fraction of the CFG correction's RMS) and window on Stable Diffusion.</summary>
/// <param name="Scale">The fraction (<see cref="CfgRelativeStepSize"/>).</param>
/// <param name="Window">Where the condition acts.</param>
public sealed record CfgRelativeGuidance(double Scale, GuidanceWindow? Window = null);

/// <summary>The images and the trace of a Stable Diffusion run. Dispose it to free the tensors.</summary>
public sealed class StableDiffusionResult : IDisposable
{
    internal StableDiffusionResult(Tensor latents, Tensor images, SamplingTrace trace, int decodes)
    {
        Latents = latents;
        Images = images;
        Trace = trace;
        GuidanceDecodes = decodes;
    }

    /// <summary>Final latents [B, 4, h, w] (scaled as the UNet sees them).</summary>
    public Tensor Latents { get; }

    /// <summary>Decoded images [B, 3, H, W] in [-1, 1] (clamped).</summary>
    public Tensor Images { get; }

    /// <summary>Per-step trace.</summary>
    public SamplingTrace Trace { get; }

    /// <summary>VAE decodes spent on guidance (one per energy evaluation point, shared by the conditions).</summary>
    public int GuidanceDecodes { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Latents.Dispose();
        Images.Dispose();
    }
}

/// <summary>
/// Stable Diffusion sampling in latent space: DDIM with the model's scheduler config, classifier-free guidance for
/// the text, and energy guidance for image conditions computed on the VAE-decoded Tweedie estimate (gradients through
/// the decoder and the UNet), under Vanilla (FreeDoM) or Z-Magic.
/// </summary>
/// <remarks>
/// Memory: a guided step keeps the UNet's and the decoder's activations for the backward pass. Options that reduce
/// the peak: run in float16/bfloat16 where the device supports it (<see cref="StableDiffusionModel.To"/>), use batch 1
/// (split larger requests; items are independent and seeded per item), narrow the guidance window, and prefer
/// Vanilla or Z-Magic's cheaper modes (<see cref="ZMagicOptions.Proposal"/>). See docs/performance.md.
/// </remarks>
public sealed class StableDiffusionGenerator
{
    private readonly StableDiffusionModel _model;

    /// <summary>Creates a generator over loaded components.</summary>
    public StableDiffusionGenerator(StableDiffusionModel model) => _model = model ?? throw new ArgumentNullException(nameof(model));

    /// <summary>Runs one request on the calling thread.</summary>
    /// <exception cref="ArgumentException">Invalid request (size, steps, batch).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; nothing is returned.</exception>
    public StableDiffusionResult Generate(StableDiffusionRequest request, IProgress<SamplingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        int factor = _model.Vae.DownsampleFactor;
        int size = request.Size ?? _model.UNet.Config.SampleSize * factor;
        if (size <= 0 || size % factor != 0)
            throw new ArgumentException($"Size {size} must be a positive multiple of the VAE factor {factor}.", nameof(request));
        if (request.Steps < 1 || request.Steps > _model.SchedulerConfig.TrainTimesteps)
            throw new ArgumentException($"Steps must be in [1, {_model.SchedulerConfig.TrainTimesteps}]; got {request.Steps}.", nameof(request));

        using var scheduler = new SdDdimScheduler(_model.SchedulerConfig);
        using var cond = _model.EncodePrompt(request.Prompt);
        using var uncond = _model.EncodePrompt(request.NegativePrompt);
        var prediction = _model.SchedulerConfig.PredictionType == "v_prediction" ? PredictionType.VPrediction : PredictionType.Epsilon;
        var denoiser = new LatentDenoiser(new ClassifierFreeDenoiser(_model.UNet, scheduler.Schedule, prediction, cond, uncond, request.GuidanceScale), size / factor);
        var cache = new VaeDecodeCache(_model.Vae);
        if (request.ConditionGuidance is { } per && per.Count != request.Conditions.Count)
            throw new ArgumentException($"ConditionGuidance has {per.Count} entries for {request.Conditions.Count} conditions; give one per condition.", nameof(request));
        if (request.ZMagicOptions is { AnchorOnBaseStep: false })
            throw new ArgumentException("ZMagicOptions.AnchorOnBaseStep must be true on Stable Diffusion: the prompt's CFG step is the proposal.", nameof(request));
        var conditions = request.Conditions.Select((c, i) => (IGuidanceCondition)new DecodedImageCondition(c, cache,
            request.ConditionGuidance is { } g
                ? new GuidanceSchedule(new CfgRelativeStepSize(g[i].Scale), g[i].Window)
                : request.CfgRelativeScale is { } s
                ? new GuidanceSchedule(new CfgRelativeStepSize(s), request.Window)
                : c.Schedule with { Window = request.Window ?? c.Schedule.Window })).ToList();

        IGuidanceStrategy strategy = request.Method == SdGuidanceMethod.ZMagic
            ? new ZMagicStrategy(request.ZMagicOptions ?? new ZMagicOptions { AnchorOnBaseStep = true })
            : new VanillaStrategy();
        var combiner = request.Combiner ?? (request.Method == SdGuidanceMethod.ZMagic ? new CAGradCombiner(0.5, perChannel: true) : SumCombiner.Instance);
        var param = _model.UNet.parameters().First();
        var options = new SamplerOptions
        {
            Timesteps = scheduler.Timesteps(request.Steps).Select(t => (int)t).ToArray(),
            SamplerStep = request.SamplerStep ?? new DdimStep(request.Eta),
            Strategy = conditions.Count == 0 ? UnguidedStrategy.Instance : strategy,
            Combiner = combiner,
            TimeTravel = request.TimeTravel,
            Seed = request.Seed,
            BatchSize = request.BatchSize,
            Device = param.device,
            DType = param.dtype,
            NonFinitePolicy = request.NonFinitePolicy,
        };
        var sampler = new ConditionalSampler(denoiser);
        using var result = sampler.Sample(conditions, options, progress, cancellationToken);
        Tensor images;
        using (no_grad())
            images = _model.Vae.Decode(result.Images / _model.Vae.Config.ScalingFactor).clamp(-1, 1);
        return new StableDiffusionResult(result.Images.detach().clone(), images, result.Trace, cache.Decodes);
    }

    /// <summary>The CFG denoiser at the requested latent size.</summary>
    private sealed class LatentDenoiser : IClassifierFreeDenoiser
    {
        public LatentDenoiser(ClassifierFreeDenoiser inner, int sampleSize)
        {
            Inner = inner;
            SampleSize = sampleSize;
        }

        public ClassifierFreeDenoiser Inner { get; }
        public NoiseSchedule Schedule => Inner.Schedule;
        public PredictionType Prediction => Inner.Prediction;
        public int Channels => Inner.Channels;
        public int SampleSize { get; }
        public bool LearnedSigma => false;
        public Tensor Forward(Tensor x, Tensor t) => Inner.Forward(x, t);
        public Tensor Forward(Tensor x, Tensor t, out Tensor cfgCorrection) => Inner.Forward(x, t, out cfgCorrection);
    }
}
