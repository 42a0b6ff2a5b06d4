using ZMagic.Guidance.Digits;
using ZMagic.Models.Ddpm;
using TorchSharp;

namespace ZMagic.Cli.Tests;

public class ModelsTests
{
    [Fact]
    public void Models_ListsPresetsAndConditions()
    {
        var (code, stdout, _) = CliRunner.Run("models");
        Assert.Equal(0, code);
        Assert.Contains("digits", stdout);
        Assert.Contains("celeba-hq-ddpm", stdout);
        Assert.Contains("thickness:ink=", stdout);
    }

    [Fact]
    public void ModelsCheck_FittingFile_ExitsZero_MismatchedFile_ExitsNonZeroWithReason()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string good = Path.Combine(dir, "good.safetensors"), bad = Path.Combine(dir, "bad.safetensors");
            using (var net = new DdpmDenoiser(DigitsModels.PriorConfig)) DigitsWeights.SaveHalf(net.Module, good);
            using (var net = new DdpmDenoiser(DigitsModels.PriorConfig with { NumResBlocks = 2 })) DigitsWeights.SaveHalf(net.Module, bad);
            var ok = CliRunner.Run("models", "check", "--preset", "digits", good);
            Assert.True(ok.Code == 0, ok.Err);
            Assert.Contains("OK", ok.Out);
            var no = CliRunner.Run("models", "check", "--preset", "digits", bad);
            Assert.Equal(ExitCodes.Input, no.Code);
            Assert.Contains("unexpected key '", no.Err);
            Assert.Contains(".block.1.", no.Err);
            var other = CliRunner.Run("models", "check", "--preset", "celeba-hq-ddpm", good);
            Assert.Equal(ExitCodes.Input, other.Code);
            Assert.Contains("missing key", other.Err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ModelsCheck_BadInputs()
    {
        var dir = CliRunner.TempDir();
        try
        {
            Assert.Equal(ExitCodes.Usage, CliRunner.Run("models", "check", "--preset", "nope", "x.safetensors").Code);
            Assert.Equal(ExitCodes.Usage, CliRunner.Run("models", "check", "x.safetensors").Code);
            var missing = CliRunner.Run("models", "check", "--preset", "digits", Path.Combine(dir, "missing.safetensors"));
            Assert.Equal(ExitCodes.Input, missing.Code);
            Assert.Contains("does not exist", missing.Err);
            string junk = Path.Combine(dir, "junk.safetensors");
            File.WriteAllBytes(junk, new byte[] { 1, 2, 3 });
            var j = CliRunner.Run("models", "check", "--preset", "digits", junk);
            Assert.Equal(ExitCodes.Input, j.Code);
            Assert.Contains("junk.safetensors", j.Err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Help_And_UnknownCommand()
    {
        Assert.Equal(0, CliRunner.Run("--help").Code);
        foreach (var c in new[] { "demo", "generate", "models", "train" })
        {
            var (code, stdout, _) = CliRunner.Run(c, "--help");
            Assert.Equal(0, code);
            // System.CommandLine's help: "Usage:" then the command line on the next line.
            Assert.Contains($"Usage:{Environment.NewLine}  {System.CommandLine.RootCommand.ExecutableName} {c} ", stdout);
            Assert.Contains("xample", stdout);
        }
        var u = CliRunner.Run("frobnicate");
        Assert.Equal(ExitCodes.Usage, u.Code);
        Assert.Contains("Unknown command", u.Err);
    }
}
