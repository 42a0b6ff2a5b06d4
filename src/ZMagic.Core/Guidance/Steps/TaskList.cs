using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// The task gradients of one step: <c>rho_k d_k</c> per condition (with <c>d_k</c> for the cosines), and at most one
/// fused task <c>sum_k rho_k d_k</c> that stands for several conditions.
/// </summary>
internal sealed class TaskList
{
    private readonly List<Tensor> _tasks = new();
    private readonly List<Tensor> _gradients = new();
    private readonly List<int> _conditions = new();

    /// <summary>The per-condition tasks, then the fused one if any.</summary>
    public IReadOnlyList<Tensor> All => Fused is null ? _tasks : _tasks.Append(Fused).ToList();

    /// <summary>The conditions with a task of their own, in order.</summary>
    public IReadOnlyList<int> Conditions => _conditions;

    /// <summary>Their gradients d_k (before the step size).</summary>
    public IReadOnlyList<Tensor> Gradients => _gradients;

    /// <summary>The fused task, if a fused pass produced one.</summary>
    public Tensor? Fused { get; private set; }

    /// <summary>How many task terms the update rule sees (the fused task counts for every condition it sums).</summary>
    public int TermCount { get; private set; }

    public void Add(int k, Tensor gradient, Tensor task)
    {
        _conditions.Add(k);
        _gradients.Add(gradient);
        _tasks.Add(task);
        TermCount++;
    }

    public void AddFused(Tensor task, int terms)
    {
        Fused = task;
        TermCount += terms;
    }
}
