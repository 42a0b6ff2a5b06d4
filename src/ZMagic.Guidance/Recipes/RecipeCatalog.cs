using ZMagic.Core.Guidance;

namespace ZMagic.Guidance.Recipes;

/// <summary>
/// The paper's experiments as named recipes, with the settings of the Z-Magic research code (HolmesShuan/FreeDoM, a
/// FreeDoM fork whose commits are tagged "[Magic]", at commit <see cref="ResearchCommit"/>). docs/recipes.md lists
/// the same values with their sources; a test checks that the two agree.
/// </summary>
public static class RecipeCatalog
{
    /// <summary>The research repository.</summary>
    public const string ResearchRepository = "HolmesShuan/FreeDoM";

    /// <summary>The commit of <see cref="ResearchRepository"/> the sources cite.</summary>
    public const string ResearchCommit = "c94329e947da77aaa930983566bd71545e909399";

    private const string Denoising = "Face-GD/functions/denoising.py";
    private const string FaceRun = "Face-GD/run.sh";
    private const string MainPy = "Face-GD/main.py";

    /// <summary>Face identity then landmarks on the CelebA-HQ DDPM (the paper's ID + landmark experiment).</summary>
    public static Recipe FaceIdLandmarks { get; } = new()
    {
        Name = "face-id-landmarks",
        Description = "CelebA-HQ faces with the identity of one reference and the landmarks of another (identity first, as the paper orders them)",
        Backbone = RecipeBackbone.CelebAHqDdpm,
        Source = $"{ResearchRepository} {Denoising} arcface_land_ddim_diffusion_magic (lines 690-791); {FaceRun} line 11",
        Command = "main.py -i arc_land_ddim_magic -s arc_land_ddim_magic --doc celeba_hq --timesteps 100 --land_rho_scale 500 --id_rho_scale 100 --seed 1234 --stop 200",
        Steps = 100,
        SamplerStep = RecipeSamplerStep.FreeDoMEta,
        Conditions =
        [
            new(RecipeConditionKind.Identity, 100, RecipeStepRule.SqrtAlphaBar, new GuidanceWindow(Stop: 200),
                $"{FaceRun} line 11 --id_rho_scale 100 --stop 200; {Denoising} lines 739-740 rho = at.sqrt() * rho_scale[0], if not i <= stop"),
            new(RecipeConditionKind.Landmarks, 500, RecipeStepRule.SqrtAlphaBar, new GuidanceWindow(Stop: 200),
                $"{FaceRun} line 11 --land_rho_scale 500 --stop 200; {Denoising} lines 757-759 land_rho = at.sqrt() * rho_scale[1]"),
        ],
        Reported = "ID distance 0.740 -> 0.549, landmark distance 0.195 -> 0.194, FID 134 -> 124 (FreeDoM -> Z-Magic)",
        Notes = "FreeDoM eta step (eta 0.5, denoising.py lines 733-736); CAGrad per channel, 2-task form (lines 765-778).",
    };

    /// <summary>A text prompt and the parsing map of a reference on the CelebA-HQ DDPM.</summary>
    public static Recipe FaceTextParsing { get; } = new()
    {
        Name = "face-text-parsing",
        Description = "CelebA-HQ faces following a text prompt (CLIP) and the parsing map of a reference face (text first)",
        Backbone = RecipeBackbone.CelebAHqDdpm,
        Source = $"{ResearchRepository} {Denoising} clip_parse_ddim_diffusion_magic (lines 328-445); {FaceRun} line 5",
        Command = "main.py -i clip_parse_face_magic -s clip_parse_ddim_magic --doc celeba_hq --timesteps 100 --seg_rho_scale 0.1 --seed 12345 --stop 200 --prompt \"blonde beauty\"",
        Steps = 100,
        SamplerStep = RecipeSamplerStep.DdpmPosterior,
        Conditions =
        [
            new(RecipeConditionKind.Text, 0.02, RecipeStepRule.NormRelative, GuidanceWindow.Always,
                $"{Denoising} lines 380-384 l2 = l1 * 0.02, rho = l2 / rms(norm_grad), applied at every step"),
            new(RecipeConditionKind.Parsing, 0.1, RecipeStepRule.SqrtAlphaBar, new GuidanceWindow(Stop: 200),
                $"{FaceRun} line 5 --seg_rho_scale 0.1 --stop 200; {Denoising} lines 404-405 parse_rho = at.sqrt() * rho_scale[1]"),
        ],
        Notes = "DDPM posterior step (denoising.py lines 374-378); CAGrad per channel, 2-task form (lines 411-424). FreeDoM's own baseline run uses parsing scale 0.2 (run.sh line 2).",
    };

    /// <summary>Text, parsing and identity on the CelebA-HQ DDPM (the paper's three-condition face experiment).</summary>
    public static Recipe FaceTextParsingIdentity { get; } = new()
    {
        Name = "face-text-parsing-identity",
        Description = "CelebA-HQ faces following a text prompt, a reference's parsing map and another reference's identity (text anchors both)",
        Backbone = RecipeBackbone.CelebAHqDdpm,
        Source = $"{ResearchRepository} {Denoising} clip_parse_id_ddim_diffusion_magic (lines 889-1027); {FaceRun} line 17",
        Command = "main.py -i clip_parse_id_ddim_magic -s clip_parse_id_ddim_magic --doc celeba_hq --timesteps 100 --land_rho_scale 500 --id_rho_scale 100 --seed 12345 --stop 200 --prompt \"blonde beauty\"",
        Steps = 100,
        SamplerStep = RecipeSamplerStep.DdpmPosterior,
        Conditions =
        [
            new(RecipeConditionKind.Text, 0.02, RecipeStepRule.NormRelative, GuidanceWindow.Always,
                $"{Denoising} lines 941-946 l2 = l1 * 0.02, applied at every step"),
            new(RecipeConditionKind.Parsing, 0.2, RecipeStepRule.SqrtAlphaBar, new GuidanceWindow(Stop: 200),
                $"{MainPy} line 87 --seg_rho_scale default 0.2 (run.sh line 17 does not set it); {Denoising} lines 981-983 parse_rho = at.sqrt() * rho_scale[1]"),
            new(RecipeConditionKind.Identity, 100, RecipeStepRule.SqrtAlphaBar, new GuidanceWindow(Stop: 200),
                $"{FaceRun} line 17 --id_rho_scale 100 --stop 200; {Denoising} lines 984-985 id_rho = at.sqrt() * rho_scale[2]"),
        ],
        Reported = "FID 136 -> 123, parsing distance 1771 -> 1677, ID distance 0.501 -> 0.475, text distance 0.774 -> 0.769 (FreeDoM -> Z-Magic)",
        Notes = "DDPM posterior step; star chaining, each later condition from its own proposal with its own noise (xt_next_2nd); CAGrad per channel, 3-task form (cagrad_third_order, lines 992-1004).",
    };

    /// <summary>Stable Diffusion: the prompt by classifier-free guidance plus the style of a reference image.</summary>
    public static Recipe SdTextStyle { get; } = new()
    {
        Name = "sd-text-style",
        Description = "Stable Diffusion 1.x: a prompt (CFG 5) in the style of a reference image (VGG Gram matrices)",
        Backbone = RecipeBackbone.StableDiffusion,
        Source = $"{ResearchRepository} SD_style/ldm/models/diffusion/ddim.py p_sample_ddim_magic_conditional (lines 317-443); SD_style/run.sh line 11",
        Command = "txt2img.py --prompt \"a cat wearing glasses.\" --style_ref_img_path ./style_images/1.png --ddim_steps 100 --H 512 --W 512 --scale 5.0 --use_magic --style_start_steps 100 --style_end_steps 30 --repeat 3 --time_reverse_step --style_rho_scale 0.2",
        Steps = 100,
        SamplerStep = RecipeSamplerStep.DdpmPosterior,
        Cfg = 5.0,
        Conditions =
        [
            new(RecipeConditionKind.Style, 0.2, RecipeStepRule.CfgRelative, new GuidanceWindow(Stop: 300),
                "SD_style/run.sh line 11 --style_rho_scale 0.2 --style_start_steps 100 --style_end_steps 30 (DDIM index >= 30, t = 10 index + 1 > 300); ddim.py lines 408-424 rho = ||cfg * correction|| / ||grad||"),
        ],
        TimeTravel = new RecipeTimeTravel(3, 0, 1000),
        PerChannelCAGrad = false,
        Reported = "style loss 10.21 -> 10.14 (FreeDoM -> Z-Magic)",
        Notes = "DDPM posterior step (ddim.py lines 388-392); the prompt is the anchor (the CFG step is the proposal); time travel 3 at every step (--repeat 3 --time_reverse_step, ddim.py lines 356 and 428-429). The research run uses a ControlNet scribble as well, which this library does not have.",
    };

    /// <summary>Stable Diffusion: content of one image in the style of another, with a prompt.</summary>
    public static Recipe SdTextStyleContent { get; } = new()
    {
        Name = "sd-text-style-content",
        Description = "Stable Diffusion 1.x: a prompt (CFG 5), the content of one reference (VGG relu2_2) and the style of another (VGG Gram matrices)",
        Backbone = RecipeBackbone.StableDiffusion,
        Source = $"{ResearchRepository} Content_editing/ldm/models/diffusion/ddim.py p_sample_ddim_magic_dual_conditional (lines 537-843); Content_editing/run.sh line 8",
        Command = "txt2img.py --prompt \"*\" --style_ref_img_path ./bg/bg52.png --content_ref_img_path ./content/catjpg.jpg --ddim_steps 100 --H 384 --W 384 --scale 5.0 --content_start_steps 100 --content_end_steps 0 --style_start_steps 40 --style_end_steps 0 --repeat 3 --time_reverse_step --use_cagrad --style_rho_scale 10.0",
        Steps = 100,
        SamplerStep = RecipeSamplerStep.DdpmPosterior,
        Cfg = 5.0,
        Conditions =
        [
            new(RecipeConditionKind.Content, 1.0, RecipeStepRule.CfgRelative, GuidanceWindow.Always,
                "Content_editing/txt2img.py --content_rho_scale default 1.0; run.sh line 8 --content_start_steps 100 --content_end_steps 0 (every step); ddim.py lines 757-765"),
            new(RecipeConditionKind.Style, 10.0, RecipeStepRule.CfgRelative, new GuidanceWindow(Stop: 0, Start: 400),
                "Content_editing/run.sh line 8 --style_rho_scale 10.0 --style_start_steps 40 --style_end_steps 0 (DDIM index < 40, t <= 391); ddim.py lines 817-825"),
        ],
        TimeTravel = new RecipeTimeTravel(3, 0, 1000),
        PerChannelCAGrad = false,
        Reported = "content loss 1.93 -> 1.82 (FreeDoM -> Z-Magic)",
        Notes = "Commented out in run.sh (the active lines add an inverted background and masks, which this library does not have); CAGrad whole-tensor 2-task form (ddim.py lines 827-831); the style branch draws its own noise (x_prev_2nd, lines 704-710).",
    };

    /// <summary>Every recipe.</summary>
    public static IReadOnlyList<Recipe> All { get; } = [FaceIdLandmarks, FaceTextParsing, FaceTextParsingIdentity, SdTextStyle, SdTextStyleContent];

    /// <summary>The recipe named <paramref name="name"/> (case-insensitive).</summary>
    /// <exception cref="ArgumentException">No such recipe; the message lists the known ones.</exception>
    public static Recipe Get(string name) =>
        All.FirstOrDefault(r => string.Equals(r.Name, name, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"Unknown recipe '{name}'. Known recipes: {string.Join(", ", All.Select(r => r.Name))}.", nameof(name));

    /// <summary>
    /// A recipe from conditions the caller picks (no research run behind it; none is allowed, for callers that add their own): each condition with its class's FreeDoM
    /// defaults (identity 100, landmarks 500, parsing 0.2 with <c>sqrt(abar_t) * scale</c> and stop 200; text 0.02
    /// norm-relative, always), 100 steps, FreeDoM's eta step.
    /// </summary>
    public static Recipe Custom(IReadOnlyList<RecipeConditionKind> kinds)
    {
        ArgumentNullException.ThrowIfNull(kinds);
        if (kinds.Distinct().Count() != kinds.Count) throw new ArgumentException("A custom recipe names each condition once.", nameof(kinds));
        var conditions = kinds.Select(k => k switch
        {
            RecipeConditionKind.Identity => FaceIdLandmarks.Condition(k)!,
            RecipeConditionKind.Landmarks => FaceIdLandmarks.Condition(k)!,
            RecipeConditionKind.Parsing => FaceTextParsingIdentity.Condition(k)!,
            RecipeConditionKind.Text => FaceTextParsing.Condition(k)!,
            _ => throw new ArgumentException($"Condition {k} needs Stable Diffusion: use the sd-text-style or sd-text-style-content recipe.", nameof(kinds)),
        }).ToList();
        return new Recipe
        {
            Name = "custom",
            Description = "conditions chosen on the command line, each with its recipe's settings",
            Backbone = RecipeBackbone.CelebAHqDdpm,
            Source = "the conditions' own recipes",
            Command = "",
            Steps = 100,
            SamplerStep = RecipeSamplerStep.FreeDoMEta,
            Conditions = conditions,
        };
    }
}
