using ZMagic.Core.IO;
using ZMagic.Encoders.FaceApi;

namespace ZMagic.Encoders.Tests.FaceApi;

/// <summary>Integrity and cache handling of the npm-packed weights (uses the tarball the fixture fetched).</summary>
[Collection(FaceApiCollection.Name)]
[Trait("Category", "Slow")]
public sealed class FaceApiWeightsTests(FaceApiFixture nets) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("zmagic-faceapi-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static string CachedTarball()
    {
        string t = Path.Combine(FaceApiWeights.DefaultCacheDirectory(), FaceApiWeights.TarballName);
        Assert.True(File.Exists(t), $"the fixture should have left {t}");
        return t;
    }

    [Fact]
    public void Fixture_ModelDirectory_IsVerified()
    {
        Assert.Null(FaceApiWeights.VerifyModelDirectory(nets.ModelDirectory));
        Assert.Equal(FaceApiWeights.Integrity, FaceApiWeights.ComputeIntegrity(CachedTarball()));
    }

    [Fact]
    public void UserTarball_IsExtracted_AndCorruptCacheIsRebuilt()
    {
        var cache = Path.Combine(_dir, "cache");
        var opts = new FaceApiWeightsOptions { CacheDirectory = cache, TarballPath = CachedTarball(), NpmExecutable = "/nonexistent/npm" };
        string dir = FaceApiWeights.EnsureModelDirectory(opts);
        Assert.Null(FaceApiWeights.VerifyModelDirectory(dir));
        // Corrupt one byte of a weights file: detected by checksum and rebuilt from the tarball.
        string bin = Path.Combine(dir, "face_landmark_68_model.bin");
        var bytes = File.ReadAllBytes(bin);
        bytes[1000] ^= 0x5A;
        File.WriteAllBytes(bin, bytes);
        Assert.Contains("face_landmark_68_model.bin", FaceApiWeights.VerifyModelDirectory(dir));
        Assert.Equal(dir, FaceApiWeights.EnsureModelDirectory(opts));
        Assert.Null(FaceApiWeights.VerifyModelDirectory(dir));
        // A deleted file too.
        File.Delete(Path.Combine(dir, "age_gender_model-weights_manifest.json"));
        FaceApiWeights.EnsureModelDirectory(opts);
        Assert.Null(FaceApiWeights.VerifyModelDirectory(dir));
    }

    [Fact]
    public void TamperedTarball_IsRefused()
    {
        var bad = Path.Combine(_dir, FaceApiWeights.TarballName);
        var bytes = File.ReadAllBytes(CachedTarball());
        bytes[^100] ^= 0x01;
        File.WriteAllBytes(bad, bytes);
        var e = Assert.Throws<FaceApiWeightsException>(() =>
            FaceApiWeights.EnsureModelDirectory(new FaceApiWeightsOptions { CacheDirectory = Path.Combine(_dir, "c"), TarballPath = bad }));
        Assert.Contains("integrity", e.Message);
        Assert.Contains(FaceApiWeights.Integrity, e.Message);
    }

    [Fact]
    public void MissingTarball_AndMissingNpm_ClearErrors()
    {
        var e1 = Assert.Throws<FaceApiWeightsException>(() => FaceApiWeights.EnsureModelDirectory(
            new FaceApiWeightsOptions { CacheDirectory = Path.Combine(_dir, "c1"), TarballPath = Path.Combine(_dir, "none.tgz") }));
        Assert.Contains("does not exist", e1.Message);
        var e2 = Assert.Throws<FaceApiWeightsException>(() => FaceApiWeights.EnsureModelDirectory(
            new FaceApiWeightsOptions { CacheDirectory = Path.Combine(_dir, "c2"), NpmExecutable = "/nonexistent/npm" }));
        Assert.Contains("npm", e2.Message);
    }

    [Fact]
    public void WrongNetworksWeights_ClearError()
    {
        using var net = new AgeGenderNet();
        var manifest = Path.Combine(nets.ModelDirectory, "face_landmark_68_model-weights_manifest.json");
        var e = Assert.Throws<CheckpointFormatException>(() => net.LoadWeights(TfjsWeights.Load(manifest), manifest));
        Assert.Contains("does not fit AgeGenderNet", e.Message);
        Assert.Contains("missing 'entry_flow/conv_in/filters'", e.Message);
        Assert.Contains("unexpected 'dense0/conv0/filters'", e.Message);
    }

    [Fact]
    public void CorruptShard_ClearError()
    {
        foreach (var f in Directory.GetFiles(nets.ModelDirectory, "face_expression_model*")) File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
        var bin = Path.Combine(_dir, "face_expression_model.bin");
        File.WriteAllBytes(bin, File.ReadAllBytes(bin)[..^7]);
        using var net = new FaceExpressionNet();
        var e = Assert.Throws<CheckpointFormatException>(() => net.LoadWeights(_dir));
        Assert.Contains("hold 329461 bytes, the manifest's tensors need 329468", e.Message);
    }
}
