using TorchSharp;
using ZMagic.Core.Guidance;
using static TorchSharp.torch;

namespace ZMagic.Core.Sampling;

/// <summary>
/// The paper leaves the order of the conditions open (the first one anchors Z-Magic's proposal, later ones are
/// evaluated where it moved the sample). <see cref="SampleWithBestOrder"/> picks it per item: every candidate order is
/// run for the first <see cref="ConditionOrderOptions.TrialSteps"/> steps, each item keeps the order whose trial ends
/// with the lowest summed energy of all conditions, and each item is then sampled with its order from the start.
/// </summary>
/// <remarks>
/// <para>The trial of an order samples the first K timesteps of the run with that order, the K-th step going straight
/// to the clean end of the chain (t' = -1), so the trial's output is the clean estimate x0 after K guided steps; the
/// score is the plain sum of every condition's <see cref="IGuidanceCondition.Energy"/> there (unweighted, so an
/// energy on a larger scale counts for more). Item i's choice and image depend only on the seed and i, never on the
/// batch: the items that chose the same order are sampled as one batch under their own indices
/// (<see cref="SamplerOptions.Items"/>), which reproduces the noise they have in the whole request.</para>
/// <para>Cost: K steps per candidate over the whole batch, then one ordinary run; with star chaining and n conditions,
/// n candidates, so 25 steps with K = 3 and 3 conditions cost about 1.36 runs.</para>
/// </remarks>
public static class ConditionOrder
{
    /// <summary>Most conditions whose permutations are tried (6! = 720 orders).</summary>
    public const int MaxPermutedConditions = 6;

    /// <summary>
    /// The candidate orders of <paramref name="count"/> conditions: the given order first, then either every other
    /// permutation (lexicographic) or each other condition moved to the front with the rest in the given order.
    /// </summary>
    /// <exception cref="ArgumentException">count is below 1, or above <see cref="MaxPermutedConditions"/> with all permutations.</exception>
    public static IReadOnlyList<IReadOnlyList<int>> Candidates(int count, bool allPermutations)
    {
        if (count < 1) throw new ArgumentException($"There must be at least one condition to order; got {count}.", nameof(count));
        var given = Enumerable.Range(0, count).ToArray();
        if (!allPermutations)
            return Enumerable.Range(0, count).Select(first => (IReadOnlyList<int>)given.Where(i => i != first).Prepend(first).ToArray()).ToList();
        if (count > MaxPermutedConditions)
            throw new ArgumentException($"Trying every order of {count} conditions means {Factorial(count)} trials; at most {MaxPermutedConditions} conditions can be permuted. Try each first instead (AllPermutations = false).", nameof(count));
        var all = new List<IReadOnlyList<int>>();
        Permute(given, 0, all);
        return all.OrderBy(p => string.Join(",", p), StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// Samples like <see cref="ConditionalSampler.Sample"/>, with each item's condition order chosen by a trial of every
    /// candidate order over the first steps (see <see cref="ConditionOrder"/>).
    /// </summary>
    /// <param name="sampler">The sampler.</param>
    /// <param name="conditions">The conditions, in the given order (the first candidate).</param>
    /// <param name="options">The run's options; the strategy must be a <see cref="ZMagicStrategy"/>.</param>
    /// <param name="order">Trial options (null: defaults).</param>
    /// <param name="progress">Reported after every step of every trial and run.</param>
    /// <param name="cancellationToken">Checked before every step.</param>
    /// <exception cref="ArgumentException">No conditions, a strategy other than Z-Magic (no other strategy depends on the
    /// order), or invalid trial options; and everything <see cref="ConditionalSampler.Sample"/> rejects.</exception>
    public static OrderedSamplingResult SampleWithBestOrder(this ConditionalSampler sampler, IReadOnlyList<IGuidanceCondition> conditions,
        SamplerOptions options, ConditionOrderOptions? order = null, IProgress<SamplingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(conditions);
        ArgumentNullException.ThrowIfNull(options);
        order ??= new ConditionOrderOptions();
        order.Validate();
        if (conditions.Count == 0) throw new ArgumentException("Choosing a condition order needs at least one condition.", nameof(conditions));
        if (options.Strategy is not ZMagicStrategy zmagic)
            throw new ArgumentException($"Choosing a condition order needs the Z-Magic strategy; '{(options.Strategy ?? GuidanceDefaults.Strategy()).Name}' does not depend on the order (pass a {nameof(ZMagicStrategy)}).", nameof(options));

        var candidates = Candidates(conditions.Count, order.AllPermutations ?? zmagic.Options.Chaining == ZMagicChaining.Chain);
        var search = System.Diagnostics.Stopwatch.StartNew();
        var energies = TrialEnergies(sampler, conditions, options, candidates, order.TrialSteps, progress, cancellationToken);
        var choice = new int[options.BatchSize];
        for (int i = 0; i < choice.Length; i++)
            for (int c = 1; c < candidates.Count; c++)
                if (Score(energies[c][i]) < Score(energies[choice[i]][i])) choice[i] = c;
        search.Stop();

        var sample = System.Diagnostics.Stopwatch.StartNew();
        var runs = new List<OrderedRun>();
        Tensor? images = null;
        try
        {
            for (int c = 0; c < candidates.Count; c++)
            {
                var positions = Enumerable.Range(0, choice.Length).Where(i => choice[i] == c).ToArray();
                if (positions.Length > 0)
                    runs.Add(SampleItems(sampler, Reorder(conditions, candidates[c]), candidates[c], options, positions, ref images, progress, cancellationToken));
            }
            return new OrderedSamplingResult(images!, candidates, energies, choice, runs, search.Elapsed, sample.Elapsed);
        }
        catch
        {
            images?.Dispose();
            throw;
        }
    }

    /// <summary>Per candidate, per item: the summed energy after the first <paramref name="trialSteps"/> timesteps in that order.</summary>
    private static double[][] TrialEnergies(ConditionalSampler sampler, IReadOnlyList<IGuidanceCondition> conditions, SamplerOptions options,
        IReadOnlyList<IReadOnlyList<int>> candidates, int trialSteps, IProgress<SamplingProgress>? progress, CancellationToken cancellationToken)
    {
        var schedule = sampler.Denoiser.Schedule ?? throw new InvalidOperationException($"{sampler.Denoiser.GetType().Name}.Schedule is null.");
        // The last trial timestep steps to t' = -1: the trial ends on the clean estimate after its guided steps.
        var trialOptions = options with { Timesteps = ConditionalSampler.BuildTimesteps(options, schedule).Select(p => p.T).Take(trialSteps).ToList() };
        var energies = new double[candidates.Count][];
        for (int c = 0; c < candidates.Count; c++)
        {
            using var trial = sampler.Sample(Reorder(conditions, candidates[c]), trialOptions, progress, cancellationToken);
            energies[c] = SummedEnergy(conditions, trial.Images);
        }
        return energies;
    }

    /// <summary>
    /// Samples the items at <paramref name="positions"/> of the request as one batch under their own indices
    /// (<see cref="SamplerOptions.Items"/>), so that each gets the noise it has in the whole request, and copies their
    /// images to those positions of <paramref name="images"/> (allocated on the first call).
    /// </summary>
    private static OrderedRun SampleItems(ConditionalSampler sampler, IGuidanceCondition[] ordered, IReadOnlyList<int> order, SamplerOptions options,
        int[] positions, ref Tensor? images, IProgress<SamplingProgress>? progress, CancellationToken cancellationToken)
    {
        using var index = torch.tensor(positions.Select(i => (long)i).ToArray());
        using var noiseIndex = options.InitialNoise is { } init ? index.to(init.device) : null;
        var runOptions = options with
        {
            BatchSize = positions.Length,
            Items = positions.Select(i => options.Items?[i] ?? options.FirstItem + i).ToArray(),
            InitialNoise = options.InitialNoise?.index_select(0, noiseIndex!),
        };
        try
        {
            using var result = sampler.Sample(ordered, runOptions, progress, cancellationToken);
            images ??= torch.zeros(new long[] { options.BatchSize }.Concat(result.Images.shape.Skip(1)).ToArray(), result.Images.dtype, result.Images.device);
            using var imageIndex = index.to(images.device);
            images.index_copy_(0, imageIndex, result.Images);
            return new OrderedRun(positions, order, result.Trace);
        }
        finally
        {
            runOptions.InitialNoise?.Dispose();
        }
    }

    /// <summary>A non-finite trial energy ranks last.</summary>
    private static double Score(double e) => double.IsFinite(e) ? e : double.PositiveInfinity;

    /// <summary>Per item, the sum of every condition's energy on <paramref name="x0"/>.</summary>
    private static double[] SummedEnergy(IReadOnlyList<IGuidanceCondition> conditions, Tensor x0)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var sum = torch.zeros(x0.shape[0], ScalarType.Float64, x0.device);
        foreach (var c in conditions) sum = sum + c.Energy(x0).to(ScalarType.Float64);
        return sum.cpu().data<double>().ToArray();
    }

    private static IGuidanceCondition[] Reorder(IReadOnlyList<IGuidanceCondition> conditions, IReadOnlyList<int> order) =>
        order.Select(i => conditions[i]).ToArray();

    private static void Permute(int[] a, int k, List<IReadOnlyList<int>> into)
    {
        if (k == a.Length) { into.Add((int[])a.Clone()); return; }
        for (int i = k; i < a.Length; i++)
        {
            (a[k], a[i]) = (a[i], a[k]);
            Permute(a, k + 1, into);
            (a[k], a[i]) = (a[i], a[k]);
        }
    }

    private static long Factorial(int n) => n <= 1 ? 1 : n * Factorial(n - 1);
}
