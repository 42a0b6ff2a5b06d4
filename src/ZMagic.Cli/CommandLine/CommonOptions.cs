using System.CommandLine;

namespace ZMagic.Cli.CommandLine;

/// <summary>Options several commands share, spelled, aliased and described the same way everywhere.</summary>
internal static class CommonOptions
{
    /// <summary><c>--out/-o DIR</c>.</summary>
    public static Option<string?> Out(string defaultValue) => CliOptions.Text("--out", "output folder", defaultValue, "DIR", "-o");

    /// <summary><c>--seed/-s S</c>.</summary>
    public static Option<long> Seed(long defaultValue, string description = "run seed") => CliOptions.Long("--seed", description, defaultValue, "S", "-s");

    /// <summary><c>--samples/-n N</c>.</summary>
    public static Option<int> Samples(int defaultValue, int max, string description = "number of images") =>
        CliOptions.Int("--samples", description, defaultValue, 1, max, "N", "-n");

    /// <summary><c>--threads/-t T</c>: libtorch intra-op threads.</summary>
    public static Option<int> Threads(int defaultValue = 2, int min = 1, string description = "libtorch threads") =>
        CliOptions.Int("--threads", description, defaultValue, min, 256, "T", "-t");

    /// <summary><c>--quiet/-q</c>: no progress on stderr.</summary>
    public static Option<bool> Quiet() => CliOptions.Flag("--quiet", "no progress display on stderr", "-q");

    /// <summary><c>--preset/-p NAME</c> (required), completing the preset names.</summary>
    public static Option<string> Preset(string description = "backbone preset (zmagic models lists them)")
    {
        var o = CliOptions.RequiredText("--preset", description, "NAME", "-p");
        o.CompletionSources.Add(Presets.All.Select(p => p.Name).Append(Presets.StableDiffusion).ToArray());
        return o;
    }

    /// <summary><c>--device D</c>: cpu, cuda or cuda:N.</summary>
    public static Option<string> Device() =>
        CliOptions.Text("--device", "cpu, cuda or cuda:N", "cpu", "cpu|cuda|cuda:N")!;
}
