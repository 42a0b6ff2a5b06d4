using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ZMagic.Core.Diffusion;
using ZMagic.Core.Guidance;
using ZMagic.Guidance.Generation;
using ZMagic.Models;

namespace ZMagic.Guidance.DependencyInjection;

/// <summary>Registers ZMagic in a <see cref="IServiceCollection"/>.</summary>
/// <remarks>
/// Nothing here reads configuration files: bind <see cref="ZMagicServiceOptions"/> from your configuration yourself
/// (e.g. <c>services.AddOptions&lt;ZMagicServiceOptions&gt;().Bind(config.GetSection("ZMagic"))</c>) if you want to.
/// </remarks>
public static class ZMagicServiceCollectionExtensions
{
    /// <summary>
    /// Registers the options (validated at start through <see cref="ZMagicServiceOptionsValidator"/>), the backbone as a
    /// lazily loaded singleton <see cref="IDenoiser"/>, the <see cref="GuidanceConditionCatalog"/> and a singleton
    /// <see cref="ZMagicGenerator"/>. Calling it again only adds another configuration delegate.
    /// </summary>
    /// <remarks>
    /// Validation runs when a generic host starts (<c>ValidateOnStart</c>); without a host, call
    /// <c>provider.GetRequiredService&lt;IStartupValidator&gt;().Validate()</c> or resolve <c>IOptions&lt;ZMagicServiceOptions&gt;.Value</c>.
    /// </remarks>
    public static IServiceCollection AddZMagic(this IServiceCollection services, Action<ZMagicServiceOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<ZMagicServiceOptions>().Configure(configure).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ZMagicServiceOptions>, ZMagicServiceOptionsValidator>());
        services.TryAddSingleton<IDenoiser>(CreateDenoiser);
        services.TryAddSingleton<GuidanceConditionCatalog>();
        services.TryAddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<ZMagicServiceOptions>>().Value;
            return new ZMagicGenerator(sp.GetRequiredService<IDenoiser>(), new ZMagicGeneratorDefaults
            {
                Steps = o.Steps,
                Strategy = o.Strategy,
                Device = TorchSharp.torch.device(o.Device),
            });
        });
        return services;
    }

    /// <summary>
    /// Registers a condition type from any assembly (e.g. a plug-in) under <paramref name="name"/>: its options are the named
    /// options <paramref name="name"/> of <typeparamref name="TOptions"/>. Its public constructor may take them as
    /// <typeparamref name="TOptions"/>, <see cref="IOptions{TOptions}"/> or <see cref="IOptionsMonitor{TOptions}"/> (all bound to
    /// <paramref name="name"/>), plus any registered service (encoders, ...); the constructor with the most parameters that
    /// can all be supplied is used.
    /// </summary>
    /// <remarks>
    /// The named options are validated on start (<c>ValidateOnStart</c>): if no constructor of <typeparamref name="TCondition"/>
    /// can be supplied (say it needs a service nobody registered), <c>IStartupValidator.Validate()</c> or the host's start
    /// throws an <see cref="OptionsValidationException"/> naming the condition type and the missing parameter types, instead
    /// of the first request failing.
    /// </remarks>
    /// <typeparam name="TCondition">The condition; a public constructor taking its options (and services).</typeparam>
    /// <typeparam name="TOptions">Its options class.</typeparam>
    public static IServiceCollection AddZMagicCondition<TCondition, TOptions>(
        this IServiceCollection services, string name, Action<TOptions>? configure = null)
        where TCondition : IGuidanceCondition
        where TOptions : class
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var activator = new ConditionActivator<TCondition, TOptions>(name);
        var builder = services.AddOptions<TOptions>(name);
        if (configure is not null) builder.Configure(configure);
        builder.ValidateOnStart();
        services.AddSingleton<IValidateOptions<TOptions>>(sp =>
            new ConditionConstructorValidator<TCondition, TOptions>(activator, sp.GetService<IServiceProviderIsService>()));
        services.AddSingleton<IGuidanceConditionFactory>(new DelegateGuidanceConditionFactory(name, activator.Create));
        return services;
    }

    /// <summary>Registers a condition built by <paramref name="create"/> under <paramref name="name"/>.</summary>
    public static IServiceCollection AddZMagicCondition(
        this IServiceCollection services, string name, Func<IServiceProvider, IGuidanceCondition> create)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddSingleton<IGuidanceConditionFactory>(new DelegateGuidanceConditionFactory(name, create));
        return services;
    }

    /// <summary>
    /// Registers an encoder (or any frozen network a condition needs) as a lazily created singleton: <paramref name="create"/>
    /// runs once, the first time <typeparamref name="TEncoder"/> is resolved, and the container disposes it.
    /// </summary>
    public static IServiceCollection AddZMagicEncoder<TEncoder>(this IServiceCollection services, Func<IServiceProvider, TEncoder> create)
        where TEncoder : class
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(create);
        services.TryAddSingleton(create);
        return services;
    }

    private static IDenoiser CreateDenoiser(IServiceProvider sp)
    {
        var o = sp.GetRequiredService<IOptions<ZMagicServiceOptions>>().Value;
        if (o.DenoiserFactory is { } factory)
            return factory(sp) ?? throw new InvalidOperationException("ZMagicServiceOptions.DenoiserFactory returned null.");
        return BackbonePresets.Load(o.Backbone!, o.WeightsPath!, TorchSharp.torch.device(o.Device));
    }
}
