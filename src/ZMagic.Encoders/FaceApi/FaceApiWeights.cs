using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;

namespace ZMagic.Encoders.FaceApi;

/// <summary>
/// Gets the face-api model files (the <c>model/</c> folder of the npm package @vladmandic/face-api 1.7.15): with the
/// standard npm client (<c>npm pack</c>, whatever registry the user's npm is configured for), or from a tarball the
/// user downloaded. The tarball must match the pinned sha512 integrity; the extracted files are cached and checked
/// against pinned sha256 checksums on every use, so a corrupt cache is noticed and rebuilt.
/// </summary>
/// <remarks>
/// Cache folder: <see cref="FaceApiWeightsOptions.CacheDirectory"/>, else <c>$ZMAGIC_CACHE/face-api</c>, else
/// <c>~/.cache/zmagic/face-api</c>. Concurrent processes share it safely (a lock file serialises the fetch).
/// Nothing is downloaded unless <see cref="EnsureModelDirectory"/> is called without a tarball and the cache is empty
/// or corrupt.
/// </remarks>
public static class FaceApiWeights
{
    /// <summary>The npm package.</summary>
    public const string PackageName = "@vladmandic/face-api";

    /// <summary>The pinned version.</summary>
    public const string Version = "1.7.15";

    /// <summary>The npm <c>dist.integrity</c> of the pinned version's tarball.</summary>
    public const string Integrity = "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw==";

    /// <summary>The tarball's file name as <c>npm pack</c> writes it.</summary>
    public const string TarballName = "vladmandic-face-api-1.7.15.tgz";

    /// <summary>sha256 of every file extracted from <c>package/model/</c>.</summary>
    public static IReadOnlyDictionary<string, string> ModelFileSha256 { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["age_gender_model.bin"] = "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
        ["face_expression_model.bin"] = "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
        ["face_landmark_68_model.bin"] = "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b",
        ["face_landmark_68_tiny_model.bin"] = "b98e9f2f7da76f8a6dda9741a36ed485b224b889d552de2b2c1bb16217f67bfc",
        ["face_recognition_model.bin"] = "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
        ["ssd_mobilenetv1_model.bin"] = "2835640602d53718aa6ae9a42896327eaa21beefed056c218d32ca7d79e1e2f8",
        ["tiny_face_detector_model.bin"] = "b7503ce7df31039b1c43316a9b865cab6a70dd748cc602d3fa28b551503c3871",
        ["age_gender_model-weights_manifest.json"] = "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
        ["face_expression_model-weights_manifest.json"] = "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
        ["face_landmark_68_model-weights_manifest.json"] = "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9",
        ["face_landmark_68_tiny_model-weights_manifest.json"] = "9a1a5dd19fd814fd5095c3cb58f8e0d3193b8c5b9a6715b30a69d559aea31ad4",
        ["face_recognition_model-weights_manifest.json"] = "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
        ["ssd_mobilenetv1_model-weights_manifest.json"] = "888f744dffbc84f5f060d1f8427d9742341943a2dfaaf9205d10029b7e7a2955",
        ["tiny_face_detector_model-weights_manifest.json"] = "5d1af4849ac48d5b985f4a9b16010c512353ddd6fcc63d50fd0bc9e9e64296e5",
    };

    /// <summary>The cache folder used when none is given.</summary>
    public static string DefaultCacheDirectory()
    {
        var env = Environment.GetEnvironmentVariable("ZMAGIC_CACHE");
        if (!string.IsNullOrWhiteSpace(env)) return Path.Combine(env, "face-api");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(home, ".cache", "zmagic", "face-api");
    }

    /// <summary>
    /// Returns the folder holding the verified model files, fetching/extracting them first when the cache lacks them
    /// or fails its checksums.
    /// </summary>
    /// <exception cref="FaceApiWeightsException">npm failed, the tarball's integrity is wrong, or it lacks model files.</exception>
    public static string EnsureModelDirectory(FaceApiWeightsOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new FaceApiWeightsOptions();
        string cache = Path.GetFullPath(options.CacheDirectory ?? DefaultCacheDirectory());
        Directory.CreateDirectory(cache);
        string modelDir = Path.Combine(cache, Version, "model");
        using var fileLock = AcquireLock(Path.Combine(cache, ".lock"), cancellationToken);
        if (VerifyModelDirectory(modelDir) is null) return modelDir;

        string tarball;
        if (options.TarballPath is not null)
        {
            tarball = Path.GetFullPath(options.TarballPath);
            if (!File.Exists(tarball)) throw new FaceApiWeightsException($"the face-api tarball '{tarball}' does not exist.");
            CheckIntegrity(tarball);
        }
        else
        {
            tarball = Path.Combine(cache, TarballName);
            bool ok = File.Exists(tarball) && IntegrityMatches(tarball);
            if (!ok)
            {
                if (File.Exists(tarball)) File.Delete(tarball);
                NpmPack(cache, options.NpmExecutable, cancellationToken);
                CheckIntegrity(tarball);
            }
        }
        Extract(tarball, modelDir);
        var problem = VerifyModelDirectory(modelDir);
        if (problem is not null) throw new FaceApiWeightsException($"after extracting '{tarball}': {problem}");
        return modelDir;
    }

    /// <summary>Checks every pinned model file in <paramref name="modelDir"/>; returns null when all match, else what is wrong.</summary>
    public static string? VerifyModelDirectory(string modelDir)
    {
        foreach (var (name, sha) in ModelFileSha256)
        {
            string path = Path.Combine(modelDir, name);
            if (!File.Exists(path)) return $"'{path}' is missing";
            string actual = Sha256File(path);
            if (!string.Equals(actual, sha, StringComparison.Ordinal)) return $"'{path}' has sha256 {actual}, expected {sha}";
        }
        return null;
    }

    /// <summary>Throws unless the tarball's sha512 equals <see cref="Integrity"/>.</summary>
    /// <exception cref="FaceApiWeightsException">The integrity does not match.</exception>
    public static void CheckIntegrity(string tarball)
    {
        string actual = ComputeIntegrity(tarball);
        if (!string.Equals(actual, Integrity, StringComparison.Ordinal))
            throw new FaceApiWeightsException($"'{tarball}' has integrity {actual}, expected {Integrity} ({PackageName}@{Version}); the file is corrupt or another version.");
    }

    /// <summary>The npm-style integrity string (<c>sha512-</c> + base64) of a file.</summary>
    public static string ComputeIntegrity(string path)
    {
        using var fs = File.OpenRead(path);
        return "sha512-" + Convert.ToBase64String(SHA512.HashData(fs));
    }

    private static bool IntegrityMatches(string tarball) => string.Equals(ComputeIntegrity(tarball), Integrity, StringComparison.Ordinal);

    private static string Sha256File(string path)
    {
        using var fs = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(fs));
    }

    private static void NpmPack(string cache, string npm, CancellationToken ct)
    {
        var psi = new ProcessStartInfo(npm)
        {
            WorkingDirectory = cache,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // The tarball lands in the working directory (every npm version); no registry address is given: npm uses the user's.
        foreach (var a in new[] { "pack", $"{PackageName}@{Version}", "--json" }) psi.ArgumentList.Add(a);
        Process? p;
        try
        {
            p = Process.Start(psi);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new FaceApiWeightsException($"could not run '{npm}' (is Node.js/npm installed and on PATH?). Alternatively pass a downloaded {TarballName} as TarballPath.", e);
        }
        if (p is null) throw new FaceApiWeightsException($"could not start '{npm}'.");
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync(ct);
            var stderr = p.StandardError.ReadToEndAsync(ct);
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(10);
            while (!p.WaitForExit(200))
            {
                if (ct.IsCancellationRequested || DateTime.UtcNow > deadline)
                {
                    p.Kill(entireProcessTree: true);
                    ct.ThrowIfCancellationRequested();
                    throw new FaceApiWeightsException($"'{npm} pack {PackageName}@{Version}' did not finish within 10 minutes.");
                }
            }
            p.WaitForExit();
            string err = stderr.GetAwaiter().GetResult(), outp = stdout.GetAwaiter().GetResult();
            if (p.ExitCode != 0)
                throw new FaceApiWeightsException($"'{npm} pack {PackageName}@{Version}' failed with exit code {p.ExitCode}: {Tail(err)}");
            // npm reports the integrity it saw; a mismatch with the pin is reported before we even hash the file.
            try
            {
                using var doc = JsonDocument.Parse(outp);
                if (doc.RootElement.ValueKind == JsonValueKind.Array && doc.RootElement.GetArrayLength() > 0
                    && doc.RootElement[0].TryGetProperty("integrity", out var integ) && integ.GetString() is string reported
                    && reported != Integrity)
                    throw new FaceApiWeightsException($"npm reports integrity {reported} for {PackageName}@{Version}, expected {Integrity}.");
            }
            catch (JsonException)
            {
                // Older npm clients print only the file name; the file hash below is the real check.
            }
        }
        if (!File.Exists(Path.Combine(cache, TarballName)))
            throw new FaceApiWeightsException($"'{npm} pack' succeeded but {TarballName} is not in {cache}.");
    }

    private static string Tail(string s) => s.Length <= 2000 ? s.Trim() : s[^2000..].Trim();

    /// <summary>Extracts <c>package/model/*</c> (regular files only, flat names) into <paramref name="modelDir"/>.</summary>
    private static void Extract(string tarball, string modelDir)
    {
        string tmp = modelDir + ".tmp-" + Environment.ProcessId;
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        Directory.CreateDirectory(tmp);
        try
        {
            using (var fs = File.OpenRead(tarball))
            using (var gz = new GZipStream(fs, CompressionMode.Decompress))
            using (var tar = new TarReader(gz))
            {
                TarEntry? e;
                while ((e = tar.GetNextEntry()) is not null)
                {
                    if (e.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
                    const string prefix = "package/model/";
                    if (!e.Name.StartsWith(prefix, StringComparison.Ordinal)) continue;
                    string name = e.Name[prefix.Length..];
                    if (name.Length == 0 || name != Path.GetFileName(name) || name.StartsWith('.')) continue;
                    if (!(name.EndsWith(".bin", StringComparison.Ordinal) || name.EndsWith(".json", StringComparison.Ordinal))) continue;
                    if (e.Length > 64L << 20) throw new FaceApiWeightsException($"'{tarball}': {e.Name} is {e.Length} bytes, more than any face-api model.");
                    e.ExtractToFile(Path.Combine(tmp, name), overwrite: true);
                }
            }
            if (Directory.Exists(modelDir)) Directory.Delete(modelDir, true);
            Directory.CreateDirectory(Path.GetDirectoryName(modelDir)!);
            Directory.Move(tmp, modelDir);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or FormatException)
        {
            throw new FaceApiWeightsException($"'{tarball}' is not a valid .tgz: {e.Message}", e);
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    private static FileStream AcquireLock(string path, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(15);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                ct.ThrowIfCancellationRequested();
                Thread.Sleep(200);
            }
        }
    }
}

/// <summary>Where <see cref="FaceApiWeights"/> caches and how it fetches.</summary>
public sealed record FaceApiWeightsOptions
{
    /// <summary>The cache folder (default <see cref="FaceApiWeights.DefaultCacheDirectory"/>).</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>A tarball the user downloaded (<c>npm pack @vladmandic/face-api@1.7.15</c>); used instead of npm.</summary>
    public string? TarballPath { get; init; }

    /// <summary>The npm client to run (default "npm" on PATH).</summary>
    public string NpmExecutable { get; init; } = "npm";
}

/// <summary>The face-api weights could not be obtained or verified.</summary>
public sealed class FaceApiWeightsException : Exception
{
    /// <summary>Creates the exception.</summary>
    public FaceApiWeightsException(string message, Exception? inner = null) : base(message, inner) { }
}
