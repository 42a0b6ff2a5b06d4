using static TorchSharp.torch;

namespace ZMagic.Core.Guidance;

/// <summary>Per-item step sizes applied to batched tensors, and samples replicated along the batch dimension.</summary>
internal static class PerItem
{
    /// <summary>Whether every item has the same step size (then a plain scalar multiplication is used).</summary>
    public static bool IsUniform(double[] rho) => rho.All(v => v.Equals(rho[0]));

    /// <summary>
    /// <paramref name="t"/> [B, ...] times item i's step size on item i. Equal step sizes use a scalar multiplication;
    /// unequal ones a [B, 1, ...] tensor in the scalar path's compute type, which rounds each element identically.
    /// </summary>
    public static Tensor Times(Tensor t, double[] rho)
    {
        if (IsUniform(rho)) return t * rho[0];
        if (t.shape[0] != rho.Length)
            throw new ArgumentException($"{rho.Length} step sizes for a batch of {t.shape[0]}.", nameof(rho));
        var r = AsTensor(rho, t, (int)t.dim());
        return r.dtype == t.dtype ? t * r : (t.to(r.dtype) * r).to(t.dtype);
    }

    /// <summary><c>sum_i rho_i E_i</c> of per-item energies [B] (a scalar to differentiate: item i's gradient is rho_i grad E_i).</summary>
    public static Tensor WeightedEnergy(Tensor energy, double[] rho)
    {
        if (IsUniform(rho)) return energy.sum() * rho[0];
        var r = AsTensor(rho, energy, 1);
        return r.dtype == energy.dtype ? (energy * r).sum() : (energy.to(r.dtype) * r).sum();
    }

    /// <summary>
    /// <paramref name="x"/> [B, ...] repeated <paramref name="copies"/> times along the batch dimension, detached, as a
    /// new leaf that requires grad: [copies * B, ...], copy j holding items j*B .. j*B + B - 1.
    /// </summary>
    public static Tensor Replicate(Tensor x, int copies)
    {
        var reps = new long[x.dim()];
        Array.Fill(reps, 1L);
        reps[0] = copies;
        return x.detach().repeat(reps).requires_grad_(true);
    }

    /// <summary>Copy <paramref name="j"/> (batch <paramref name="batch"/>) of a replicated tensor.</summary>
    public static Tensor Chunk(Tensor replicated, int j, long batch) => replicated.narrow(0, j * batch, batch);

    /// <summary>
    /// <paramref name="rho"/> [B] as a tensor shaped to broadcast over <paramref name="like"/>'s item dims ([B, 1, ...]),
    /// in the dtype a scalar multiplication would compute in (float for half types).
    /// </summary>
    private static Tensor AsTensor(double[] rho, Tensor like, int dims)
    {
        var shape = new long[Math.Max(dims, 1)];
        Array.Fill(shape, 1L);
        shape[0] = rho.Length;
        var dtype = like.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? ScalarType.Float32 : like.dtype;
        return tensor(rho, ScalarType.Float64).to(dtype, like.device).reshape(shape);
    }
}
