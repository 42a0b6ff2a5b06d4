using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// PCGrad (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning"): each task gradient is projected onto
/// the normal plane of every other task gradient it conflicts with (negative dot product), then the results are
/// summed. Tasks are visited in the given order (the original shuffles them; a fixed order keeps runs reproducible).
/// </summary>
/// <remarks>
/// Every projected gradient is a linear combination of the originals, so the projections are carried out on the
/// K x K Gram matrix on the host and the output is one weighted sum of the tasks. Agreeing tasks are left untouched,
/// so the output equals the plain sum when all tasks agree.
/// </remarks>
public sealed class PCGradCombiner : IGradientCombiner
{
    /// <summary>Creates the combiner; <paramref name="perChannel"/> solves one problem per channel (dim 1).</summary>
    public PCGradCombiner(bool perChannel = false) => PerChannel = perChannel;

    /// <summary>One problem per channel instead of one for the whole tensor.</summary>
    public bool PerChannel { get; }

    /// <inheritdoc />
    public string Name => PerChannel ? "pcgrad(per-channel)" : "pcgrad";

    /// <inheritdoc />
    public Tensor Combine(IReadOnlyList<Tensor> taskGradients)
    {
        TaskGram.Validate(taskGradients, PerChannel, Name);
        var grams = TaskGram.Compute(taskGradients, PerChannel);
        return TaskGram.WeightedSum(taskGradients, grams.Select(Coefficients).ToArray(), PerChannel);
    }

    /// <summary>The coefficients c with output <c>sum_m c_m g_m</c>, from the Gram matrix.</summary>
    public static double[] Coefficients(double[,] gram)
    {
        ArgumentNullException.ThrowIfNull(gram);
        int k = gram.GetLength(0);
        var total = new double[k];
        for (int i = 0; i < k; i++)
        {
            // a = coefficients of the projected g_i in terms of the original tasks.
            var a = new double[k];
            a[i] = 1;
            for (int j = 0; j < k; j++)
            {
                if (j == i || gram[j, j] <= 0) continue;
                double dot = 0;
                for (int m = 0; m < k; m++) dot += a[m] * gram[m, j];
                if (dot < 0) a[j] -= dot / gram[j, j];
            }
            for (int m = 0; m < k; m++) total[m] += a[m];
        }
        return total;
    }
}
