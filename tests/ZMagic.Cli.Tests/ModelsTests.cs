using ZMagic.Demo.Digits;
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
        Assert.Contains("thickness:ink=", stdout);
        // One table: every preset of the library under the library's name, the embedded digits prior and sd15.
        foreach (var name in ZMagic.Models.BackbonePresets.Names.Append("digits").Append("sd15"))
            Assert.Contains(Environment.NewLine + "  " + name + " ", stdout);
        Assert.Contains("adm-256-uncond", stdout);
        Assert.Contains("aliases: celeba-hq-ddpm = celebahq-ddpm, ddpm-digits32 = digits32-ddpm", stdout);
    }

    [Fact]
    public void Presets_AcceptTheOldCliNamesAndExplainSd15()
    {
        Assert.Equal("celebahq-ddpm", Presets.Get("celeba-hq-ddpm").Name);
        Assert.Equal("digits32-ddpm", Presets.Get("DDPM-DIGITS32").Name);
        var adm = Presets.Get("adm-256-uncond");
        Assert.Equal((3, 256), (adm.Channels, adm.Size));
        Assert.Contains("--model DIR", Assert.Throws<UsageException>(() => Presets.Get("sd15")).Message);
        var unknown = Assert.Throws<UsageException>(() => Presets.Get("nope")).Message;
        Assert.Contains("adm-256-uncond", unknown);
        Assert.Contains("sd15", unknown);
    }

    [Fact]
    public void ModelsCheck_FittingFile_ExitsZero_MismatchedFile_ExitsNonZeroWithReason()
    {
        var dir = CliRunner.TempDir();
        try
        {
            string good = Path.Combine(dir, "good.safetensors"), bad = Path.Combine(dir, "bad.safetensors");
            using (var net = new DdpmDenoiser(DigitsModels.PriorConfig)) DigitsWeights.SaveHalf(net.Module, good);
            // A fourth level: the digits preset takes any width and depth, not another number of levels.
            using (var net = new DdpmDenoiser(DigitsModels.PriorConfig with { ChMult = [1, 2, 2, 2] })) DigitsWeights.SaveHalf(net.Module, bad);
            var ok = CliRunner.Run("models", "check", "--preset", "digits", good);
            Assert.True(ok.Code == 0, ok.Err);
            Assert.Contains("OK", ok.Out);
            var no = CliRunner.Run("models", "check", "--preset", "digits", bad);
            Assert.Equal(ExitCodes.Input, no.Code);
            Assert.Contains("unexpected key '", no.Err);
            Assert.Contains("'down.3.", no.Err);
            var other = CliRunner.Run("models", "check", "--preset", "celebahq-ddpm", good);
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
