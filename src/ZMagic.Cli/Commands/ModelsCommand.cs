namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic models</c>: lists presets; <c>models check</c> checks a weights file against one.</summary>
public static class ModelsCommand
{
    /// <summary>Help text.</summary>
    public const string Help = """
        Usage: zmagic models                          list the backbone presets
               zmagic models check --preset NAME FILE check that FILE's keys and shapes fit preset NAME

        `models check` reads only the file's header where it can (safetensors) and compares every key and shape with
        the preset's network. Exit code 0 when the file fits; 3 with the reasons (missing, unexpected or mis-shaped
        keys; unreadable file) when it does not; 2 for a bad command line (e.g. unknown preset).

        Examples:
          zmagic models
          zmagic models check --preset celeba-hq-ddpm ~/models/celeba_hq.ckpt
        """;

    /// <summary>Runs the command.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var p = ParsedArgs.Parse(args, new[] { "preset" }, Array.Empty<string>());
        if (p.Help) { stdout.WriteLine(Help); return ExitCodes.Ok; }
        if (p.Positionals.Count == 0)
        {
            if (p.Has("preset")) throw new UsageException("--preset is only for `zmagic models check --preset NAME FILE`.");
            stdout.WriteLine("Backbone presets:");
            foreach (var preset in Presets.All)
            {
                stdout.WriteLine($"  {preset.Name,-16} {preset.Description}");
                stdout.WriteLine($"  {"",-16} weights: {preset.Source}{(preset.Embedded is null ? "" : " (embedded; --weights optional)")}");
            }
            stdout.WriteLine();
            stdout.WriteLine("Conditions (zmagic generate --condition):");
            foreach (var k in ConditionRegistry.All) stdout.WriteLine($"  {k.Help}");
            return ExitCodes.Ok;
        }
        if (p.Positionals[0] != "check") throw new UsageException($"Unknown models subcommand '{p.Positionals[0]}'; use `zmagic models` or `zmagic models check --preset NAME FILE`.");
        if (p.Positionals.Count != 2) throw new UsageException("`zmagic models check` takes exactly one FILE.");
        var presetToCheck = Presets.Get(p.String("preset") ?? throw new UsageException("`zmagic models check` needs --preset NAME."));
        string file = p.Positionals[1];
        var problems = Presets.Check(presetToCheck, file);
        if (problems.Count == 0)
        {
            stdout.WriteLine($"OK: '{Terminal.Escape(file)}' fits preset '{presetToCheck.Name}' (every key and shape matches).");
            return ExitCodes.Ok;
        }
        int missing = problems.Count(x => x.StartsWith("missing", StringComparison.Ordinal));
        int unexpected = problems.Count(x => x.StartsWith("unexpected", StringComparison.Ordinal));
        stderr.WriteLine($"error: '{Terminal.Escape(file)}' does not fit preset '{presetToCheck.Name}': {missing} missing key(s), {unexpected} unexpected key(s), {problems.Count - missing - unexpected} shape mismatch(es):");
        // Unexpected keys first: they say what the file is (and a file's own names are what needs escaping).
        foreach (var pr in problems.OrderBy(x => x.StartsWith("unexpected", StringComparison.Ordinal) ? 0 : x.StartsWith("missing", StringComparison.Ordinal) ? 1 : 2).Take(20)) stderr.WriteLine($"  {Terminal.Escape(pr)}");
        if (problems.Count > 20) stderr.WriteLine($"  ... and {problems.Count - 20} more");
        return ExitCodes.Input;
    }
}
