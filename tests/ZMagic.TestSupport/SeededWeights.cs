using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.TestSupport;

/// <summary>
/// Random network weights that depend on a seed only. <c>torch.manual_seed</c> + a module constructor draws from the
/// process-wide generator, which tests running in parallel consume at the same time, so "seeded" weights differed
/// between a test run alone and inside the suite. This re-draws every randomly initialised parameter from a private
/// generator with PyTorch's default bounds (U(+-1/sqrt(fan_in)) for weights of 2+ dimensions and their biases);
/// 1-d parameters without such a weight (norm scales and shifts) keep their constructor values.
/// </summary>
public static class SeededWeights
{
    public static T Init<T>(T module, long seed) where T : nn.Module
    {
        var gen = new Generator((ulong)seed, CPU);
        var parameters = module.named_parameters().ToList();
        var fanIn = parameters.Where(p => p.parameter.dim() >= 2)
            .ToDictionary(p => Prefix(p.name), p => p.parameter.shape.Skip(1).Aggregate(1L, (a, d) => a * d));
        using var noGrad = no_grad();
        foreach (var (name, p) in parameters)
        {
            long fan = p.dim() >= 2 ? fanIn[Prefix(name)] : fanIn.GetValueOrDefault(Prefix(name), 0);
            if (fan == 0) continue;
            double bound = 1.0 / Math.Sqrt(fan);
            using var values = rand(p.shape, p.dtype, CPU, generator: gen) * (2 * bound) - bound;
            p.copy_(values);
        }
        return module;
    }

    private static string Prefix(string name) => name.Contains('.') ? name[..name.LastIndexOf('.')] : "";
}
