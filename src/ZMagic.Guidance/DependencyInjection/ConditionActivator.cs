using System.Reflection;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ZMagic.Core.Guidance;

namespace ZMagic.Guidance.DependencyInjection;

/// <summary>
/// Constructs a plug-in condition registered with
/// <see cref="ZMagicServiceCollectionExtensions.AddZMagicCondition{TCondition, TOptions}"/>. It takes the public
/// constructor with the most parameters that can all be supplied: the named options <c>name</c> of
/// <typeparamref name="TOptions"/> as the options object itself, as <see cref="IOptions{TOptions}"/> or as
/// <see cref="IOptionsMonitor{TOptions}"/> (both bound to that name), any registered service, or a parameter's default
/// value. Start-up validation (<see cref="ConditionConstructorValidator{TCondition, TOptions}"/>) makes the same choice
/// without constructing anything, so a plug-in that cannot be built fails when the host starts, naming what is missing.
/// </summary>
internal sealed class ConditionActivator<TCondition, TOptions>(string name)
    where TCondition : IGuidanceCondition
    where TOptions : class
{
    /// <summary>The registration name (also the options name).</summary>
    public string Name { get; } = name;

    /// <summary>Creates the condition with the named options and the services of <paramref name="services"/>.</summary>
    public IGuidanceCondition Create(IServiceProvider services)
    {
        var monitor = services.GetRequiredService<IOptionsMonitor<TOptions>>();
        var options = monitor.Get(Name);
        var ctor = Choose(services.GetService<IServiceProviderIsService>(), out string problem)
            ?? throw new InvalidOperationException(Describe(problem));
        var args = ctor.GetParameters().Select(p => Argument(p, services, monitor, options)).ToArray();
        return (TCondition)ctor.Invoke(BindingFlags.DoNotWrapExceptions, binder: null, args, culture: null);
    }

    /// <summary>
    /// The constructor <see cref="Create"/> uses, or null with <paramref name="problem"/> saying why none fits.
    /// <paramref name="isService"/> null (a container that cannot tell) counts every service parameter as available.
    /// </summary>
    public ConstructorInfo? Choose(IServiceProviderIsService? isService, out string problem)
    {
        var ctors = typeof(TCondition).GetConstructors();
        if (ctors.Length == 0)
        {
            problem = "it has no public constructor";
            return null;
        }
        var marked = ctors.Where(c => c.IsDefined(typeof(ActivatorUtilitiesConstructorAttribute), inherit: false)).ToArray();
        var reasons = new List<string>();
        foreach (var c in (marked.Length > 0 ? marked : ctors).OrderByDescending(c => c.GetParameters().Length))
        {
            var missing = c.GetParameters().Where(p => !Available(p, isService)).ToArray();
            if (missing.Length == 0)
            {
                problem = "";
                return c;
            }
            reasons.Add($"constructor ({string.Join(", ", c.GetParameters().Select(p => TypeName(p.ParameterType)))}) needs " +
                string.Join(", ", missing.Select(p => $"{TypeName(p.ParameterType)} '{p.Name}'")) + ", which is not registered");
        }
        problem = string.Join("; ", reasons) + ". Register the missing service(s) before building the service provider";
        return null;
    }

    /// <summary>The error message for <paramref name="problem"/>, naming the registration and the plug-in type.</summary>
    public string Describe(string problem) =>
        $"ZMagic: the plug-in condition '{Name}' ({typeof(TCondition).FullName}) cannot be constructed: {problem}.";

    private static bool IsOptionsParameter(Type t) =>
        t == typeof(IOptions<TOptions>) || t == typeof(IOptionsMonitor<TOptions>) || t.IsAssignableFrom(typeof(TOptions)) && t != typeof(object);

    private static bool Available(ParameterInfo p, IServiceProviderIsService? isService) =>
        IsOptionsParameter(p.ParameterType) || p.HasDefaultValue || isService is null || isService.IsService(p.ParameterType);

    private object? Argument(ParameterInfo p, IServiceProvider services, IOptionsMonitor<TOptions> monitor, TOptions options)
    {
        var t = p.ParameterType;
        if (t == typeof(IOptions<TOptions>)) return Options.Create(options);
        if (t == typeof(IOptionsMonitor<TOptions>)) return new NamedOptionsMonitor<TOptions>(monitor, Name);
        if (IsOptionsParameter(t)) return options;
        var service = services.GetService(t);
        if (service is not null) return service;
        if (p.HasDefaultValue) return p.DefaultValue;
        throw new InvalidOperationException(Describe($"{TypeName(t)} '{p.Name}' is not registered"));
    }

    private static string TypeName(Type t) => t.IsGenericType
        ? $"{t.FullName![..t.FullName!.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", t.GetGenericArguments().Select(TypeName))}>"
        : t.FullName ?? t.Name;
}

/// <summary>
/// <see cref="ConditionActivator{TCondition, TOptions}"/>'s start-up check: fails the named options of a plug-in condition
/// when no constructor of the condition can be supplied. Registered with <c>ValidateOnStart</c>, so
/// <c>IStartupValidator.Validate()</c> (or the generic host's start) reports it before the first request.
/// </summary>
internal sealed class ConditionConstructorValidator<TCondition, TOptions>(
    ConditionActivator<TCondition, TOptions> activator, IServiceProviderIsService? isService) : IValidateOptions<TOptions>
    where TCondition : IGuidanceCondition
    where TOptions : class
{
    public ValidateOptionsResult Validate(string? name, TOptions options) =>
        !string.Equals(name, activator.Name, StringComparison.Ordinal) ? ValidateOptionsResult.Skip
        : activator.Choose(isService, out string problem) is null ? ValidateOptionsResult.Fail(activator.Describe(problem))
        : ValidateOptionsResult.Success;
}

/// <summary>An <see cref="IOptionsMonitor{TOptions}"/> whose <see cref="CurrentValue"/> and change events are those of one named instance.</summary>
internal sealed class NamedOptionsMonitor<TOptions>(IOptionsMonitor<TOptions> inner, string optionsName) : IOptionsMonitor<TOptions>
{
    public TOptions CurrentValue => inner.Get(optionsName);

    public TOptions Get(string? name) => inner.Get(name);

    public IDisposable? OnChange(Action<TOptions, string?> listener) =>
        inner.OnChange((o, n) => { if (string.Equals(n ?? Options.DefaultName, optionsName, StringComparison.Ordinal)) listener(o, n); });
}
