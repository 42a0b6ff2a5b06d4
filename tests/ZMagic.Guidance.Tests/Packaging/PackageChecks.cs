using System.IO.Compression;
using System.Xml.Linq;

namespace ZMagic.Guidance.Tests.Packaging;

/// <summary>What every ZMagic package (the libraries and the <c>zmagic</c> tool packages) must carry.</summary>
internal static class PackageChecks
{
    /// <summary>
    /// Checks the shared metadata of <paramref name="zip"/> (a .nupkg with id <paramref name="id"/>): README and icon
    /// in the package and named by the nuspec, MIT licence expression, description, tags, https repository URL.
    /// Returns the nuspec's metadata element for package-specific checks.
    /// </summary>
    public static XElement CommonMetadata(ZipArchive zip, string id)
    {
        var names = zip.Entries.Select(e => e.FullName).ToHashSet();
        Assert.Contains("README.md", names);
        Assert.Contains("icon.png", names);
        var entry = zip.GetEntry($"{id}.nuspec");
        Assert.True(entry is not null, $"{id}.nuspec missing; entries: {string.Join(", ", names.Where(n => n.EndsWith(".nuspec", StringComparison.Ordinal)))}");
        using var nuspec = entry.Open();
        var doc = XDocument.Load(nuspec);
        XNamespace ns = doc.Root!.Name.Namespace;
        var meta = doc.Root.Element(ns + "metadata")!;
        Assert.Equal(id, meta.Element(ns + "id")?.Value);
        Assert.Equal("MIT", meta.Element(ns + "license")?.Value);
        Assert.Equal("README.md", meta.Element(ns + "readme")?.Value);
        Assert.Equal("icon.png", meta.Element(ns + "icon")?.Value);
        Assert.False(string.IsNullOrWhiteSpace(meta.Element(ns + "description")?.Value));
        Assert.Contains("diffusion", meta.Element(ns + "tags")?.Value ?? "");
        Assert.StartsWith("https://", meta.Element(ns + "repository")?.Attribute("url")?.Value ?? "");
        return meta;
    }

    /// <summary>Deletes a folder tree, ignoring what cannot be deleted (best-effort cleanup).</summary>
    public static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>The NuGet global packages folder (NUGET_PACKAGES or ~/.nuget/packages).</summary>
    public static string GlobalPackagesFolder() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } g
            ? g : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
}

/// <summary>
/// The packaging tests pack, build and restore in the repository and keep both cores busy for half a minute and more:
/// one at a time, and not beside timing-sensitive tests of other classes (xunit runs this collection alone).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PackagingCollection
{
    /// <summary>The collection's name.</summary>
    public const string Name = "Packaging";
}
