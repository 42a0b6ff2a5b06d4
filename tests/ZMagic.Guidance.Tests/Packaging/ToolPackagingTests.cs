using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using System.Xml.Linq;
using Xunit.Abstractions;

namespace ZMagic.Guidance.Tests.Packaging;

/// <summary>
/// Packs the dotnet tool <c>zmagic</c> (the pointer package ZMagic.Cli and the RID package ZMagic.Cli.linux-x64) into
/// a temporary folder feed with a unique pre-release version, checks both packages (metadata as the libraries',
/// tool layout, libtorch's licence, the GLIBCXX-weakened libLibTorchSharp.so), installs the tool with
/// <c>dotnet tool install --tool-path</c> from a nuget.config that lists only that feed (no network), and runs
/// <c>zmagic --help</c>, <c>zmagic bench</c> (libtorch through the packaged natives) and <c>zmagic generate</c>
/// (PNGs through the packaged SkiaSharp natives).
/// </summary>
[Trait("Category", "Slow")]
[Collection(PackagingCollection.Name)]
public sealed class ToolPackagingTests(ITestOutputHelper output)
{
    private const string PointerId = "ZMagic.Cli";
    private const string RidId = "ZMagic.Cli.linux-x64";
    private const string ToolDir = "tools/net10.0/linux-x64/";

    [Fact]
    public void Packed_tool_installs_offline_and_runs_bench_and_generate()
    {
        var total = Stopwatch.StartNew();
        string version = $"0.1.0-tooltest.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string temp = Path.Combine(Path.GetTempPath(), "zmagic-tool-" + Guid.NewGuid().ToString("N")[..8]);
        string feed = Path.Combine(temp, "feed");
        string toolPath = Path.Combine(temp, "tools");
        Directory.CreateDirectory(feed);
        try
        {
            // 1. Pack. The libraries are already built by this test project's build (BuildProjectReferences=false);
            //    the tool's linux-x64 pack builds the CLI (up to date after the solution build) and publishes it.
            var (code, log) = RepoPaths.Run("dotnet",
                $"pack src/ZMagic.Cli -c {RepoPaths.Configuration} -nologo -v:m -p:BuildProjectReferences=false " +
                $"-p:PackageVersion={version} \"-p:PackageOutputPath={feed}\"", RepoPaths.Root, TimeSpan.FromMinutes(8));
            Assert.True(code == 0, "pack failed:\n" + log);
            output.WriteLine($"pack: {total.Elapsed.TotalSeconds:F1} s");
            string pointer = Path.Combine(feed, $"{PointerId}.{version}.nupkg");
            string rid = Path.Combine(feed, $"{RidId}.{version}.nupkg");
            Assert.True(File.Exists(pointer), $"{pointer} missing:\n{log}");
            Assert.True(File.Exists(rid), $"{rid} missing:\n{log}");
            foreach (var p in new[] { pointer, rid }) output.WriteLine($"{Path.GetFileName(p)}: {new FileInfo(p).Length / (1024.0 * 1024.0):F1} MiB");

            // 2. The packages.
            CheckPointer(pointer, version);
            string packedNative = CheckRidPackage(rid, temp);
            CheckRidSymbols(Path.ChangeExtension(rid, ".snupkg"));
            Assert.False(File.Exists(Path.ChangeExtension(pointer, ".snupkg")), "the pointer package has no binaries, so no symbols package");
            VerifyGlibcxxWeak(packedNative);

            // 3. Install from the feed alone.
            string config = Path.Combine(temp, "nuget.config");
            File.WriteAllText(config, new XDocument(new XElement("configuration",
                new XElement("packageSources", new XElement("clear"),
                    new XElement("add", new XAttribute("key", "zmagic-tool-test"), new XAttribute("value", feed))))).ToString());
            var install = Stopwatch.StartNew();
            (code, log) = RepoPaths.Run("dotnet", $"tool install --tool-path \"{toolPath}\" {PointerId} --version {version} --configfile \"{config}\"",
                temp, TimeSpan.FromMinutes(5));
            Assert.True(code == 0, "tool install failed:\n" + log);
            output.WriteLine($"install: {install.Elapsed.TotalSeconds:F1} s");
            string zmagic = Path.Combine(toolPath, "zmagic");
            Assert.True(File.Exists(zmagic), $"{zmagic} missing after install:\n{log}");
            // The installed copy is the packed (patched) one.
            var installedNative = Directory.GetFiles(Path.Combine(toolPath, ".store"), "libLibTorchSharp.so", SearchOption.AllDirectories);
            Assert.Single(installedNative);
            Assert.Equal(File.ReadAllBytes(packedNative), File.ReadAllBytes(installedNative[0]));

            // 4. Run it: help, then a command that loads libtorch and samples two guided steps.
            var env = ToolEnvironment();
            (code, log) = RepoPaths.Run(zmagic, "--help", temp, TimeSpan.FromMinutes(2), env);
            Assert.True(code == 0, "zmagic --help failed:\n" + log);
            Assert.Contains("zmagic [command] [options]", log, StringComparison.Ordinal); // System.CommandLine's usage line
            Assert.Contains("bench", log, StringComparison.Ordinal);

            var run = Stopwatch.StartNew();
            (code, log) = RepoPaths.Run(zmagic,
                "bench --preset digits --random-weights --method zmagic --combiner cagrad --conditions 2 --steps 2 --warmup 1 --threads 1",
                temp, TimeSpan.FromMinutes(3), env);
            output.WriteLine(log);
            Assert.True(code == 0, "zmagic bench failed:\n" + log);
            output.WriteLine($"bench run: {run.Elapsed.TotalSeconds:F1} s");
            string json = log.Split('\n').Select(l => l.Trim()).Last(l => l.StartsWith('{'));
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            Assert.Equal("digits", root.GetProperty("preset").GetString());
            Assert.Equal(2, root.GetProperty("conditions").GetInt32());
            // --steps 2 after one warm-up step; the sampler may add its final step to the timed ones.
            Assert.InRange(root.GetProperty("steps").GetInt32(), 2, 3);
            Assert.True(root.GetProperty("ms_per_step_median").GetDouble() > 0, json);
            // Exact Z-Magic with n = 2 conditions (docs/performance.md, cost model): 2 forwards, 2n - 1 = 3 backward
            // passes of which n - 1 = 1 VJP.
            Assert.Equal(2, root.GetProperty("forward_passes_per_step").GetDouble());
            Assert.Equal(3, root.GetProperty("backward_passes_per_step").GetDouble());
            Assert.Equal(1, root.GetProperty("vjps_per_step").GetDouble());

            // And one that writes PNGs through the packaged SkiaSharp natives.
            string outDir = Path.Combine(temp, "generated");
            (code, log) = RepoPaths.Run(zmagic,
                $"generate --preset digits --condition digit:class=3 --method zmagic --samples 1 --steps 3 --threads 1 --quiet --out \"{outDir}\"",
                temp, TimeSpan.FromMinutes(3), env);
            Assert.True(code == 0, "zmagic generate failed:\n" + log);
            foreach (var png in new[] { "sample_000.png", "grid.png" })
            {
                string path = Path.Combine(outDir, png);
                Assert.True(File.Exists(path), $"{path} missing:\n{log}");
                Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(path)[..4]);
            }
            output.WriteLine($"total: {total.Elapsed.TotalSeconds:F1} s");
        }
        finally
        {
            PackageChecks.TryDelete(temp);
            // Leave no test version behind in the global packages folder.
            string global = PackageChecks.GlobalPackagesFolder();
            foreach (var id in new[] { PointerId, RidId }) PackageChecks.TryDelete(Path.Combine(global, id.ToLowerInvariant(), version));
        }
    }

    /// <summary>The pointer package: a DotnetTool with no implementation, naming the linux-x64 package.</summary>
    private static void CheckPointer(string nupkg, string version)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var meta = PackageChecks.CommonMetadata(zip, PointerId);
        XNamespace ns = meta.Name.Namespace;
        Assert.Equal(version, meta.Element(ns + "version")?.Value);
        Assert.Contains("DotnetTool", meta.Descendants(ns + "packageType").Select(t => t.Attribute("name")?.Value));
        Assert.Empty(meta.Descendants(ns + "dependency"));
        var names = zip.Entries.Select(e => e.FullName).ToList();
        Assert.DoesNotContain(names, n => n.EndsWith(".dll", StringComparison.Ordinal) || n.EndsWith(".so", StringComparison.Ordinal));
        var settings = ToolSettings(zip);
        Assert.Equal("zmagic", settings.Descendants("Command").Single().Attribute("Name")?.Value);
        var ridPackage = settings.Descendants("RuntimeIdentifierPackage").Single();
        Assert.Equal("linux-x64", ridPackage.Attribute("RuntimeIdentifier")?.Value);
        Assert.Equal(RidId, ridPackage.Attribute("Id")?.Value);
    }

    /// <summary>The linux-x64 package: the published tool with all natives; returns the extracted libLibTorchSharp.so.</summary>
    private static string CheckRidPackage(string nupkg, string temp)
    {
        using var zip = ZipFile.OpenRead(nupkg);
        var meta = PackageChecks.CommonMetadata(zip, RidId);
        XNamespace ns = meta.Name.Namespace;
        Assert.Contains("DotnetToolRidPackage", meta.Descendants(ns + "packageType").Select(t => t.Attribute("name")?.Value));
        Assert.Empty(meta.Descendants(ns + "dependency"));
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        foreach (var f in new[]
                 {
                     "zmagic", "zmagic.dll", "zmagic.pdb", "zmagic.runtimeconfig.json", "zmagic.deps.json", "ZMagic.Guidance.dll", "ZMagic.Core.dll",
                     "TorchSharp.dll", "libLibTorchSharp.so", "libtorch.so", "libtorch_cpu.so", "libc10.so", "libSkiaSharp.so",
                 })
            Assert.True(names.Contains(ToolDir + f), $"{ToolDir}{f} missing from {Path.GetFileName(nupkg)}");
        // libtorch's Python bindings and test libraries are left out (TorchSharp never loads them).
        Assert.DoesNotContain(ToolDir + "libtorch_python.so", names);
        Assert.DoesNotContain(ToolDir + "libjitbackend_test.so", names);
        Assert.Contains("licenses/LICENSE-LIBTORCH.txt", names);
        Assert.Contains("THIRD-PARTY-NOTICES.md", names);
        using (var licence = new StreamReader(zip.GetEntry("licenses/LICENSE-LIBTORCH.txt")!.Open()))
            Assert.Contains("PyTorch", licence.ReadToEnd(), StringComparison.Ordinal);
        var settings = ToolSettings(zip);
        Assert.Equal("zmagic", settings.Descendants("Command").Single().Attribute("Name")?.Value);
        // Framework-dependent: runs on the installed .NET 10 runtime.
        using (var rc = JsonDocument.Parse(zip.GetEntry(ToolDir + "zmagic.runtimeconfig.json")!.Open()))
        {
            var options = rc.RootElement.GetProperty("runtimeOptions");
            Assert.True(options.TryGetProperty("framework", out var fw) || options.TryGetProperty("frameworks", out fw), "runtimeconfig names no framework: self-contained?");
        }
        string so = Path.Combine(temp, "packed-native", "libLibTorchSharp.so");
        Directory.CreateDirectory(Path.GetDirectoryName(so)!);
        zip.GetEntry(ToolDir + "libLibTorchSharp.so")!.ExtractToFile(so);
        return so;
    }

    /// <summary>The linux-x64 package's symbols package holds the pdbs of zmagic and the libraries.</summary>
    private static void CheckRidSymbols(string snupkg)
    {
        Assert.True(File.Exists(snupkg), $"{snupkg} missing");
        using var zip = ZipFile.OpenRead(snupkg);
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        foreach (var pdb in new[] { "zmagic.pdb", "ZMagic.Core.pdb", "ZMagic.Guidance.pdb" })
            Assert.True(names.Contains(ToolDir + pdb), $"{ToolDir}{pdb} missing from {Path.GetFileName(snupkg)}");
    }

    private static XDocument ToolSettings(ZipArchive zip)
    {
        var entry = zip.Entries.SingleOrDefault(e => e.FullName.StartsWith("tools/", StringComparison.Ordinal) && e.Name == "DotnetToolSettings.xml");
        Assert.True(entry is not null, "DotnetToolSettings.xml missing");
        using var s = entry.Open();
        return XDocument.Load(s);
    }

    /// <summary>
    /// The packed libLibTorchSharp.so marks its GLIBCXX_3.4.32 need weak, checked by the same ELF code that patches it
    /// (build/ZMagic.NativeFix.targets, verify mode). TorchSharp's own copy, checked in the same run, must fail: the
    /// check can tell the two apart.
    /// </summary>
    private void VerifyGlibcxxWeak(string packedNative)
    {
        var v = typeof(TorchSharp.torch).Assembly.GetName().Version!;
        string original = Path.Combine(PackageChecks.GlobalPackagesFolder(), "torchsharp", $"{v.Major}.{v.Minor}.{v.Build}", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(original), $"{original} missing (restore of this test project should have brought it)");
        var (code, log) = RepoPaths.Run("dotnet",
            $"msbuild build/ZMagic.NativeFix.targets -t:ZMagicVerifyTorchSharpNative -nologo -v:m \"-p:ZMagicVerifyFiles=\\\"{packedNative};{original}\\\"\"",
            RepoPaths.Root, TimeSpan.FromMinutes(3));
        output.WriteLine(log);
        Assert.Contains($"verified GLIBCXX_3.4.32 is weak in {packedNative}", log, StringComparison.Ordinal);
        Assert.Contains($"{original} needs GLIBCXX_3.4.32 without the weak flag", log, StringComparison.Ordinal);
        Assert.NotEqual(0, code);
    }

    /// <summary>The tool's apphost finds the runtime through DOTNET_ROOT where dotnet is not in a default location.</summary>
    private static Dictionary<string, string> ToolEnvironment()
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_ROOT")))
        {
            // .../shared/Microsoft.NETCore.App/<version>/System.Private.CoreLib.dll -> the dotnet root.
            var runtimeDir = new DirectoryInfo(Path.GetDirectoryName(typeof(object).Assembly.Location)!);
            if (runtimeDir.Parent?.Parent?.Parent is { } root && File.Exists(Path.Combine(root.FullName, "dotnet")))
                env["DOTNET_ROOT"] = root.FullName;
        }
        return env;
    }
}
