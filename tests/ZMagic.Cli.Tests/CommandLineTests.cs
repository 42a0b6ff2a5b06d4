using System.CommandLine;
using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using ZMagic.Cli;
using ZMagic.Cli.Demo;

namespace ZMagic.Cli.Tests;

/// <summary>The command line is System.CommandLine's: help, version, errors, suggestions; docs/cli.md agrees with it.</summary>
public sealed partial class CommandLineTests
{
    /// <summary>Every command as the arguments that reach it, with its definition (generate twice: digits-style and sd15).</summary>
    public static IEnumerable<(string[] Path, Command Command)> AllCommands()
    {
        var context = new CliContext(TextWriter.Null, TextWriter.Null, CancellationToken.None, Array.Empty<string>());
        foreach (var stableDiffusion in new[] { false, true })
        {
            var root = App.CreateRootCommand(context, stableDiffusion);
            foreach (var (path, command) in Walk(root, Array.Empty<string>()))
            {
                bool isGenerate = path is ["generate"];
                if (stableDiffusion && !isGenerate) continue;
                yield return (stableDiffusion && isGenerate ? new[] { "generate", "--preset", "sd15" } : path, command);
            }
        }
        // The recipe variant of generate (--recipe NAME, or a face/text condition option).
        foreach (var (path, command) in Walk(App.CreateRootCommand(context, recipe: true), Array.Empty<string>()))
            if (path is ["generate"]) yield return (new[] { "generate", "--recipe", "NAME" }, command);
    }

    private static IEnumerable<(string[], Command)> Walk(Command command, string[] path)
    {
        yield return (path, command);
        foreach (var sub in command.Subcommands)
            foreach (var x in Walk(sub, path.Append(sub.Name).ToArray())) yield return x;
    }

    public static TheoryData<string> CommandPaths()
    {
        var data = new TheoryData<string>();
        foreach (var (path, _) in AllCommands()) data.Add(string.Join(' ', path));
        return data;
    }

    private static string Collapse(string text) => WhitespaceRuns().Replace(text, " ");

    private static string Format(object? value) => value switch
    {
        null => "",
        IFormattable f => f.ToString(null, CultureInfo.CurrentCulture),
        _ => value.ToString() ?? "",
    };

    [Theory]
    [MemberData(nameof(CommandPaths))]
    public void HelpComesFromSystemCommandLineAndListsEveryOptionWithItsDefault(string path)
    {
        var command = AllCommands().Single(c => string.Join(' ', c.Path) == path).Command;
        string[] args = path.Length == 0 ? new[] { "--help" } : path.Split(' ').Append("--help").ToArray();
        var (code, stdout, stderr) = CliRunner.Run(args);
        Assert.True(code == ExitCodes.Ok, $"exit {code}: {stderr}");
        // System.CommandLine's layout: Description, Usage with the command's path, Options.
        // The command words of the path: not options, nor an option's value (sd15 of --preset sd15, NAME of --recipe NAME).
        var words = path.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        string name = string.Join(' ', new[] { RootCommand.ExecutableName }.Concat(words.Where((w, i) => !w.StartsWith('-') && (i == 0 || !words[i - 1].StartsWith('-')))));
        Assert.Contains("Description:", stdout);
        Assert.Contains($"Usage:{Environment.NewLine}  {name} ", stdout);
        Assert.Contains("Options:", stdout);
        string flat = Collapse(stdout);
        foreach (var option in command.Options.Where(o => o is not System.CommandLine.Help.HelpOption && o is not VersionOption))
        {
            foreach (var alias in option.Aliases.Prepend(option.Name)) Assert.Contains(alias, flat);
            if (option.Description is { Length: > 0 } d) Assert.Contains(Collapse(d), flat);
            if (option.ValueType == typeof(bool)) continue; // a switch: off unless given
            if (option.HasDefaultValue)
                Assert.Contains($"[default: {Format(option.GetDefaultValue())}]", flat);
            else if (option.Required)
                Assert.Contains("(REQUIRED)", flat);
            else
                Assert.True(option.Description?.Contains("default", StringComparison.Ordinal) == true,
                    $"{path} {option.Name}: an option without a fixed default says in its description what happens without it");
        }
        foreach (var argument in command.Arguments) Assert.Contains($"<{argument.Name}>", stdout);
    }

    [Fact]
    public void TheHandWrittenParserIsGone()
    {
        Assert.Null(typeof(App).Assembly.GetType("ZMagic.Cli.ParsedArgs"));
        foreach (var type in typeof(App).Assembly.GetTypes().Where(t => t.Namespace == "ZMagic.Cli.Commands"))
            Assert.Null(type.GetField("Help", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static));
    }

    [Theory]
    [InlineData("help")]
    [InlineData("-h")]
    [InlineData("-?")]
    public void HelpSpellings(string spelling)
    {
        var (code, stdout, _) = CliRunner.Run(spelling);
        Assert.Equal(ExitCodes.Ok, code);
        Assert.Contains("Commands:", stdout);
        var (demoCode, demoOut, _) = CliRunner.Run(spelling == "help" ? new[] { "help", "demo" } : new[] { "demo", spelling });
        Assert.Equal(ExitCodes.Ok, demoCode);
        Assert.Contains("--samples", demoOut);
    }

    [Fact]
    public void NoCommandPrintsHelpAndExits2()
    {
        var (code, stdout, _) = CliRunner.Run();
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("Commands:", stdout);
    }

    [Fact]
    public void VersionPrintsTheAssemblyVersion()
    {
        var (code, stdout, _) = CliRunner.Run("--version");
        Assert.Equal(ExitCodes.Ok, code);
        var assembly = typeof(App).Assembly;
        string informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0];
        Assert.Equal(informational, stdout.Trim());
        var v = assembly.GetName().Version!;
        Assert.StartsWith($"{v.Major}.{v.Minor}.{v.Build}", stdout.Trim());
    }

    [Theory]
    [InlineData("--sampels", "--samples", "demo", "--sampels", "3")]
    [InlineData("--sed", "--seed", "demo", "--sed", "3")]
    [InlineData("--condtion", "--condition", "generate", "--preset", "digits", "--condtion", "digit:class=3")]
    [InlineData("--prompts", "--prompt", "generate", "--preset", "sd15", "--model", "m", "--prompts", "a cat")]
    [InlineData("demoo", "demo", "demoo")]
    [InlineData("chek", "check", "models", "chek")]
    public void ATypoIsAUsageErrorThatSuggestsTheRightSpelling(string typo, string meant, params string[] args)
    {
        var (code, stdout, stderr) = CliRunner.Run(args);
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Equal("", stdout);
        Assert.Contains($"'{typo}'", stderr);
        Assert.Contains($"Did you mean '{meant}'?", stderr);
        Assert.Contains("--help' for usage.", stderr);
    }

    [Fact]
    public void AnUnknownOptionFarFromAnyIsStillAClearUsageError()
    {
        var (code, _, stderr) = CliRunner.Run("demo", "--frobnicate-everything", "1");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("error: Unknown option '--frobnicate-everything'.", stderr);
        Assert.DoesNotContain("Did you mean", stderr);
        Assert.DoesNotContain("'1'", stderr); // the unknown option's value is not a second error
    }

    [Theory]
    [InlineData("-n", "2", "--samples")]
    [InlineData("-s", "7", "--seed")]
    [InlineData("-o", "x", "--out")]
    [InlineData("-t", "1", "--threads")]
    public void ShortAliasesAreTheLongOptions(string alias, string value, string option)
    {
        var demo = AllCommands().Single(c => c.Path is ["demo"]).Command;
        var opt = demo.Options.Single(o => o.Name == option);
        Assert.Contains(alias, opt.Aliases);
        var result = demo.Parse(new[] { alias, value });
        Assert.Empty(result.Errors);
        Assert.False(result.GetResult(opt)!.Implicit);
    }

    [Fact]
    public void OptionsTakeTheirDefaultsFromTheCodeThatUsesThem()
    {
        var demo = AllCommands().Single(c => c.Path is ["demo"]).Command;
        object? Default(string name) => demo.Options.Single(o => o.Name == name).GetDefaultValue();
        var d = new DemoOptions();
        Assert.Equal(d.Samples, Default("--samples"));
        Assert.Equal(d.Steps, Default("--steps"));
        Assert.Equal(d.OutDir, Default("--out"));
        Assert.Equal(d.TargetInk, Default("--ink"));
        Assert.Equal(string.Join(",", DemoDefaults.AllMethods), Default("--methods"));
    }

    [Fact]
    public void TabCompletionOffersOptionsAndChoices()
    {
        // dotnet-suggest calls `zmagic [suggest:POSITION] "COMMAND LINE"`.
        string line = "generate --preset digits --meth";
        var (code, stdout, _) = CliRunner.Run($"[suggest:{line.Length}]", line);
        Assert.Equal(ExitCodes.Ok, code);
        Assert.Contains("--method", stdout.Split('\n').Select(s => s.Trim()));
        line = "generate --preset digits --method ";
        (code, stdout, _) = CliRunner.Run($"[suggest:{line.Length}]", line);
        Assert.Equal(ExitCodes.Ok, code);
        var offered = stdout.Split('\n').Select(s => s.Trim()).ToHashSet();
        Assert.Superset(new HashSet<string> { "vanilla", "zmagic", "unguided" }, offered);
        line = "generate --preset ";
        (_, stdout, _) = CliRunner.Run($"[suggest:{line.Length}]", line);
        Assert.Contains("digits", stdout.Split('\n').Select(s => s.Trim()));
    }

    [Fact]
    public void ProgressWrittenToAFileHasNoCarriageReturnsAndFewLines()
    {
        var log = new StringWriter();
        var bar = new TextProgressBar(log, total: 1000);
        for (int i = 0; i < 1000; i++) bar.Advance("zmagic");
        bar.Done();
        string text = log.ToString();
        Assert.DoesNotContain('\r', text);
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.InRange(lines.Length, 2, 12); // the first step, every tenth, the last
        Assert.StartsWith("[", lines[0]);
        Assert.Contains("1000/1000", lines[^1]);

        var terminal = new StringWriter();
        var redrawn = new TextProgressBar(terminal, total: 3, interactive: true);
        for (int i = 0; i < 3; i++) redrawn.Advance("zmagic");
        redrawn.Done();
        Assert.Contains('\r', terminal.ToString());
        Assert.Contains("3/3", terminal.ToString());
    }

    [Fact]
    public void ProgressOfARealRunWithStderrRedirectedHasNoCarriageReturns()
    {
        string outDir = Path.Combine(CliRunner.TempDir(), "out");
        try
        {
            var r = CliProcess.Run(new[] { "generate", "--preset", "digits", "-c", "digit:class=3", "--steps", "12", "-n", "1", "-t", "1", "-o", outDir },
                TimeSpan.FromMinutes(3));
            Assert.True(r.Code == ExitCodes.Ok, $"exit {r.Code}: {r.Err}");
            Assert.DoesNotContain('\r', r.Err);
            Assert.Contains("] ", r.Err);
            Assert.Matches(@"\] (\d+)/\1 ", r.Err); // the last line: all steps done
        }
        finally { Directory.Delete(Path.GetDirectoryName(outDir)!, true); }
    }

    [Fact]
    public void HelpOfTheInstalledCommandIsNamedZmagic()
    {
        // Out of process, as users run it: the usage line names `zmagic`, whatever runs the tests.
        var r = CliProcess.Run(new[] { "demo", "--help" }, TimeSpan.FromMinutes(1));
        Assert.Equal(ExitCodes.Ok, r.Code);
        Assert.Contains($"Usage:{Environment.NewLine}  zmagic demo [options]", r.Out);
    }

    // ---- docs/cli.md agrees with the definitions ----

    private static string RepoFile(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ZMagic.sln"))) return Path.Combine(dir.FullName, relative);
        throw new InvalidOperationException("ZMagic.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>The markdown options table of one command, as docs/cli.md must hold it.</summary>
    internal static string OptionsTable(Command command)
    {
        static string Cell(string s) => s.Replace("|", "\\|", StringComparison.Ordinal);
        var sb = new StringBuilder();
        sb.Append("| option | value | default | meaning |\n|---|---|---|---|\n");
        foreach (var a in command.Arguments)
            sb.Append(CultureInfo.InvariantCulture, $"| `{a.Name}` (argument) | | required | {Cell(a.Description ?? "")} |\n");
        foreach (var o in command.Options.Where(o => o is not System.CommandLine.Help.HelpOption && o is not VersionOption))
        {
            string names = string.Join(", ", o.Aliases.OrderBy(a => a.Length).Append(o.Name).Select(n => $"`{n}`"));
            string value = o.ValueType == typeof(bool) ? "" : $"`{Cell(o.HelpName ?? "")}`";
            string def = o.ValueType == typeof(bool) ? "" : o.HasDefaultValue ? $"`{Cell(string.Create(CultureInfo.InvariantCulture, $"{o.GetDefaultValue()}"))}`" : o.Required ? "required" : "";
            sb.Append(CultureInfo.InvariantCulture, $"| {names} | {value} | {def} | {Cell(o.Description ?? "")} |\n");
        }
        return sb.ToString();
    }

    [Fact]
    public void CliDocsListEveryOptionWithTheDefaultsOfTheCode()
    {
        // Set ZMAGIC_UPDATE_CLI_DOCS=1 to rewrite the generated tables in docs/cli.md from the definitions.
        string path = RepoFile("docs/cli.md");
        string doc = File.ReadAllText(path).ReplaceLineEndings("\n");
        bool update = Environment.GetEnvironmentVariable("ZMAGIC_UPDATE_CLI_DOCS") == "1";
        var stale = new List<string>();
        foreach (var (p, command) in AllCommands())
        {
            if (command is RootCommand || (command.Options.Count == 0 && command.Arguments.Count == 0) || command.Subcommands.Count > 0 && command.Options.Count == 0) continue;
            string key = string.Join(' ', p);
            string begin = $"<!-- options: {key} -->\n", end = $"<!-- end options: {key} -->";
            int i = doc.IndexOf(begin, StringComparison.Ordinal), j = doc.IndexOf(end, StringComparison.Ordinal);
            string expected = OptionsTable(command);
            if (i < 0 || j < i) { stale.Add($"docs/cli.md has no block {begin.Trim()} ... {end}; it should hold:\n{expected}"); continue; }
            string actual = doc[(i + begin.Length)..j];
            if (actual == expected) continue;
            if (update) doc = doc[..(i + begin.Length)] + expected + doc[j..];
            else stale.Add($"docs/cli.md, options of `zmagic {key}` differ from the code; expected:\n{expected}");
        }
        if (update) File.WriteAllText(path, doc);
        Assert.True(update || stale.Count == 0, string.Join("\n", stale) + "\n(ZMAGIC_UPDATE_CLI_DOCS=1 rewrites them.)");
    }

    [Theory]
    [InlineData("docs/cli.md")]
    [InlineData("README.md")]
    [InlineData("src/ZMagic.Cli/README.md")]
    public void EveryZmagicFlagTheDocsMentionExists(string file)
    {
        // Flags of other tools the docs show (dotnet tool install, scripts/pack.sh, dotnet run).
        var foreign = new HashSet<string> { "--version", "--add-source", "--tool", "--tool-path", "--project", "--global", "--filter", "--no-build", "--configuration",
            "--blame-crash", "--blame-hang-timeout", "--command-path",
            "--sampels", "--meth", "--me" }; // the last: a typo and partial words the docs show on purpose
        var known = AllCommands().SelectMany(c => c.Command.Options).SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet();
        known.UnionWith(new[] { "--help" });
        var unknown = LongFlag().Matches(File.ReadAllText(RepoFile(file))).Select(m => m.Value)
            .Where(f => !known.Contains(f) && !foreign.Contains(f)).Distinct().ToList();
        Assert.True(unknown.Count == 0, $"{file} mentions flags no zmagic command has: {string.Join(", ", unknown)}");
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex WhitespaceRuns();

    [GeneratedRegex(@"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")]
    private static partial Regex LongFlag();
}
