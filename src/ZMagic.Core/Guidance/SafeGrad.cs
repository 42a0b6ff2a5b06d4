using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>
/// The one place that calls <c>torch.autograd.grad</c>. TorchSharp's native grad entry point has no exception
/// guard: misuse (an output without grad_fn, a non-scalar output without grad_outputs, an unused input without
/// allow_unused, mismatched grad_outputs) aborts the whole process. Everything is validated here first, and
/// <c>retain_graph</c> is always passed explicitly (TorchSharp does not default it to <c>create_graph</c>).
/// </summary>
internal static class SafeGrad
{
    /// <summary>Gradient of the scalar <paramref name="output"/> with respect to <paramref name="input"/>.</summary>
    /// <param name="output">A scalar (one element) that depends on <paramref name="input"/>.</param>
    /// <param name="input">A tensor that requires grad.</param>
    /// <param name="retainGraph">Keep the graph for later gradients through the same nodes.</param>
    /// <param name="createGraph">Build a graph of the gradient itself (double backward).</param>
    /// <param name="what">Names the quantity in error messages.</param>
    public static Tensor Grad(Tensor output, Tensor input, bool retainGraph, bool createGraph = false, string what = "gradient")
        => Grad(new[] { output }, input, null, retainGraph, createGraph, what);

    /// <summary>
    /// Vector-Jacobian product <c>J^T v</c> of <paramref name="output"/> with respect to <paramref name="input"/>,
    /// <c>v</c> = <paramref name="gradOutput"/> (same shape as the output).
    /// </summary>
    public static Tensor Vjp(Tensor output, Tensor input, Tensor gradOutput, bool retainGraph, bool createGraph = false, string what = "vector-Jacobian product")
        => Grad(new[] { output }, input, new[] { gradOutput }, retainGraph, createGraph, what);

    /// <summary>The general form; returns a zero tensor when the input turned out unused.</summary>
    public static Tensor Grad(IReadOnlyList<Tensor> outputs, Tensor input, IReadOnlyList<Tensor>? gradOutputs, bool retainGraph, bool createGraph, string what)
    {
        ArgumentNullException.ThrowIfNull(outputs);
        ArgumentNullException.ThrowIfNull(input);
        if (outputs.Count == 0) throw new ArgumentException($"{what}: no outputs to differentiate.", nameof(outputs));
        if (!input.requires_grad)
            throw new InvalidOperationException($"{what}: the input does not require grad; nothing can be differentiated with respect to it.");
        if (!torch.is_floating_point(input))
            throw new InvalidOperationException($"{what}: the input has dtype {input.dtype}; gradients need a floating-point dtype.");
        if (gradOutputs is not null && gradOutputs.Count != outputs.Count)
            throw new ArgumentException($"{what}: {gradOutputs.Count} grad_outputs for {outputs.Count} outputs.", nameof(gradOutputs));
        for (int i = 0; i < outputs.Count; i++)
        {
            var o = outputs[i] ?? throw new ArgumentException($"{what}: output {i} is null.", nameof(outputs));
            if (!o.requires_grad)
                throw new InvalidOperationException(
                    $"{what}: output {i} (shape [{string.Join(", ", o.shape)}]) does not depend on a tensor that requires grad " +
                    "(no grad_fn). Was it computed under no_grad, detached, or converted to a constant?");
            if (gradOutputs is null)
            {
                if (o.numel() != 1)
                    throw new InvalidOperationException($"{what}: output {i} has shape [{string.Join(", ", o.shape)}]; without grad_outputs it must be a scalar.");
            }
            else
            {
                var g = gradOutputs[i] ?? throw new ArgumentException($"{what}: grad_output {i} is null.", nameof(gradOutputs));
                if (!g.shape.SequenceEqual(o.shape))
                    throw new ArgumentException($"{what}: grad_output {i} has shape [{string.Join(", ", g.shape)}]; expected the output's shape [{string.Join(", ", o.shape)}].", nameof(gradOutputs));
                if (g.dtype != o.dtype)
                    throw new ArgumentException($"{what}: grad_output {i} has dtype {g.dtype}; expected the output's dtype {o.dtype}.", nameof(gradOutputs));
                if (g.device_type != o.device_type || g.device_index != o.device_index)
                    throw new ArgumentException($"{what}: grad_output {i} is on {g.device}; expected the output's device {o.device}.", nameof(gradOutputs));
            }
        }

        // allow_unused is always on natively, so an unused input cannot abort the process; the empty result is
        // turned into zeros (a condition that ignores its input has a zero gradient).
        using var _ = createGraph ? torch.enable_grad() : null;
        var result = torch.autograd.grad(outputs.ToList(), new List<Tensor> { input },
            gradOutputs?.ToList(), retain_graph: retainGraph || createGraph, create_graph: createGraph, allow_unused: true);
        var grad = result[0];
        if (grad is null || grad.IsInvalid) return torch.zeros_like(input);
        return grad;
    }
}
