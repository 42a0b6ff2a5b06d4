using System.Text.Json;
using TorchSharp;
using ZMagic.Cli;
using ZMagic.Core.IO;
using ZMagic.Encoders.Face;
using ZMagic.Models.Ddpm;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Cli.Tests;

/// <summary>
/// `zmagic generate --recipe face-id-landmarks --weights celeba_hq.ckpt --identity ref.png --landmarks ref.png` on
/// random weights of the full networks, written under their published names in the real formats: the CelebA-HQ 256
/// DDPM (455 MB), ArcFace IR-SE50 (.pth zip pickle) and MobileFaceNet (.pth.tar with a state_dict wrapper).
/// </summary>
[Trait("Category", "Slow")]
public sealed class RecipeCliTests : TempFolderTests
{
    private void WriteModels()
    {
        using var scope = NewDisposeScope();
        torch.random.manual_seed(5);
        using (var unet = DdpmUNetConfig.CelebAHq.CreateModule())
            SafeTensors.Save(Path.Combine(Root, "celeba_hq.ckpt"), unet.state_dict());
        using (var arc = new IrSeBackbone(112, 50, IrMode.IrSe, 0.6, true))
            Write("model_ir_se50.pth", PtWriter.Build(arc.state_dict()));
        using (var lm = new MobileFaceNet(136))
            Write("mobilefacenet_model_best.pth.tar", PtWriter.Build(lm.state_dict(), wrapper: "state_dict"));
        var face = (torch.rand(1, 3, 256, 256, generator: new Generator(3)) * 2 - 1);
        CliImages.WriteGrid(face, Path.Combine(Root, "ref.png"), 1, gap: 0);
    }

    [Fact]
    public void TheFaceIdLandmarksRecipeRunsOneStepOnTheFullNetworks()
    {
        WriteModels();
        string out_ = Path.Combine(Root, "out");
        // The command, plus one step: with one step the only timestep is t = 0, below the recipe's stop (200),
        // so --stop -1 keeps both conditions on for that step.
        var (code, stdout, stderr) = CliRunner.Run("generate", "--recipe", "face-id-landmarks", "--weights", Path.Combine(Root, "celeba_hq.ckpt"),
            "--identity", Path.Combine(Root, "ref.png"), "--landmarks", Path.Combine(Root, "ref.png"),
            "--steps", "1", "--stop", "-1", "--threads", "1", "--out", out_);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("Wrote 1 images", stdout);
        Assert.Contains("Recipe face-id-landmarks: 1 steps, freedom-eta(0.5)", stderr);
        Assert.True(File.Exists(Path.Combine(out_, "sample_000.png")));
        using var trace = JsonDocument.Parse(File.ReadAllText(Path.Combine(out_, "trace.json")));
        var text = trace.RootElement.GetRawText();
        Assert.Contains("\"identity\"", text);
        Assert.Contains("\"landmarks\"", text);
        Assert.Contains("cagrad", text);
    }

    [Fact]
    public void ConditionFlagsWithoutARecipeReachTheFaceAttributes()
    {
        // No --recipe: --identity then the face-api attributes (random weights of every network), one step at t = 0.
        string image = Path.Combine(Root, "ref.png");
        CliImages.WriteGrid(torch.rand(1, 3, 256, 256, generator: new Generator(6)) * 2 - 1, image, 1, gap: 0);
        string out_ = Path.Combine(Root, "attr-out");
        var (code, _, stderr) = CliRunner.Run("generate", "--random-weights", "--identity", image, "--age", "30", "--gender", "female",
            "--expression", "happy", "--steps", "1", "--stop", "-1", "--threads", "1", "--out", out_);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("conditions identity, age, gender, expression", stderr);
        var trace = File.ReadAllText(Path.Combine(out_, "trace.json"));
        foreach (var name in new[] { "identity", "age", "gender", "expression" }) Assert.Contains($"\"{name}\"", trace);
    }

    [Fact]
    public void TheSdTextStyleContentRecipeRunsOnATinyPipeline()
    {
        string model = TinySdFolder.Create(Path.Combine(Root, "model"));
        string vgg = Path.Combine(Root, "vgg16.safetensors");
        using (var net = new ZMagic.Encoders.Vgg.VggFeatures(ZMagic.Encoders.Vgg.VggKind.Vgg16))
        {
            FormulaWeights.Apply(net);
            SafeTensors.Save(vgg, net.state_dict());
        }
        string image = Path.Combine(Root, "ref.png");
        CliImages.WriteGrid(torch.rand(1, 3, 32, 32, generator: new Generator(4)) * 2 - 1, image, 1, gap: 0);
        string out_ = Path.Combine(Root, "sd-out");
        var (code, stdout, stderr) = CliRunner.Run("generate", "--recipe", "sd-text-style-content", "--model", model, "--vgg", vgg,
            "--text", "a cat wearing glasses.", "--style", image, "--content", image, "--steps", "3", "--size", "32", "--research-parity", "--out", out_);
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("Recipe sd-text-style-content: 3 steps, CFG 5, ddpm-posterior", stderr);
        Assert.True(File.Exists(Path.Combine(out_, "sample_000.png")));
        var trace = File.ReadAllText(Path.Combine(out_, "trace.json"));
        Assert.Contains("\"content\"", trace);
        Assert.Contains("\"style\"", trace);
    }
}

/// <summary>The recipe command line's checks, which all run before any network is loaded.</summary>
public sealed class RecipeUsageTests : TempFolderTests
{
    private string Ref()
    {
        string path = Path.Combine(Root, "ref.png");
        if (!File.Exists(path)) CliImages.WriteGrid(torch.zeros(1, 3, 8, 8), path, 1, gap: 0);
        return path;
    }

    [Fact]
    public void HelpListsEveryRecipe()
    {
        var (code, stdout, _) = CliRunner.Run("generate", "--recipe", "face-id-landmarks", "--help");
        Assert.Equal(0, code);
        foreach (var r in ZMagic.Guidance.Recipes.RecipeCatalog.All) Assert.Contains(r.Name, stdout);
        Assert.Contains("--research-parity", stdout);
    }

    [Fact]
    public void UnknownRecipeIsAUsageError()
    {
        var (code, _, err) = CliRunner.Run("generate", "--recipe", "nope", "--random-weights");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("face-id-landmarks", err);
    }

    [Fact]
    public void AMissingReferenceIsNamed()
    {
        var (code, _, err) = CliRunner.Run("generate", "--recipe", "face-id-landmarks", "--random-weights", "--identity", Ref(), "--out", Path.Combine(Root, "o"));
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--landmarks", err);
    }

    [Fact]
    public void AConditionTheRecipeLacksIsRefused()
    {
        var (code, _, err) = CliRunner.Run("generate", "--recipe", "face-id-landmarks", "--random-weights", "--identity", Ref(), "--landmarks", Ref(),
            "--parsing", Ref(), "--out", Path.Combine(Root, "o"));
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("has no parsing condition", err);
    }

    [Fact]
    public void AMissingConditionNetworkIsAnInputErrorNamingItsFlag()
    {
        // celeba_hq.ckpt is never read: the condition networks are looked up first, next to it.
        File.WriteAllBytes(Path.Combine(Root, "celeba_hq.ckpt"), [1, 2, 3]);
        var (code, _, err) = CliRunner.Run("generate", "--recipe", "face-id-landmarks", "--weights", Path.Combine(Root, "celeba_hq.ckpt"),
            "--identity", Ref(), "--landmarks", Ref(), "--out", Path.Combine(Root, "o"));
        Assert.Equal(ExitCodes.Input, code);
        Assert.Contains("--arcface", err);
        Assert.Contains("model_ir_se50.pth", err);
    }

    [Fact]
    public void StableDiffusionRecipesNeedAModelFolder()
    {
        var (code, _, err) = CliRunner.Run("generate", "--recipe", "sd-text-style", "--text", "a cat", "--style", Ref());
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--model", err);
    }

    [Fact]
    public void ConditionFlagsWithoutARecipeBuildOne()
    {
        // No weights: the runner says so (exit 2) after accepting --identity as a condition.
        var (code, _, err) = CliRunner.Run("generate", "--identity", Ref(), "--age", "30");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("needs --weights", err);
    }
}
