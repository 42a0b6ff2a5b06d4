using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Where Z-Magic's later conditions are evaluated. Star chaining: all at the first proposal
/// <c>p = S(x_t) - rho_1 g1</c>; with branch noise each later one after the first at <c>S(x_t; own noise) - rho_1 g1</c>;
/// chaining: each at the previous one's, <c>p_{k+1} = p_k - rho_k gh_k</c>.
/// </summary>
internal sealed class ZMagicProposals
{
    private readonly StepParts _parts;
    private readonly ZMagicOptions _options;
    private readonly XtEstimate _at;
    private readonly ZMagicAnchor _anchor;
    private Tensor _chain;

    public ZMagicProposals(StepParts parts, ZMagicOptions options, XtEstimate at, Tensor baseStep, ZMagicAnchor anchor)
    {
        (_parts, _options, _at, _anchor) = (parts, options, at, anchor);
        First = baseStep - PerItem.Times(anchor.G1Detached, anchor.Rho1);
        _chain = First;
    }

    /// <summary>The first proposal.</summary>
    public Tensor First { get; }

    /// <summary>Whether every later condition is evaluated at <see cref="First"/> (star chaining without branch noise).</summary>
    public bool Shared => _options.Chaining == ZMagicChaining.Star && !_options.BranchNoise;

    /// <summary>The eps a proposal uses instead of its own forward (ReuseFirstForward), else null.</summary>
    public Tensor? ReusedEps => _options.Proposal == ZMagicProposal.Exact ? null : _at.Eps;

    /// <summary>Later condition j's own proposal (when not <see cref="Shared"/>).</summary>
    public EvaluationPoint PointFor(int j, int k)
    {
        var step = _parts.Step;
        var proposal = First;
        if (_options.Chaining == ZMagicChaining.Chain) proposal = _chain;
        else if (_options.BranchNoise && j > 0 && step.Sampler.UsesNoise)
        {
            var name = _parts.Conditions.Name(k);
            var draw = step.DrawNoise ?? throw new GuidanceException(
                "ZMagicOptions.BranchNoise needs GuidedStep.DrawNoise to draw a noise tensor per branch; the caller provided none.", name, step.Timesteps.T);
            var noise = draw();
            if (!noise.shape.SequenceEqual(step.X.shape))
                throw new GuidanceException($"DrawNoise returned shape [{string.Join(", ", noise.shape)}]; expected [{string.Join(", ", step.X.shape)}].", name, step.Timesteps.T);
            proposal = step.Sampler.Step(step.X, _at.X0, _at.Eps, step.AlphaBar, step.AlphaBarNext, noise) - PerItem.Times(_anchor.G1Detached, _anchor.Rho1);
        }
        return EvaluationPoint.AtProposal(_parts, proposal, 1, ReusedEps);
    }

    /// <summary>A later condition was used: under chaining the next proposal moves by its own step, <c>- rho_k gh_k</c>.</summary>
    public void Accepted(Tensor gh, double[] rho)
    {
        if (_options.Chaining == ZMagicChaining.Chain) _chain = _chain - PerItem.Times(gh, rho);
    }
}
