using System.Diagnostics;
using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// The step's denoiser as a decorator that times and counts every pass through it: forwards at the step's timestep,
/// backward passes and vector-Jacobian products (recorded by the <see cref="StepRecorder"/>).
/// </summary>
internal sealed class TimedDenoiser(GuidedStep step, StepRecorder recorder)
{
    /// <summary>eps(x, t) of a sample [B, ...] or of one replicated <paramref name="copies"/> times ([copies * B, ...]).</summary>
    public Tensor Forward(Tensor x, int copies = 1) => Forward(x, copies, out _);

    /// <summary>
    /// eps(x, t), and the CFG correction of this call when the denoiser is an <see cref="IClassifierFreeDenoiser"/>
    /// (else null).
    /// </summary>
    public Tensor Forward(Tensor x, int copies, out Tensor? cfgCorrection)
    {
        var t = copies == 1 ? step.TimestepTensor : step.TimestepTensor.repeat(copies);
        var sw = Stopwatch.StartNew();
        var eps = step.Denoiser.PredictEpsilon(x, t, step.AlphaBar, out cfgCorrection);
        recorder.Forward(sw.Elapsed.TotalMilliseconds, x.shape[0]);
        if (!eps.shape.SequenceEqual(x.shape))
            throw new GuidanceException($"The denoiser returned eps of shape [{string.Join(", ", eps.shape)}] for a sample of shape [{string.Join(", ", x.shape)}].", null, step.Timesteps.T);
        return eps;
    }

    /// <summary>One backward pass (gradient of a scalar with respect to a leaf).</summary>
    public Tensor Backward(Tensor scalar, Tensor input, bool retainGraph, bool createGraph, string what)
    {
        var sw = Stopwatch.StartNew();
        var g = SafeGrad.Grad(scalar, input, retainGraph, createGraph, what);
        recorder.Backward(sw.Elapsed.TotalMilliseconds, input.shape[0]);
        return g;
    }

    /// <summary>One vector-Jacobian product <c>J^T v</c> of <paramref name="output"/> with respect to <paramref name="input"/>.</summary>
    public Tensor Vjp(Tensor output, Tensor input, Tensor v, bool retainGraph)
    {
        var sw = Stopwatch.StartNew();
        var d = SafeGrad.Vjp(output, input, v, retainGraph, false, "vector-Jacobian product");
        recorder.Vjp(sw.Elapsed.TotalMilliseconds, input.shape[0]);
        return d;
    }
}
