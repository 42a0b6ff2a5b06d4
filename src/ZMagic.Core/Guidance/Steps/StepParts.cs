using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// The parts one guided step is made of, built once per step: the timed denoiser, the condition evaluator, the step
/// recorder and the per-item combiner.
/// </summary>
internal sealed class StepParts
{
    public StepParts(GuidedStep step)
    {
        Step = step;
        var active = step.Conditions.Select(c => c.Schedule.EffectiveWindow.IsActive(step.Timesteps.T)).ToList();
        Recorder = new StepRecorder(step, active);
        Conditions = new ConditionEvaluator(step, Recorder, active);
        Denoiser = new TimedDenoiser(step, Recorder);
        Combiner = new PerItemCombiner(step.Combiner, Recorder, step.Timesteps.T);
    }

    public GuidedStep Step { get; }
    public StepRecorder Recorder { get; }
    public ConditionEvaluator Conditions { get; }
    public TimedDenoiser Denoiser { get; }
    public PerItemCombiner Combiner { get; }

    /// <summary>The plain sampler step, without gradients (one forward): a step where no condition is active.</summary>
    public Tensor Unguided()
    {
        using var _ = no_grad();
        var eps = Denoiser.Forward(Step.X);
        var x0 = Tweedie.X0(Step.X, eps, Step.AlphaBar);
        Recorder.Inspect("eps", eps);
        Recorder.Inspect("x0", x0);
        var next = Step.Sampler.Step(Step.X, x0, eps, Step.AlphaBar, Step.AlphaBarNext, Step.Noise);
        Recorder.Inspect("base", next);
        return next;
    }
}
