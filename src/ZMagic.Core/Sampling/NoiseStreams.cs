using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Core.Sampling;

/// <summary>
/// Independent, seeded standard-normal streams, one per batch item. Item i's draws depend only on the seed and i,
/// never on the batch size or on how many conditions a strategy evaluates, so a sample is reproducible alone or in a
/// batch.
/// </summary>
public sealed class NoiseStreams : IDisposable
{
    private readonly Generator[] _generators;

    /// <summary>Creates streams for items <paramref name="firstItem"/> .. firstItem + count - 1 of run <paramref name="seed"/>.</summary>
    public NoiseStreams(long seed, int count, int firstItem = 0)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "At least one stream is needed.");
        _generators = new Generator[count];
        for (int i = 0; i < count; i++) _generators[i] = new Generator(ItemSeed(seed, firstItem + i), torch.CPU);
    }

    /// <summary>Creates streams for the given item indices of run <paramref name="seed"/>, in that order.</summary>
    public NoiseStreams(long seed, IReadOnlyList<int> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (items.Count < 1) throw new ArgumentOutOfRangeException(nameof(items), items.Count, "At least one stream is needed.");
        _generators = items.Select(i => new Generator(ItemSeed(seed, i), torch.CPU)).ToArray();
    }

    /// <summary>The seed of item <paramref name="item"/> (SplitMix64 of the run seed and the index).</summary>
    public static ulong ItemSeed(long seed, int item)
    {
        ulong z = unchecked((ulong)seed + 0x9E3779B97F4A7C15UL * (ulong)(item + 1));
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (z ^ (z >> 31)) & 0x7FFF_FFFF_FFFF_FFFFUL;
    }

    /// <summary>Draws one [B, ...itemShape] tensor, item by item on the CPU in float32, then converts it.</summary>
    public Tensor Next(long[] itemShape, ScalarType dtype, Device device)
    {
        using var scope = torch.NewDisposeScope();
        var parts = new Tensor[_generators.Length];
        for (int i = 0; i < _generators.Length; i++)
            parts[i] = torch.randn(itemShape, ScalarType.Float32, torch.CPU, generator: _generators[i]);
        return torch.stack(parts).to(dtype, device).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var g in _generators) g.Dispose();
    }
}
