using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Xunit.Abstractions;

namespace ZMagic.Guidance.Tests.Packaging;

/// <summary>
/// Packs the four libraries into a temporary folder feed (with a unique pre-release version, so no stale package in
/// the global packages folder can be picked), restores and builds samples/ZMagic.Sample.Plugin from that feed (package
/// references, not project references), runs it and checks its output. The sample's nuget.config is reduced to that
/// feed: everything else (TorchSharp, libtorch, Microsoft.Extensions.*) comes from the global packages folder, already
/// filled by this test project's own restore, so no network is needed.
/// </summary>
[Trait("Category", "Slow")]
[Collection(PackagingCollection.Name)]
public sealed class SamplePackagingTests(ITestOutputHelper output)
{
    private static readonly string[] Libraries = ["ZMagic.Core", "ZMagic.Models", "ZMagic.Encoders", "ZMagic.Guidance"];

    [Fact]
    public void Packed_libraries_restore_build_and_run_the_plugin_sample()
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
            string sample = Path.Combine(sampleRoot, "ZMagic.Sample.Plugin");
            Directory.CreateDirectory(sample);
            foreach (var f in Directory.GetFiles(Path.Combine(RepoPaths.Root, "samples"), "Directory.*"))
                File.Copy(f, Path.Combine(sampleRoot, Path.GetFileName(f)));
            foreach (var f in Directory.GetFiles(Path.Combine(RepoPaths.Root, "samples", "ZMagic.Sample.Plugin")))
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
            Assert.DoesNotContain("\"type\": \"project\"", assets, StringComparison.Ordinal);

            // 4. Run it (10 steps keeps it to a few seconds).
            var run = Stopwatch.StartNew();
            (code, log) = RepoPaths.Run("dotnet", "bin/Release/net10.0/ZMagic.Sample.Plugin.dll 10", sample, TimeSpan.FromMinutes(3));
            output.WriteLine(log);
            Assert.True(code == 0, "sample run failed:\n" + log);
            output.WriteLine($"sample run: {run.Elapsed.TotalSeconds:F1} s; total {total.Elapsed.TotalSeconds:F1} s");
            var energies = new Dictionary<string, double>();
            foreach (Match m in Regex.Matches(log, @"^(\w+)\s+final energies: brightness=([-\d.eE+]+) layout=([-\d.eE+]+)", RegexOptions.Multiline))
                energies[m.Groups[1].Value] = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) + double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture);
            Assert.Equal(["unguided", "vanilla", "zmagic"], energies.Keys.Order());
            Assert.All(energies.Values, e => Assert.True(double.IsFinite(e)));
            Assert.True(energies["vanilla"] < energies["unguided"], log);
            Assert.True(energies["zmagic"] < energies["unguided"], log);
            Assert.Matches(@"previews streamed: [1-9]", log);
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
        var deps = meta.Descendants(ns + "dependency").Select(d => d.Attribute("id")!.Value).ToArray();
        Assert.Contains("TorchSharp", deps);
        Assert.DoesNotContain(deps, d => d.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase) || d.StartsWith("TorchSharp-", StringComparison.OrdinalIgnoreCase));
    }
}
