using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// Shared plumbing of the Gram-matrix combiners (CAGrad, PCGrad, MGDA): validation of the task gradients, the K x K
/// Gram matrices (one per channel, or one for the whole tensor) computed with one batched matmul and moved to the
/// host once, and the final weighted sum. No other tensor-sized work happens in these combiners.
/// </summary>
internal static class TaskGram
{
    /// <summary>Throws unless the tasks are non-empty and share shape, dtype and device (and have a channel dim when per channel).</summary>
    public static void Validate(IReadOnlyList<Tensor> tasks, bool perChannel, string combiner)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        if (tasks.Count == 0) throw new ArgumentException($"{combiner}: no task gradients to combine.", nameof(tasks));
        var first = tasks[0] ?? throw new ArgumentException($"{combiner}: task gradient 0 is null.", nameof(tasks));
        if (!torch.is_floating_point(first))
            throw new ArgumentException($"{combiner}: task gradients must be floating point; task 0 has dtype {first.dtype}.", nameof(tasks));
        for (int i = 1; i < tasks.Count; i++)
        {
            var t = tasks[i] ?? throw new ArgumentException($"{combiner}: task gradient {i} is null.", nameof(tasks));
            if (!t.shape.SequenceEqual(first.shape))
                throw new ArgumentException($"{combiner}: task gradient {i} has shape [{string.Join(", ", t.shape)}]; expected [{string.Join(", ", first.shape)}] like task 0.", nameof(tasks));
            if (t.dtype != first.dtype)
                throw new ArgumentException($"{combiner}: task gradient {i} has dtype {t.dtype}; expected {first.dtype} like task 0.", nameof(tasks));
            if (t.device_type != first.device_type || t.device_index != first.device_index)
                throw new ArgumentException($"{combiner}: task gradient {i} is on {t.device}; expected {first.device} like task 0.", nameof(tasks));
        }
        if (perChannel && first.dim() < 2)
            throw new ArgumentException($"{combiner}: per-channel combination needs task gradients of rank >= 2 ([B, C, ...]); got shape [{string.Join(", ", first.shape)}].", nameof(tasks));
    }

    /// <summary>Number of groups: channels (dim 1) when per channel, else 1.</summary>
    public static int Groups(Tensor task, bool perChannel) => perChannel ? (int)task.shape[1] : 1;

    /// <summary>
    /// Gram matrices [groups][K, K] in float64 on the host. Per channel, group c holds the dot products of the
    /// tasks' channel-c slices taken over every other dimension (batch included), as the research code does.
    /// Computed in the tasks' dtype with one batched matmul, then transferred once.
    /// </summary>
    public static double[][,] Compute(IReadOnlyList<Tensor> tasks, bool perChannel)
    {
        int k = tasks.Count;
        using var scope = torch.NewDisposeScope();
        var rows = Rows(tasks, perChannel);                       // [groups, K, m]
        var gram = torch.bmm(rows, rows.transpose(1, 2));          // [groups, K, K]
        var host = gram.to(ScalarType.Float64).cpu().data<double>().ToArray();
        int groups = (int)rows.shape[0];
        var result = new double[groups][,];
        for (int c = 0; c < groups; c++)
        {
            var g = new double[k, k];
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++)
                    g[i, j] = host[(c * k + i) * k + j];
            result[c] = g;
        }
        return result;
    }

    /// <summary>The tasks as [groups, K, m] rows (a stacked copy; shapes are validated beforehand).</summary>
    public static Tensor Rows(IReadOnlyList<Tensor> tasks, bool perChannel)
    {
        var stacked = torch.stack(tasks.ToArray());                // [K, ...]
        if (!perChannel) return stacked.reshape(1, tasks.Count, -1);
        long channels = tasks[0].shape[1];
        // [K, B, C, rest] -> [C, K, B, rest] -> [C, K, m]
        return stacked.reshape(tasks.Count, tasks[0].shape[0], channels, -1).permute(2, 0, 1, 3).reshape(channels, tasks.Count, -1);
    }

    /// <summary>
    /// <c>sum_k coefficients[group][k] * task_k</c>, with one coefficient vector per channel when per channel.
    /// </summary>
    public static Tensor WeightedSum(IReadOnlyList<Tensor> tasks, double[][] coefficients, bool perChannel)
    {
        var first = tasks[0];
        if (!perChannel)
        {
            var sum = first * coefficients[0][0];
            for (int k = 1; k < tasks.Count; k++) sum = sum.add_(tasks[k] * coefficients[0][k]);
            return sum;
        }
        long channels = first.shape[1];
        var viewShape = new long[first.dim()];
        Array.Fill(viewShape, 1L);
        viewShape[1] = channels;
        Tensor? result = null;
        for (int k = 0; k < tasks.Count; k++)
        {
            var w = new double[channels];
            for (int c = 0; c < channels; c++) w[c] = coefficients[c][k];
            var wt = torch.tensor(w, ScalarType.Float64).to(first.dtype, first.device).reshape(viewShape);
            var term = tasks[k] * wt;
            result = result is null ? term : result.add_(term);
        }
        return result!;
    }

    /// <summary>L2 norm of <paramref name="t"/> per group (per channel over all other dims, or whole), one host transfer.</summary>
    public static double[] GroupNorms(Tensor t, bool perChannel)
    {
        using var scope = torch.NewDisposeScope();
        var n = perChannel ? t.transpose(0, 1).reshape(t.shape[1], -1).square().sum(1).sqrt() : t.norm().reshape(1);
        return n.to(ScalarType.Float64).cpu().data<double>().ToArray();
    }

    /// <summary><paramref name="t"/> times one factor per group.</summary>
    public static Tensor ScaleGroups(Tensor t, double[] factors, bool perChannel)
    {
        if (!perChannel) return t * factors[0];
        var shape = new long[t.dim()];
        Array.Fill(shape, 1L);
        shape[1] = factors.Length;
        return t * torch.tensor(factors, ScalarType.Float64).to(t.dtype, t.device).reshape(shape);
    }
}
