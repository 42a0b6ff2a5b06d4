using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Core.Tests.Guidance;

public class CombinerTests
{
    private static List<Tensor> Tasks(int k, long seed, params long[] shape)
    {
        using var g = new Generator((ulong)seed);
        return Enumerable.Range(0, k).Select(_ => torch.randn(shape, ScalarType.Float64, generator: g)).ToList();
    }

    private static Tensor Sum(IReadOnlyList<Tensor> t) => t.Aggregate((a, b) => a + b);

    [Theory]
    [InlineData(2, false)]
    [InlineData(3, false)]
    [InlineData(5, true)]
    public void CAGradWithCZeroIsThePlainSum(int k, bool perChannel)
    {
        var tasks = Tasks(k, 1, 2, 3, 4, 4);
        var d = new CAGradCombiner(0.0, perChannel).Combine(tasks);
        TensorAssert.Close(d, Sum(tasks), 1e-12, 1e-12, "c = 0");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void IdenticalTasksGiveThePlainSum(int k)
    {
        var one = Tasks(1, 2, 1, 3, 5, 5)[0];
        var tasks = Enumerable.Repeat(one, k).ToList();
        foreach (var combiner in new IGradientCombiner[]
                 {
                     SumCombiner.Instance, new CAGradCombiner(0.5), new CAGradCombiner(0.5, perChannel: true),
                     new PCGradCombiner(), new MGDACombiner(),
                 })
            TensorAssert.Close(combiner.Combine(tasks), one * k, 1e-10, 1e-10, combiner.Name);
    }

    [Theory]
    [InlineData(2, 3L)]
    [InlineData(2, 4L)]
    [InlineData(3, 5L)]
    [InlineData(4, 6L)]
    [InlineData(5, 7L)]
    public void CAGradWorstTaskImprovementIsAtLeastTheMeanDirections(int k, long seed)
    {
        var tasks = Tasks(k, seed, 40);
        // Make the tasks conflict: flip one against the others.
        tasks[0] = tasks[0] - tasks[1] * 1.5;
        var g0 = Sum(tasks) / k;
        foreach (double c in new[] { 0.2, 0.5, 0.8 })
        {
            var d = new CAGradCombiner(new CAGradOptions { C = c, Rescale = CAGradRescale.None }).Combine(tasks);
            double worstD = tasks.Min(t => (t * d).sum().item<double>());
            double worstMean = tasks.Min(t => (t * g0).sum().item<double>());
            Assert.True(worstD >= worstMean - 1e-9, $"c={c}: min_i <g_i, d> = {worstD} < mean direction's {worstMean}");
            // d stays in the ball ||d - g0|| <= c ||g0||.
            double dist = (d - g0).norm().item<double>(), radius = c * g0.norm().item<double>();
            Assert.True(dist <= radius * (1 + 1e-9) + 1e-12, $"c={c}: ||d - g0|| = {dist} > c||g0|| = {radius}");
        }
    }

    [Fact]
    public void TwoTaskExactSolverAgreesWithTheSimplexSolverAndBrent()
    {
        var tasks = Tasks(2, 9, 30);
        tasks[1] = tasks[1] - tasks[0] * 0.8;
        var gram = new[,] { { Dot(tasks[0], tasks[0]), Dot(tasks[0], tasks[1]) }, { Dot(tasks[1], tasks[0]), Dot(tasks[1], tasks[1]) } };
        var exact = new CAGradCombiner(new CAGradOptions { Solver = CAGradSolver.Exact }).SolveGram(gram);
        var brent = new CAGradCombiner(new CAGradOptions { Solver = CAGradSolver.BoundedBrent }).SolveGram(gram);
        var (w, _, _) = SimplexSolver.Minimize(gram, new[] { (gram[0, 0] + gram[0, 1]) / 2, (gram[1, 0] + gram[1, 1]) / 2 },
            0.5 * Math.Sqrt(gram[0, 0] + gram[1, 1] + 2 * gram[0, 1]) / 2, 0);
        Assert.InRange(Math.Abs(exact.Weights[0] - w[0]), 0, 1e-7);
        Assert.InRange(Math.Abs(exact.Weights[0] - brent.Weights[0]), 0, 1e-4);
        Assert.True(CAGradCombiner.ExactObjective(gram, exact.Weights, 0.5) <= CAGradCombiner.ExactObjective(gram, brent.Weights, 0.5) + 1e-12);
    }

    private static double Dot(Tensor a, Tensor b) => (a * b).sum().item<double>();

    [Fact]
    public void BoundedBrentFindsTheMinimumOfAParabolaAndRespectsBounds()
    {
        var r = ScalarMinimizers.BoundedBrent(x => (x - 0.3) * (x - 0.3), 0, 1);
        Assert.InRange(r.X, 0.3 - 1e-5, 0.3 + 1e-5);
        var edge = ScalarMinimizers.BoundedBrent(x => -x, 0, 1);
        Assert.InRange(edge.X, 1 - 2e-5, 1.0);
        Assert.True(edge.Evaluations < 500);
    }

    [Fact]
    public void PerChannelSolvesEachChannelOnItsOwn()
    {
        var tasks = Tasks(3, 11, 2, 3, 4, 4);
        var combiner = new CAGradCombiner(0.5, perChannel: true);
        var whole = combiner.Combine(tasks);
        for (int c = 0; c < 3; c++)
        {
            var slice = tasks.Select(t => t.narrow(1, c, 1)).ToList();
            var expected = new CAGradCombiner(0.5).Combine(slice);
            TensorAssert.Close(whole.narrow(1, c, 1), expected, 1e-10, 1e-9, $"channel {c}");
        }
        Assert.Equal(3, combiner.LastSolutions.Count);
    }

    [Fact]
    public void PCGradRemovesTheConflictingComponent()
    {
        var g1 = torch.tensor(new[] { 1.0, 0.0 });
        var g2 = torch.tensor(new[] { -1.0, 1.0 });
        var d = new PCGradCombiner().Combine(new[] { g1, g2 });
        // g1' = g1 - (<g1,g2>/|g2|^2) g2 = (0.5, 0.5); g2' = g2 - (<g2,g1>/|g1|^2) g1 = (0, 1).
        TensorAssert.Close(d, torch.tensor(new[] { 0.5, 1.5 }), 1e-12, 0, "pcgrad");
    }

    [Fact]
    public void MGDAFindsTheMinimumNormPoint()
    {
        var g1 = torch.tensor(new[] { 1.0, 0.0, 0.0 });
        var g2 = torch.tensor(new[] { 0.0, 1.0, 0.0 });
        var g3 = torch.tensor(new[] { 0.0, 0.0, 2.0 });
        var d = new MGDACombiner().Combine(new[] { g1, g2, g3 });
        // min-norm point of the hull: w proportional to 1/|g_i|^2 = (4, 4, 1)/9 -> (4/9, 4/9, 2/9); times K = 3.
        TensorAssert.Close(d, torch.tensor(new[] { 4.0 / 3, 4.0 / 3, 2.0 / 3 }), 1e-4, 0, "mgda");
        var opposite = new MGDACombiner().Combine(new[] { g1, -g1 });
        TensorAssert.Close(opposite, torch.zeros(3), 1e-12, 0, "opposite tasks cancel");
    }

    [Fact]
    public void CombinersRefuseMismatchedTasks()
    {
        var a = torch.zeros(2, 3, 4, 4, ScalarType.Float64);
        var b = torch.zeros(2, 3, 4, 5, ScalarType.Float64);
        foreach (var combiner in new IGradientCombiner[] { new CAGradCombiner(0.5), new PCGradCombiner(), new MGDACombiner() })
        {
            var ex = Assert.Throws<ArgumentException>(() => combiner.Combine(new[] { a, b }));
            Assert.Contains("[2, 3, 4, 5]", ex.Message);
            Assert.Throws<ArgumentException>(() => combiner.Combine(Array.Empty<Tensor>()));
            Assert.Throws<ArgumentException>(() => combiner.Combine(new[] { a, a.to(ScalarType.Float32) }));
        }
        Assert.Throws<ArgumentException>(() => new CAGradCombiner(0.5, perChannel: true).Combine(new[] { torch.zeros(5), torch.zeros(5) }));
    }
}
