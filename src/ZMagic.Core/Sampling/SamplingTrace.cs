using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace ZMagic.Core.Sampling;

/// <summary>Everything measured during one sampling run, one <see cref="StepTrace"/> per denoising step (and repeat).</summary>
public sealed class SamplingTrace
{
    /// <summary>Steps in the order they ran.</summary>
    public List<StepTrace> Steps { get; } = new();

    /// <summary>Strategy name (e.g. "unguided", "vanilla", "zmagic").</summary>
    public string Strategy { get; set; } = "unguided";

    /// <summary>Combiner name (e.g. "sum", "cagrad(0.5)").</summary>
    public string Combiner { get; set; } = "sum";

    /// <summary>Total wall time of the run.</summary>
    public TimeSpan Elapsed { get; set; }

    /// <summary>Serialises the trace as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>
    /// One CSV row per step and condition: step, t, next, repeat, condition, active, energy (batch sum), grad_norm (whole
    /// batch), step_size (batch mean),
    /// then the step's timings (ms) and pass counts (forwards, backwards, VJPs, encoder calls, forward and backward items).
    /// </summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.AppendLine("step,t,next,repeat,condition,active,energy,grad_norm,step_size,forward_ms,backward_ms,encoder_ms,vjp_ms,combiner_ms,total_ms,forwards,backwards,vjps,encoder_calls,forward_items,backward_items");
        foreach (var s in Steps)
        {
            var rows = s.Conditions.Count == 0 ? new List<ConditionTrace?> { null } : s.Conditions.Cast<ConditionTrace?>().ToList();
            foreach (var c in rows)
            {
                sb.Append(CultureInfo.InvariantCulture, $"{s.Index},{s.T},{s.Next},{s.Repeat},");
                sb.Append(c is null ? ",,,," : string.Create(CultureInfo.InvariantCulture, $"{Csv(c.Name)},{c.Active},{c.Energy:R},{c.GradientNorm:R},{c.StepSize:R},"));
                var tm = s.Timings;
                sb.Append(CultureInfo.InvariantCulture, $"{tm.ForwardMs:F3},{tm.BackwardMs:F3},{tm.EncoderMs:F3},{tm.VjpMs:F3},{tm.CombinerMs:F3},{tm.TotalMs:F3},");
                sb.AppendLine(CultureInfo.InvariantCulture, $"{s.Passes.DenoiserForwards},{s.Passes.DenoiserBackwards},{s.Passes.Vjps},{s.Passes.EncoderCalls},{s.Passes.DenoiserForwardItems},{s.Passes.BackwardItems}");
            }
        }
        return sb.ToString();
    }

    private static string Csv(string s) => s.Contains(',') || s.Contains('"') ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}

/// <summary>What happened in one denoising step.</summary>
public sealed class StepTrace
{
    /// <summary>Position in the run (0-based, counting repeats).</summary>
    public int Index { get; init; }

    /// <summary>Current timestep.</summary>
    public int T { get; init; }

    /// <summary>Target timestep.</summary>
    public int Next { get; init; }

    /// <summary>Time-travel repeat index (0 for the first pass).</summary>
    public int Repeat { get; init; }

    /// <summary>Per-condition measurements, in condition order.</summary>
    public List<ConditionTrace> Conditions { get; } = new();

    /// <summary>
    /// Pairwise cosine similarity between the conditions' task gradients (the paper's Fig. 1), [K][K], or null when
    /// fewer than two conditions were active. Taken over the whole batch (the gradients flattened across items), a
    /// summary: at batch 1 it is the sample's own; combiners such as CAGrad use one Gram matrix per item.
    /// </summary>
    public double[][]? GradientCosines { get; set; }

    /// <summary>Time spent per phase.</summary>
    public StepTimings Timings { get; } = new();

    /// <summary>Network passes spent.</summary>
    public PassCounts Passes { get; } = new();
}

/// <summary>One condition's numbers at one step.</summary>
public sealed class ConditionTrace
{
    /// <summary>The condition's name.</summary>
    public string Name { get; init; } = "";

    /// <summary>Whether the condition's window was open at this step.</summary>
    public bool Active { get; set; }

    /// <summary>Energy summed over the batch (not a mean), at the point where the condition was evaluated.</summary>
    public double Energy { get; set; } = double.NaN;

    /// <summary>
    /// L2 norm of the condition's task gradient with respect to x_t (before the step size), over the whole batch:
    /// <c>sqrt(sum_i ||g_i||^2)</c>, a summary only (guidance itself is computed per item).
    /// </summary>
    public double GradientNorm { get; set; } = double.NaN;

    /// <summary>The step size rho used: the mean of <see cref="StepSizes"/> over the batch items (the item's own value at batch 1).</summary>
    public double StepSize { get; set; } = double.NaN;

    /// <summary>The step size of every batch item (step sizes are computed per item), or null when none was computed.</summary>
    public double[]? StepSizes { get; set; }

    /// <summary>True when the non-finite policy skipped this condition at this step.</summary>
    public bool Skipped { get; set; }
}

/// <summary>Milliseconds spent per phase of one step.</summary>
public sealed class StepTimings
{
    /// <summary>Denoiser forward passes.</summary>
    public double ForwardMs { get; set; }

    /// <summary>Backward passes for condition gradients.</summary>
    public double BackwardMs { get; set; }

    /// <summary>Condition energies (encoders).</summary>
    public double EncoderMs { get; set; }

    /// <summary>Vector-Jacobian products (Z-Magic's pull-back).</summary>
    public double VjpMs { get; set; }

    /// <summary>The gradient combiner.</summary>
    public double CombinerMs { get; set; }

    /// <summary>The whole step.</summary>
    public double TotalMs { get; set; }
}

/// <summary>Network passes of one step.</summary>
public sealed class PassCounts
{
    /// <summary>Denoiser forward evaluations.</summary>
    public int DenoiserForwards { get; set; }

    /// <summary>Backward passes (autograd.grad calls) for guidance gradients, excluding VJPs.</summary>
    public int DenoiserBackwards { get; set; }

    /// <summary>Vector-Jacobian products.</summary>
    public int Vjps { get; set; }

    /// <summary>Condition energy evaluations.</summary>
    public int EncoderCalls { get; set; }

    /// <summary>
    /// Sample items that went through the denoiser's forward passes (the sum of their batch sizes). Equals
    /// <see cref="DenoiserForwards"/> times the batch size unless a strategy batches several evaluations into one call
    /// (<c>BatchConditionGradients</c>: one forward of the sample replicated K times counts 1 forward, K x B items).
    /// On a CPU the cost of a forward grows about linearly with its items.
    /// </summary>
    public int DenoiserForwardItems { get; set; }

    /// <summary>
    /// Sample items of the graphs that the backward passes and vector-Jacobian products went through (the sum of the
    /// batch sizes of their inputs), in the same sense as <see cref="DenoiserForwardItems"/>.
    /// </summary>
    public int BackwardItems { get; set; }
}
