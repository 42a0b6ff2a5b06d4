using System.CommandLine;
using ZMagic.Cli.CommandLine;

namespace ZMagic.Cli.Commands;

/// <summary><c>zmagic models</c>: lists presets; <c>models check</c> checks a weights file against one.</summary>
public static class ModelsCommand
{
    private const string Summary = "List backbone presets; `models check --preset NAME FILE` checks a checkpoint against one";

    private const string CheckDetails = """
        Reads only the file's header where it can (safetensors) and compares every key and shape with the preset's
        network. Exit code 0 when the file fits; 3 with the reasons (missing, unexpected or mis-shaped keys; unreadable
        file) when it does not; 2 for a bad command line (e.g. unknown preset).
        """;

    private const string Examples = """
        Examples:
          zmagic models
          zmagic models check --preset celebahq-ddpm ~/models/celeba_hq.ckpt
        """;

    /// <summary>The arguments of <c>zmagic models check</c>: declared here once, read in <see cref="Check"/>.</summary>
    private sealed class CheckOptions(Command c)
    {
        public readonly Option<string> Preset = c.Declare(CommonOptions.Preset("the preset FILE should fit"));
        public readonly Argument<string> File = c.Declare(new Argument<string>("FILE") { Description = "the checkpoint (.safetensors, .pt, .pth, .ckpt)" });
    }

    internal static Command Create(CliContext context)
    {
        var check = new Command("check", "Check that FILE's keys and shapes fit preset NAME").WithHelp(CheckDetails, Examples);
        var checkOptions = new CheckOptions(check);
        check.SetAction(r => Check(r, checkOptions, context));
        var command = new Command("models", Summary) { check }.WithHelp(null, Examples);
        command.SetAction(_ => List(context.Out));
        return command;
    }

    private static int List(TextWriter stdout)
    {
        stdout.WriteLine("Backbone presets:");
        foreach (var preset in Presets.All)
        {
            stdout.WriteLine($"  {preset.Name,-16} {preset.Description}");
            stdout.WriteLine($"  {"",-16} weights: {preset.Source}{(preset.Embedded is null ? "" : " (embedded; --weights optional)")}");
        }
        stdout.WriteLine($"  {Presets.StableDiffusion,-16} Stable Diffusion 1.x (text-to-image latent diffusion; text, style and content conditions)");
        stdout.WriteLine($"  {"",-16} weights: a diffusers folder (--model DIR; zmagic generate --preset {Presets.StableDiffusion} --help)");
        stdout.WriteLine($"  aliases: {string.Join(", ", Presets.Aliases.Select(a => $"{a.Key} = {a.Value}"))}");
        stdout.WriteLine();
        stdout.WriteLine("Conditions (zmagic generate --condition):");
        foreach (var k in ConditionRegistry.All) stdout.WriteLine($"  {k.Help}");
        return ExitCodes.Ok;
    }

    private static int Check(ParseResult p, CheckOptions o, CliContext context)
    {
        var (stdout, stderr) = (context.Out, context.Err);
        var presetToCheck = Presets.Get(p.GetValue(o.Preset)!);
        string file = p.GetValue(o.File)!;
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
