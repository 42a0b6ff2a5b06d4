using System.Diagnostics;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Runs the step's combiner, timed: once for the whole batch when it is elementwise (the sum), else once per batch
/// item on the items' slices [1, ...], so that a conflict combiner's Gram matrix and weights belong to one sample.
/// </summary>
internal sealed class PerItemCombiner(IGradientCombiner combiner, StepRecorder recorder, int t)
{
    public Tensor Combine(IReadOnlyList<Tensor> tasks)
    {
        var sw = Stopwatch.StartNew();
        long b = tasks[0].dim() == 0 ? 1 : tasks[0].shape[0];
        Tensor u;
        if (b == 1 || combiner.IsElementwise)
        {
            u = combiner.Combine(tasks);
        }
        else
        {
            var parts = new Tensor[b];
            for (int i = 0; i < b; i++)
            {
                int item = i;
                parts[i] = combiner.Combine(tasks.Select(task => task.narrow(0, item, 1)).ToList());
                if (parts[i].dim() == 0 || parts[i].shape[0] != 1)
                    throw new GuidanceException($"Combiner '{combiner.Name}' returned shape [{string.Join(", ", parts[i].shape)}] for one batch item; expected [1, ...].", null, t);
            }
            u = cat(parts, 0);
        }
        recorder.Combiner(sw.Elapsed.TotalMilliseconds);
        if (!u.shape.SequenceEqual(tasks[0].shape))
            throw new GuidanceException($"Combiner '{combiner.Name}' returned shape [{string.Join(", ", u.shape)}]; expected [{string.Join(", ", tasks[0].shape)}].", null, t);
        return u;
    }
}
