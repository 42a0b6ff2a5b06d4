using ZMagic.TestSupport;

namespace ZMagic.Models.Tests;

internal static class TestPaths
{
    public static string DdpmTinyWeights => Path.Combine(Golden.Root, "zmagic_steps", "weights.safetensors");
    public static string DdpmTinyCase => Path.Combine(Golden.Root, "zmagic_steps", "denoiser_forward");
    public static string AdmTinyCase => Path.Combine(Golden.Root, "guided_unet", "tiny_seed1234");
    public static string AdmTinyWeights => Path.Combine(AdmTinyCase, "weights.safetensors");
    public static string AdmTinyPt => Path.Combine(AdmTinyCase, "weights.pt");

    /// <summary>A fresh temporary directory, deleted on dispose.</summary>
    public sealed class TempDir : IDisposable
    {
        public TempDir()
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "zmagic-models-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(Path);
        }

        public string Path { get; }

        public string File(string name) => System.IO.Path.Combine(Path, name);

        public void Dispose()
        {
            try { Directory.Delete(Path, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
