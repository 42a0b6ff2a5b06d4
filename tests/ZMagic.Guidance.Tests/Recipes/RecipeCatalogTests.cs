using System.Globalization;
using System.Text.RegularExpressions;
using Xunit.Abstractions;
using ZMagic.Core.Guidance;
using ZMagic.Guidance.Recipes;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.Recipes;

public partial class RecipeCatalogTests(ITestOutputHelper log)
{
    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ZMagic.sln"))) return dir.FullName;
        throw new InvalidOperationException("ZMagic.sln not found above the test assembly.");
    }

    [Fact]
    public void NamesAreUniqueAndEveryRecipeCitesItsSource()
    {
        Assert.Equal(RecipeCatalog.All.Count, RecipeCatalog.All.Select(r => r.Name).Distinct().Count());
        foreach (var r in RecipeCatalog.All)
        {
            Assert.Contains(RecipeCatalog.ResearchRepository, r.Source);
            Assert.Matches(@"lines? \d+", r.Source);
            Assert.False(string.IsNullOrWhiteSpace(r.Command));
            Assert.NotEmpty(r.Conditions);
            Assert.All(r.Conditions, c => Assert.False(string.IsNullOrWhiteSpace(c.Source)));
            Assert.Same(r, RecipeCatalog.Get(r.Name.ToUpperInvariant()));
        }
        Assert.Contains("face-id-landmarks", Assert.Throws<ArgumentException>(() => RecipeCatalog.Get("nope")).Message);
    }

    /// <summary>The settings the issue asks for, as the research code runs them.</summary>
    [Fact]
    public void TheRecipesCarryTheResearchCodesSettings()
    {
        foreach (var r in RecipeCatalog.All.Where(r => r.Backbone == RecipeBackbone.CelebAHqDdpm))
        {
            Assert.Equal(100, r.Steps);
            Assert.All(r.Conditions.Where(c => c.Kind != RecipeConditionKind.Text), c => Assert.Equal(200, c.Window.Stop));
        }
        var idLm = RecipeCatalog.FaceIdLandmarks;
        Assert.Equal(RecipeSamplerStep.FreeDoMEta, idLm.SamplerStep);
        Assert.Equal([RecipeConditionKind.Identity, RecipeConditionKind.Landmarks], idLm.Conditions.Select(c => c.Kind));
        Assert.Equal([100.0, 500.0], idLm.Conditions.Select(c => c.Scale));
        Assert.Equal(0.1, RecipeCatalog.FaceTextParsing.Condition(RecipeConditionKind.Parsing)!.Scale);
        Assert.Equal(RecipeSamplerStep.DdpmPosterior, RecipeCatalog.FaceTextParsingIdentity.SamplerStep);
        Assert.Equal([0.02, 0.2, 100.0], RecipeCatalog.FaceTextParsingIdentity.Conditions.Select(c => c.Scale));
        var sd = RecipeCatalog.SdTextStyle;
        Assert.Equal(5.0, sd.Cfg);
        Assert.Equal(new GuidanceWindow(Stop: 300), sd.Condition(RecipeConditionKind.Style)!.Window);
        Assert.Equal(3, sd.TimeTravel!.Repeats);
        Assert.Equal(RecipeSamplerStep.DdpmPosterior, sd.SamplerStep);
    }

    [Fact]
    public void OverridesChangeOnlyWhatTheyName()
    {
        var r = RecipeGuidance.Apply(RecipeCatalog.FaceIdLandmarks, new RecipeOverrides
        {
            Steps = 50, Stop = 300, Scales = new Dictionary<RecipeConditionKind, double> { [RecipeConditionKind.Landmarks] = 250 },
        });
        Assert.Equal(50, r.Steps);
        Assert.Equal([100.0, 250.0], r.Conditions.Select(c => c.Scale));
        Assert.All(r.Conditions, c => Assert.Equal(300, c.Window.Stop));
        Assert.Equal(RecipeCatalog.FaceIdLandmarks.SamplerStep, r.SamplerStep);
        // Text has no stop: a --stop leaves it always on.
        var t = RecipeGuidance.Apply(RecipeCatalog.FaceTextParsing, new RecipeOverrides { Stop = 0 });
        Assert.Equal(GuidanceWindow.Always, t.Condition(RecipeConditionKind.Text)!.Window);
        Assert.Throws<ArgumentException>(() => RecipeGuidance.Apply(RecipeCatalog.FaceIdLandmarks,
            new RecipeOverrides { Scales = new Dictionary<RecipeConditionKind, double> { [RecipeConditionKind.Text] = 1 } }));
        var sum = RecipeGuidance.Combiner(r, GuidanceParity.Library, cagrad: false);
        Assert.Same(SumCombiner.Instance, sum);
        var research = Assert.IsType<CAGradCombiner>(RecipeGuidance.Combiner(r, GuidanceParity.ResearchCode));
        Assert.Equal(CAGradVariant.ResearchCode, research.Options.Variant);
        Assert.True(research.Options.PerChannel);
        var strategy = Assert.IsType<ZMagicStrategy>(RecipeGuidance.Strategy(r, GuidanceParity.ResearchCode));
        Assert.Equal(ZMagicUpdateRule.ResearchCode, strategy.Options.UpdateRule);
    }

    /// <summary>
    /// docs/recipes.md has one table row per recipe with its steps, sampler step, CFG, time travel and, per condition,
    /// scale, rule and window; they must equal the catalog's. Row: | name | backbone | steps | step | cfg | time travel | conditions | source |.
    /// </summary>
    [Fact]
    public void DocsListEveryRecipeWithTheCatalogsSettings()
    {
        var text = File.ReadAllText(Path.Combine(RepoRoot(), "docs", "recipes.md"));
        var rows = text.Split('\n').Where(l => l.StartsWith("| `", StringComparison.Ordinal)).ToList();
        foreach (var r in RecipeCatalog.All)
        {
            var row = rows.SingleOrDefault(l => l.StartsWith($"| `{r.Name}` |", StringComparison.Ordinal));
            Assert.True(row is not null, $"docs/recipes.md has no table row for {r.Name}");
            var cells = row!.Split('|').Select(c => c.Trim()).ToArray()[1..^1];
            Assert.Equal(8, cells.Length);
            Assert.Equal(r.Steps.ToString(CultureInfo.InvariantCulture), cells[2]);
            Assert.Equal(StepName(r.SamplerStep), cells[3]);
            Assert.Equal(r.Cfg is double cfg ? cfg.ToString("0.###", CultureInfo.InvariantCulture) : "-", cells[4]);
            Assert.Equal(r.TimeTravel is { } tt ? $"{tt.Repeats}x, every step" : "-", cells[5]);
            Assert.Equal(string.Join("; ", r.Conditions.Select(Describe)), cells[6]);
            Assert.Contains(r.Source.Split(' ')[1], cells[7]); // the file
        }
        Assert.Equal(RecipeCatalog.All.Count, rows.Count(l => Regex.IsMatch(l, @"^\| `[a-z-]+` \|")));
        // Every recipe has its own section with the research command line.
        foreach (var r in RecipeCatalog.All) Assert.Contains($"### {r.Name}", text);
    }

    private static string StepName(RecipeSamplerStep s) => s switch
    {
        RecipeSamplerStep.FreeDoMEta => "FreeDoM eta 0.5",
        RecipeSamplerStep.DdpmPosterior => "DDPM posterior",
        _ => "DDIM",
    };

    private static string Describe(RecipeCondition c)
    {
        string rule = c.Rule switch
        {
            RecipeStepRule.SqrtAlphaBar => "sqrt(abar)",
            RecipeStepRule.NormRelative => "norm-relative",
            _ => "CFG-relative",
        };
        string window = c.Window == GuidanceWindow.Always ? "always"
            : c.Window.Start == int.MaxValue ? $"t > {c.Window.Stop}"
            : c.Window.Stop <= 0 ? $"t <= {c.Window.Start}" : $"{c.Window.Stop} < t <= {c.Window.Start}";
        return $"{c.Kind.ToString().ToLowerInvariant()} {c.Scale.ToString("0.###", CultureInfo.InvariantCulture)} {rule} {window}";
    }

    /// <summary>
    /// How long the library's Z-Magic update is next to the research code's at the same scales, for the task gradients
    /// of one step (the rules of ZMagicStrategy: replacement <c>u</c> against <c>2 sum D + u_research</c>). The figures
    /// go into docs/recipes.md.
    /// </summary>
    [Theory]
    [InlineData(2, "agreeing")]
    [InlineData(2, "random")]
    [InlineData(2, "conflicting")]
    [InlineData(3, "agreeing")]
    [InlineData(3, "random")]
    [InlineData(3, "conflicting")]
    public void TheLibrarysDefaultUpdateIsAbout40PercentOfTheResearchCodes(int k, string kind)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(17);
        var shared = randn([1, 3, 32, 32], generator: gen);
        var tasks = Enumerable.Range(0, k).Select(i => kind switch
        {
            "agreeing" => shared * (1 + 0.1 * i),
            "random" => randn([1, 3, 32, 32], generator: gen),
            _ => (i % 2 == 0 ? shared : -0.6 * shared) + 0.5 * randn([1, 3, 32, 32], generator: gen),
        }).ToList();
        var library = new CAGradCombiner(new CAGradOptions { C = 0.5, PerChannel = true }).Combine(tasks);
        var research = new CAGradCombiner(CAGradOptions.ResearchCode).Combine(tasks);
        for (int i = 0; i < k; i++) research = research + 2 * tasks[i];
        double ratio = library.norm().item<float>() / research.norm().item<float>();
        log.WriteLine($"k={k} {kind}: |library| / |research| = {ratio:F3}");
        if (kind != "conflicting") Assert.InRange(ratio, 0.38, 0.45);
        else Assert.InRange(ratio, 0.1, 0.7);
    }

    /// <summary>
    /// The same figure through a whole sampler step: one guided step of the tiny golden DDPM with two and three
    /// conditions (reference images, FreeDoM's face rule, per-channel CAGrad), library against research parity at the
    /// same seed; the guided displacement from the unguided step is the update.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void AWholeStepShowsTheSameRatio(int k)
    {
        using var scope = NewDisposeScope();
        using var denoiser = ZMagic.Models.Ddpm.DdpmDenoiser.Load(Path.Combine(ZMagic.TestSupport.Golden.Root, "zmagic_steps", "weights.safetensors"), new ZMagic.Models.Ddpm.DdpmUNetConfig
        {
            Ch = 32, OutCh = 3, InChannels = 3, ChMult = [1, 2], NumResBlocks = 1, AttnResolutions = [8],
            Dropout = 0, Resolution = 16, VarType = "fixedlarge",
        });
        var gen = new Generator(23);
        var conditions = Enumerable.Range(0, k).Select(i => (IGuidanceCondition)new ZMagic.Guidance.Conditions.ReferenceImageCondition(
            rand([1, 3, 16, 16], generator: gen) * 2 - 1, new GuidanceSchedule(new SqrtAlphaBarStepSize(0.05)), name: $"ref{i}")).ToList();
        var recipe = RecipeCatalog.FaceIdLandmarks;
        var baseOptions = new ZMagic.Core.Sampling.SamplerOptions { Timesteps = [500], Seed = 5, SamplerStep = new ZMagic.Core.Diffusion.FreeDoMEtaStep(0.5) };
        var sampler = new ZMagic.Core.Sampling.ConditionalSampler(denoiser);
        using var plain = sampler.Sample([], baseOptions);
        Tensor Displacement(GuidanceParity parity)
        {
            // Research parity without branch noise, so that both runs see the same proposal and tasks.
            var strategy = parity == GuidanceParity.Library ? new ZMagicStrategy()
                : new ZMagicStrategy(ZMagicOptions.ResearchCodeParity with { BranchNoise = false });
            using var r = sampler.Sample(conditions, baseOptions with { Strategy = strategy, Combiner = RecipeGuidance.Combiner(recipe, parity) });
            return (r.Images - plain.Images).detach().clone();
        }
        double ratio = Displacement(GuidanceParity.Library).norm().item<float>() / Displacement(GuidanceParity.ResearchCode).norm().item<float>();
        log.WriteLine($"k={k}: whole step |library| / |research| = {ratio:F3}");
        Assert.InRange(ratio, 0.25, 0.45);
    }
}
