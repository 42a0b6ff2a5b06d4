using ZMagic.Core.Diffusion;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Where conditions are evaluated: a leaf sample (x_t, or a Z-Magic proposal p), its eps and its Tweedie estimate x0,
/// in one graph. Replicated points hold one copy of the sample per condition along the batch dimension; condition j
/// then sees copy j.
/// </summary>
internal sealed class EvaluationPoint
{
    private EvaluationPoint(Tensor leaf, Tensor eps, Tensor? cfgCorrection, double alphaBar, int copies, bool isProposal, bool throughDenoiser)
    {
        Leaf = leaf;
        Eps = eps;
        CfgCorrection = cfgCorrection;
        X0 = Tweedie.X0(leaf, eps, alphaBar);
        Copies = copies;
        Batch = leaf.shape[0] / copies;
        IsProposal = isProposal;
        ThroughDenoiser = throughDenoiser;
    }

    public Tensor Leaf { get; }
    public Tensor Eps { get; }

    /// <summary>The CFG correction of the forward at this point (null without a classifier-free denoiser or a forward).</summary>
    public Tensor? CfgCorrection { get; }
    public Tensor X0 { get; }
    public int Copies { get; }
    public long Batch { get; }

    /// <summary>A proposal (its intermediates are inspected per condition, its gradients are called gh).</summary>
    public bool IsProposal { get; }

    /// <summary>False when eps was reused from x_t: gradients then pass through the encoders only.</summary>
    public bool ThroughDenoiser { get; }

    /// <summary>x_t with a forward through the denoiser (replicated <paramref name="copies"/> times when above 1).</summary>
    public static EvaluationPoint AtXt(StepParts parts, int copies) => At(parts, parts.Step.X, copies, reuseEps: null, isProposal: false);

    /// <summary>A proposal, with its own forward or with <paramref name="reuseEps"/> (eps of x_t, no forward).</summary>
    public static EvaluationPoint AtProposal(StepParts parts, Tensor proposal, int copies, Tensor? reuseEps) => At(parts, proposal, copies, reuseEps, isProposal: true);

    private static EvaluationPoint At(StepParts parts, Tensor sample, int copies, Tensor? reuseEps, bool isProposal)
    {
        var leaf = copies > 1 ? PerItem.Replicate(sample, copies) : sample.detach().requires_grad_(true);
        Tensor? cfgCorrection = null;
        var eps = reuseEps ?? parts.Denoiser.Forward(leaf, copies, out cfgCorrection);
        return new EvaluationPoint(leaf, eps, cfgCorrection, parts.Step.AlphaBar, copies, isProposal, throughDenoiser: reuseEps is null);
    }

    /// <summary>Copy <paramref name="j"/> of a tensor shaped like the leaf (the whole tensor when not replicated).</summary>
    public Tensor Copy(Tensor t, int j) => Copies > 1 ? PerItem.Chunk(t, j, Batch) : t;

    /// <summary>The detached estimate of copy 0 (x_t's eps, x0 and CFG correction); eps and x0 go to the probe.</summary>
    public XtEstimate Estimate(StepRecorder recorder)
    {
        var at = new XtEstimate(Copy(Eps, 0).detach(), Copy(X0, 0).detach(), CfgCorrection is null ? null : Copy(CfgCorrection, 0).detach());
        recorder.Inspect("eps", at.Eps);
        recorder.Inspect("x0", at.X0);
        return at;
    }

    /// <summary>Condition k's energy at copy <paramref name="j"/> (null when the non-finite policy skips it).</summary>
    public Tensor? Energy(StepParts parts, int k, int j)
    {
        if (IsProposal)
        {
            var name = parts.Conditions.Name(k);
            parts.Recorder.Inspect("proposal/" + name, Copy(Leaf, j));
            parts.Recorder.Inspect("eps_proposal/" + name, Copy(Eps, j));
            parts.Recorder.Inspect("x0_proposal/" + name, Copy(X0, j));
        }
        return parts.Conditions.Energy(k, Copy(X0, j));
    }

    /// <summary>The energies of <paramref name="conditions"/> (condition j at copy j), the finite ones by condition.</summary>
    public Dictionary<int, Tensor> Energies(StepParts parts, IReadOnlyList<int> conditions)
    {
        var energies = new Dictionary<int, Tensor>();
        for (int j = 0; j < conditions.Count; j++)
        {
            parts.Step.CancellationToken.ThrowIfCancellationRequested();
            if (Energy(parts, conditions[j], j) is { } e) energies[conditions[j]] = e;
        }
        return energies;
    }

    /// <summary>The gradient of <paramref name="scalar"/> with respect to the leaf: through the denoiser, or the encoders only.</summary>
    public Tensor Gradient(StepParts parts, Tensor scalar, bool retainGraph, string what, bool createGraph = false) => ThroughDenoiser
        ? parts.Denoiser.Backward(scalar, Leaf, retainGraph, createGraph, what)
        : parts.Conditions.EncoderGradient(scalar, Leaf, retainGraph);

    /// <summary>How the probe and messages call a gradient at this point: g at x_t, gh at a proposal.</summary>
    public string GradientName => IsProposal ? "gh/" : "g/";

    /// <summary>Where the gradient is taken, for messages.</summary>
    public string Where => IsProposal ? " at the proposal" : "";
}
