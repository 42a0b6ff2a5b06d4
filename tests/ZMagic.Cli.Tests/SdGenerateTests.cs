using TorchSharp;
using ZMagic.Cli;
using ZMagic.Core.IO;
using ZMagic.Encoders.Vgg;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Cli.Tests;

/// <summary>`zmagic generate --preset sd15` on a tiny pipeline written in the real diffusers folder layout.</summary>
[Trait("Category", "Slow")]
public sealed class SdGenerateTests : IDisposable
{
    private readonly string _root = CliRunner.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private string Model() => TinySdFolder.Create(Path.Combine(_root, "model"));

    private string Vgg()
    {
        var path = Path.Combine(_root, "vgg16.safetensors");
        using var vgg = new VggFeatures(VggKind.Vgg16);
        FormulaWeights.Apply(vgg);
        SafeTensors.Save(path, vgg.state_dict());
        return path;
    }

    private string Png(string name)
    {
        var path = Path.Combine(_root, name);
        using var img = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32);
        CliImages.WriteGrid(img, path, 1, gap: 0);
        return path;
    }

    [Theory]
    [InlineData("zmagic")]
    [InlineData("vanilla")]
    public void PromptStyleAndContentWriteImagesAndTrace(string method)
    {
        var outDir = Path.Combine(_root, "out-" + method);
        var (code, stdout, stderr) = CliRunner.Run("generate", "--preset", "sd15", "--model", Model(), "--prompt", "cat wearing glasses",
            "--style", Png("style.png"), "--content", Png("content.png"), "--vgg", Vgg(), "--method", method,
            "--steps", "4", "--cfg", "5", "--size", "32", "--out", outDir, "--quiet");
        Assert.True(code == ExitCodes.Ok, $"exit {code}: {stderr}");
        Assert.Contains("Wrote 1 image", stdout);
        Assert.True(File.Exists(Path.Combine(outDir, "sample_000.png")));
        var csv = File.ReadAllText(Path.Combine(outDir, "trace.csv"));
        Assert.Contains(",style,", csv);
        Assert.Contains(",content,", csv);
    }

    [Fact]
    public void MissingModelFolderIsAnInputError()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--preset", "sd15", "--model", Path.Combine(_root, "nope"), "--prompt", "a cat", "--quiet");
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("nope", stderr);
    }

    [Fact]
    public void StyleWithoutVggIsAUsageError()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--preset", "sd15", "--model", _root, "--prompt", "a cat", "--style", "x.png");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--vgg", stderr);
    }

    [Fact]
    public void OverLongPromptIsAClearErrorAndWritesNoImage()
    {
        var outDir = Path.Combine(_root, "out-long");
        var (code, _, stderr) = CliRunner.Run("generate", "--preset", "sd15", "--model", Model(), "--prompt", string.Join(" ", Enumerable.Repeat("cat", 80)),
            "--steps", "2", "--size", "32", "--out", outDir, "--quiet");
        Assert.Equal(ExitCodes.Usage, code); // found from the tokenizer alone, before the model is loaded
        Assert.Contains("too long", stderr);
        Assert.Contains("--prompt", stderr);
        Assert.False(File.Exists(Path.Combine(outDir, "sample_000.png")));
    }
}
