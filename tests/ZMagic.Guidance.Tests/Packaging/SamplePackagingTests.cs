using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Xunit.Abstractions;

namespace ZMagic.Guidance.Tests.Packaging;

/// <summary>
/// Packs the four libraries into a temporary folder feed (with a unique pre-release version, so no stale package in
/// the global packages folder can be picked), restores and builds a sample under samples/ from that feed (package
/// references, not project references), runs it and checks its output. The sample's nuget.config is reduced to that
/// feed: everything else (TorchSharp, libtorch, Microsoft.Extensions.*, including the 10.0.15 versions the
/// DependencyInjection sample references, which this test project downloads) comes from the global packages folder,
/// already filled by this test project's own restore, so no network is needed.
/// </summary>
[Trait("Category", "Slow")]
[Collection(PackagingCollection.Name)]
public sealed class SamplePackagingTests(ITestOutputHelper output)
{
    private static readonly string[] Libraries = ["ZMagic.Core", "ZMagic.Models", "ZMagic.Encoders", "ZMagic.Guidance", "ZMagic.Demo.Digits"];

    [Fact]
    public void Packed_libraries_restore_build_and_run_the_plugin_sample()
    {
        string log = PackBuildAndRun("ZMagic.Sample.Plugin", "10");
        var energies = new Dictionary<string, double>();
        foreach (Match m in Regex.Matches(log, @"^(\w+)\s+final energies: brightness=([-\d.eE+]+) layout=([-\d.eE+]+)", RegexOptions.Multiline))
            energies[m.Groups[1].Value] = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) + double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture);
        Assert.Equal(["unguided", "vanilla", "zmagic"], energies.Keys.Order());
        Assert.All(energies.Values, e => Assert.True(double.IsFinite(e)));
        Assert.True(energies["vanilla"] < energies["unguided"], log);
        Assert.True(energies["zmagic"] < energies["unguided"], log);
        Assert.Matches(@"previews streamed: [1-9]", log);
    }

    /// <summary>
    /// The packages restore beside current Microsoft.Extensions packages: the sample references
    /// Microsoft.Extensions.DependencyInjection and Options 10.0.15 (with exact [10.0.0] pins in the nuspecs this was
    /// NU1107), takes plug-in options through IOptionsMonitor and has start-up validation reject an unconstructible plug-in.
    /// </summary>
    [Fact]
    public void Packed_libraries_restore_beside_DependencyInjection_10_0_15_and_run_the_sample()
    {
        string log = PackBuildAndRun("ZMagic.Sample.DependencyInjection", "4", assets =>
        {
            Assert.Contains("\"Microsoft.Extensions.DependencyInjection/10.0.15\"", assets, StringComparison.Ordinal);
            Assert.Contains("\"Microsoft.Extensions.DependencyInjection.Abstractions/10.0.15\"", assets, StringComparison.Ordinal);
            Assert.Contains("\"Microsoft.Extensions.Options/10.0.15\"", assets, StringComparison.Ordinal);
            Assert.DoesNotContain("\"Microsoft.Extensions.Options/10.0.0\"", assets, StringComparison.Ordinal);
        });
        Assert.Contains("Microsoft.Extensions.DependencyInjection 10.0.15", log, StringComparison.Ordinal);
        Assert.Contains("Microsoft.Extensions.Options 10.0.15", log, StringComparison.Ordinal);
        Assert.Matches(@"start-up validation rejected: .*'ink' \(InkCondition\).*IInkSensor 'sensor'.*not registered", log);
        Assert.Contains("start-up validation: passed", log, StringComparison.Ordinal);
        Assert.DoesNotContain("(unexpected)", log, StringComparison.Ordinal);
        Assert.Contains("ink target from IOptionsMonitor: 0.2", log, StringComparison.Ordinal);
        double Energy(string run) => double.Parse(
            Regex.Match(log, $@"^{run}\s+ink energy: ([-\d.eE+]+) \(4 steps\)", RegexOptions.Multiline).Groups[1].Value, CultureInfo.InvariantCulture);
        double unguided = Energy("unguided"), guided = Energy("guided");
        Assert.True(double.IsFinite(unguided) && double.IsFinite(guided), log);
        Assert.True(guided < unguided, log);
    }

    /// <summary>Packs, copies <paramref name="sampleName"/> out with its feed set to the packs, builds and runs it; returns its output.</summary>
    private string PackBuildAndRun(string sampleName, string sampleArgs, Action<string>? checkAssets = null)
    {
        var total = Stopwatch.StartNew();
        string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string temp = Path.Combine(Path.GetTempPath(), "zmagic-pack-" + Guid.NewGuid().ToString("N")[..8]);
        string feed = Path.Combine(temp, "feed");
        Directory.CreateDirectory(feed);
        try
        {
            // 1. Pack (the libraries are already built by this test project's build: NoBuild).
            var (code, log) = RepoPaths.Run("dotnet",
                $"msbuild scripts/pack.proj -t:Pack -nologo -v:m -p:Configuration={RepoPaths.Configuration} -p:NoBuild=true " +
                $"-p:PackageVersion={version} \"-p:PackageOutputPath={feed}\"", RepoPaths.Root, TimeSpan.FromMinutes(5));
            Assert.True(code == 0, "pack failed:\n" + log);
            output.WriteLine($"pack: {total.Elapsed.TotalSeconds:F1} s");
            foreach (var lib in Libraries)
            {
                string nupkg = Path.Combine(feed, $"{lib}.{version}.nupkg");
                Assert.True(File.Exists(nupkg), $"{nupkg} missing:\n{log}");
                Assert.True(File.Exists(Path.ChangeExtension(nupkg, ".snupkg")), $"symbols of {lib} missing");
                CheckPackage(nupkg, lib);
                output.WriteLine($"{lib}: {new FileInfo(nupkg).Length / 1024} KiB");
            }

            // 2. Copy the sample out of the repository and point its feed at the temporary folder.
            string sampleRoot = Path.Combine(temp, "samples");
            string sample = Path.Combine(sampleRoot, sampleName);
            Directory.CreateDirectory(sample);
            foreach (var f in Directory.GetFiles(Path.Combine(RepoPaths.Root, "samples"), "Directory.*"))
                File.Copy(f, Path.Combine(sampleRoot, Path.GetFileName(f)));
            foreach (var f in Directory.GetFiles(Path.Combine(RepoPaths.Root, "samples", sampleName)))
                File.Copy(f, Path.Combine(sample, Path.GetFileName(f)));
            string config = Path.Combine(sample, "nuget.config");
            // Only the temporary feed: everything else must already be in the global packages folder, so the test
            // needs no network (and a ZMagic package can only come from this run's feed).
            string configText = File.ReadAllText(config).Replace("../../artifacts/packages", feed, StringComparison.Ordinal);
            configText = Regex.Replace(configText, @"\s*<add key=""nuget.org""[^>]*/>", "");
            configText = Regex.Replace(configText, @"\s*<packageSource key=""nuget.org"">.*?</packageSource>", "", RegexOptions.Singleline);
            Assert.DoesNotContain("nuget.org", configText, StringComparison.Ordinal);
            File.WriteAllText(config, configText);

            // 3. Restore + build against the packages.
            var build = Stopwatch.StartNew();
            (code, log) = RepoPaths.Run("dotnet", $"build -c Release -nologo -v:m -p:ZMagicVersion={version}", sample, TimeSpan.FromMinutes(5));
            Assert.True(code == 0, "sample build failed:\n" + log);
            output.WriteLine($"sample restore+build: {build.Elapsed.TotalSeconds:F1} s");
            string assets = File.ReadAllText(Path.Combine(sample, "obj", "project.assets.json"));
            Assert.Contains($"\"ZMagic.Guidance/{version}\"", assets, StringComparison.Ordinal);
            Assert.Contains($"\"ZMagic.Demo.Digits/{version}\"", assets, StringComparison.Ordinal);
            Assert.DoesNotContain("\"type\": \"project\"", assets, StringComparison.Ordinal);
            checkAssets?.Invoke(assets);

            // 4. Run it (a few steps keep it to a few seconds).
            var run = Stopwatch.StartNew();
            (code, log) = RepoPaths.Run("dotnet", $"bin/Release/net10.0/{sampleName}.dll {sampleArgs}", sample, TimeSpan.FromMinutes(3));
            output.WriteLine(log);
            Assert.True(code == 0, "sample run failed:\n" + log);
            output.WriteLine($"sample run: {run.Elapsed.TotalSeconds:F1} s; total {total.Elapsed.TotalSeconds:F1} s");
            return log;
        }
        finally
        {
            PackageChecks.TryDelete(temp);
            // Leave no test version behind in the global packages folder.
            string global = PackageChecks.GlobalPackagesFolder();
            foreach (var lib in Libraries) PackageChecks.TryDelete(Path.Combine(global, lib.ToLowerInvariant(), version));
        }
    }

    private static void CheckPackage(string nupkg, string id)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var meta = PackageChecks.CommonMetadata(zip, id);
        XNamespace ns = meta.Name.Namespace;
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        Assert.Contains($"lib/net10.0/{id}.dll", names);
        Assert.Contains($"lib/net10.0/{id}.xml", names);
        if (id == "ZMagic.Core") Assert.Contains("buildTransitive/ZMagic.Core.targets", names);
        var dependencies = meta.Descendants(ns + "dependency").ToArray();
        var deps = dependencies.Select(d => d.Attribute("id")!.Value).ToArray();
        Assert.Contains("TorchSharp", deps);
        // Minimum versions ("10.0.0" is >= 10.0.0), not exact pins ("[10.0.0]"), so apps on newer patch releases
        // (e.g. Microsoft.Extensions.DependencyInjection 10.0.15) restore beside the package instead of failing with NU1107.
        foreach (var d in dependencies)
        {
            string range = d.Attribute("version")?.Value ?? "";
            Assert.True(Regex.IsMatch(range, @"^\d+(\.\d+){1,3}(-[0-9A-Za-z.-]+)?$"),
                $"{id} depends on {d.Attribute("id")!.Value} '{range}': expected a minimum version (x), not an exact pin ([x]) or a range.");
        }
        Assert.Equal("0.107.0", dependencies.Single(d => d.Attribute("id")!.Value == "TorchSharp").Attribute("version")!.Value);
        Assert.DoesNotContain(deps, d => d.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase) || d.StartsWith("TorchSharp-", StringComparison.OrdinalIgnoreCase));
    }
}
