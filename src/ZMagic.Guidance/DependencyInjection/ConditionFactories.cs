using ZMagic.Core.Guidance;

namespace ZMagic.Guidance.DependencyInjection;

/// <summary>
/// Creates one kind of <see cref="IGuidanceCondition"/> by name. Register implementations (from any assembly, e.g. a
/// plug-in) as <c>IGuidanceConditionFactory</c> singletons, or use
/// <see cref="ZMagicServiceCollectionExtensions.AddZMagicCondition{TCondition, TOptions}"/>; resolve them through
/// <see cref="GuidanceConditionCatalog"/>.
/// </summary>
public interface IGuidanceConditionFactory
{
    /// <summary>The name the condition kind is registered under (unique, case-insensitive).</summary>
    string Name { get; }

    /// <summary>Creates a condition with its registered options.</summary>
    /// <param name="services">The provider to take the condition's dependencies (encoders etc.) from.</param>
    IGuidanceCondition Create(IServiceProvider services);
}

/// <summary>Every registered condition kind, by name: how an app (or a request) picks conditions.</summary>
public sealed class GuidanceConditionCatalog
{
    private readonly IServiceProvider _services;
    private readonly Dictionary<string, IGuidanceConditionFactory> _factories;

    /// <summary>Collects the registered factories.</summary>
    /// <exception cref="InvalidOperationException">Two factories share a name.</exception>
    public GuidanceConditionCatalog(IServiceProvider services, IEnumerable<IGuidanceConditionFactory> factories)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(factories);
        _services = services;
        _factories = new Dictionary<string, IGuidanceConditionFactory>(StringComparer.OrdinalIgnoreCase);
        foreach (var f in factories)
        {
            if (string.IsNullOrWhiteSpace(f.Name))
                throw new InvalidOperationException($"Condition factory {f.GetType().FullName} has no name.");
            if (!_factories.TryAdd(f.Name, f))
                throw new InvalidOperationException(
                    $"Two condition factories are registered as '{f.Name}': {_factories[f.Name].GetType().FullName} and {f.GetType().FullName}.");
        }
    }

    /// <summary>The registered names, sorted.</summary>
    public IReadOnlyList<string> Names => _factories.Keys.Order(StringComparer.OrdinalIgnoreCase).ToArray();

    /// <summary>Creates the condition registered as <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No condition has that name; the message lists the known ones.</exception>
    public IGuidanceCondition Create(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!_factories.TryGetValue(name, out var f))
            throw new KeyNotFoundException($"No guidance condition is registered as '{name}'; known: {string.Join(", ", Names)}.");
        return f.Create(_services) ?? throw new InvalidOperationException($"Condition factory '{name}' returned null.");
    }

    /// <summary>Creates the conditions named in <paramref name="names"/>, in order.</summary>
    public IReadOnlyList<IGuidanceCondition> Create(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        return names.Select(Create).ToArray();
    }
}

/// <summary>A factory from a delegate.</summary>
/// <param name="name">The registration name.</param>
/// <param name="create">Creates the condition.</param>
public sealed class DelegateGuidanceConditionFactory(string name, Func<IServiceProvider, IGuidanceCondition> create) : IGuidanceConditionFactory
{
    private readonly Func<IServiceProvider, IGuidanceCondition> _create = create ?? throw new ArgumentNullException(nameof(create));

    /// <inheritdoc />
    public string Name { get; } = string.IsNullOrWhiteSpace(name) ? throw new ArgumentException("A condition name is required.", nameof(name)) : name;

    /// <inheritdoc />
    public IGuidanceCondition Create(IServiceProvider services) => _create(services);
}
