using System.Text.Json;
using TorchSharp;
using ZMagic.Core.IO;
using ZMagic.Models.StableDiffusion;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Models.Tests.StableDiffusion;

[Trait("Category", "Golden")]
public class SdGoldenTests
{
    public static TheoryData<string> UnetCases => Golden.Cases("sd_unet");
    public static TheoryData<string> VaeCases => Golden.Cases("sd_vae");
    public static TheoryData<string> SchedulerCases => Golden.Cases("sd_scheduler");

    private static (double Abs, double Rel) Tol(JsonElement c) =>
        (c.GetProperty("tolerance").GetProperty("abs").GetDouble(), c.GetProperty("tolerance").GetProperty("rel").GetDouble());

    internal static void LoadExact(nn.Module module, Dictionary<string, Tensor> weights, string source)
    {
        var expected = module.state_dict();
        var missing = expected.Keys.Where(k => !weights.ContainsKey(k)).ToList();
        var unexpected = weights.Keys.Where(k => !expected.ContainsKey(k)).ToList();
        var mismatched = expected.Keys.Where(k => weights.ContainsKey(k) && !weights[k].shape.SequenceEqual(expected[k].shape))
            .Select(k => $"{k}: model [{string.Join(",", expected[k].shape)}] file [{string.Join(",", weights[k].shape)}]").ToList();
        Assert.True(missing.Count == 0 && unexpected.Count == 0 && mismatched.Count == 0,
            $"{source}: missing [{string.Join(", ", missing)}] unexpected [{string.Join(", ", unexpected)}] mismatched [{string.Join("; ", mismatched)}]");
        module.load_state_dict(weights, strict: true);
    }

    [Theory]
    [MemberData(nameof(UnetCases))]
    public void UNetMatchesDiffusers(string caseDir)
    {
        var c = Golden.CaseJson(caseDir);
        var (abs, rel) = Tol(c);
        var config = UNet2DConditionConfig.FromJson(c.GetProperty("constructor"), caseDir);
        using var model = new UNet2DConditionModel(config);
        model.eval();
        var w = Golden.Load(caseDir, "weights.safetensors");
        LoadExact(model, w, caseDir);
        var inp = Golden.Load(caseDir, "inputs.safetensors");
        var outp = Golden.Load(caseDir, "outputs.safetensors");
        using var _ = no_grad();
        TensorAssert.Close(model.TimeProjection(inp["time_proj_probe_timesteps"]), outp["time_proj_probe"], abs, rel, "time_proj_probe");
        var pred = model.forward(inp["sample"], inp["timesteps"], inp["encoder_hidden_states"]);
        TensorAssert.Close(pred, outp["noise_pred"], abs, rel, "noise_pred");
        var predScalar = model.forward(inp["sample"], inp["timestep_scalar"], inp["encoder_hidden_states"]);
        TensorAssert.Close(predScalar, outp["noise_pred_scalar_t"], abs, rel, "noise_pred_scalar_t");

        // float64 port against the float64 reference (the sinusoid stays float32 in both), where the case stores it.
        if (!outp.ContainsKey("f64/noise_pred")) return;
        model.to(ScalarType.Float64);
        var pred64 = model.forward(inp["sample"].to(ScalarType.Float64), inp["timesteps"], inp["encoder_hidden_states"].to(ScalarType.Float64));
        TensorAssert.Close(pred64, outp["f64/noise_pred"], 1e-6, 1e-6, "f64/noise_pred");
    }

    [Theory]
    [MemberData(nameof(UnetCases))]
    public void UNetLoadsFromPyTorchZipCheckpointToo(string caseDir)
    {
        if (!File.Exists(Golden.File(caseDir, "weights.pt"))) return;   // optional copy of weights.safetensors
        var fromPt = Checkpoint.LoadStateDict(Golden.File(caseDir, "weights.pt"));
        var fromSt = Golden.Load(caseDir, "weights.safetensors");
        Assert.Equal(fromSt.Keys.OrderBy(k => k, StringComparer.Ordinal), fromPt.Keys.OrderBy(k => k, StringComparer.Ordinal));
        foreach (var (k, v) in fromSt) Assert.True(v.eq(fromPt[k]).all().item<bool>(), $"{k} differs between weights.pt and weights.safetensors");
    }

    [Theory]
    [MemberData(nameof(VaeCases))]
    public void VaeMatchesDiffusers(string caseDir)
    {
        var c = Golden.CaseJson(caseDir);
        var (abs, rel) = Tol(c);
        var config = AutoencoderKLConfig.FromJson(c.GetProperty("constructor"), caseDir);
        using var vae = new AutoencoderKL(config);
        vae.eval();
        LoadExact(vae, Golden.Load(caseDir, "weights.safetensors"), caseDir);
        var inp = Golden.Load(caseDir, "inputs.safetensors");
        var outp = Golden.Load(caseDir, "outputs.safetensors");
        using var _ = no_grad();
        var moments = vae.EncodeMoments(inp["image"]);
        TensorAssert.Close(moments, outp["moments"], abs, rel, "moments");
        var (mean, logvar) = vae.Encode(inp["image"]);
        TensorAssert.Close(mean, outp["posterior_mean"], abs, rel, "posterior_mean");
        TensorAssert.Close(logvar, outp["posterior_logvar"], abs, rel, "posterior_logvar");
        TensorAssert.Close((logvar * 0.5).exp(), outp["posterior_std"], abs, rel, "posterior_std");
        TensorAssert.Close(mean + (logvar * 0.5).exp() * outp["sample_noise"], outp["posterior_sample"], abs, rel, "posterior_sample");
        TensorAssert.Close(vae.Decode(inp["latent"]), outp["decoded_latent"], abs, rel, "decoded_latent");
        TensorAssert.Close(vae.Decode(inp["latent"] / config.ScalingFactor), outp["decoded_latent_div_scaling"], abs, rel, "decoded_latent_div_scaling");
        TensorAssert.Close(vae.Decode(mean), outp["reconstruction"], abs, rel, "reconstruction");
    }

    [Theory]
    [MemberData(nameof(VaeCases))]
    public void VaeLoadsTheLegacyAttentionNamesThroughTheAliasTable(string caseDir)
    {
        var legacyPath = Golden.File(caseDir, "weights_legacy_names.safetensors");
        Assert.True(File.Exists(legacyPath), $"{legacyPath} is missing");
        var c = Golden.CaseJson(caseDir);
        using var vae = new AutoencoderKL(AutoencoderKLConfig.FromJson(c.GetProperty("constructor"), caseDir));
        var legacy = SafeTensors.Load(legacyPath);
        var current = Golden.Load(caseDir, "weights.safetensors");
        // Every key that differs from the current names must be an alias (16 for SD-shaped VAEs: 4 names x weight/bias x encoder/decoder).
        var legacyOnly = legacy.Keys.Where(k => !current.ContainsKey(k)).ToList();
        Assert.NotEmpty(legacyOnly);
        Assert.All(legacyOnly, k => Assert.True(AutoencoderKL.LegacyKeyAliases.ContainsKey(k), $"{k} is not in the alias table"));
        var mapped = legacy.ToDictionary(kv => AutoencoderKL.LegacyKeyAliases.TryGetValue(kv.Key, out var n) ? n : kv.Key, kv => kv.Value);
        LoadExact(vae, mapped, legacyPath);
        foreach (var (k, v) in current) Assert.True(v.eq(mapped[k]).all().item<bool>(), k);
    }

    [Theory]
    [MemberData(nameof(SchedulerCases))]
    public void DdimSchedulerMatchesDiffusers(string caseDir)
    {
        var outp = Golden.Load(caseDir, "outputs.safetensors");
        var inp = Golden.Load(caseDir, "inputs.safetensors");
        var c = Golden.CaseJson(caseDir);
        var (abs, rel) = Tol(c);
        var config = SdSchedulerConfig.FromJson(c.GetProperty("sd15_scheduler_config_json"), caseDir);
        using var s = new SdDdimScheduler(config);
        // torch 1.13 and this port round the float32 linspace differently in the last bit for some entries.
        TensorAssert.Close(s.Betas, outp["betas"], 0, 1e-6, "betas");
        TensorAssert.Close(s.AlphasCumprod, outp["alphas_cumprod"], 1e-6, 0, "alphas_cumprod");
        Assert.Equal(outp["final_alpha_cumprod"].item<float>(), s.FinalAlphaCumprod, 6);
        // Every timesteps_<n> the case stores, whatever n.
        var stepCounts = outp.Keys.Select(k => System.Text.RegularExpressions.Regex.Match(k, @"^timesteps_(\d+)$")).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.NotEmpty(stepCounts);
        foreach (var n in stepCounts)
            Assert.Equal(outp[$"timesteps_{n}"].data<long>().ToArray(), s.Timesteps(n));

        var chains = outp.Keys.Where(k => k.Contains("/step0/timestep")).Select(k => k[..k.IndexOf('/')]).ToList();
        Assert.NotEmpty(chains);
        foreach (var chain in chains)
        {
            int n = int.Parse(chain[1..chain.IndexOf('_')], System.Globalization.CultureInfo.InvariantCulture);
            double eta = double.Parse(chain.Split("_eta")[1].Split('_')[0], System.Globalization.CultureInfo.InvariantCulture);
            var x = inp[$"{chain}/sample_in"];
            for (int j = 0; outp.ContainsKey($"{chain}/step{j}/timestep"); j++)
            {
                long t = outp[$"{chain}/step{j}/timestep"].item<long>();
                Assert.Equal(outp[$"{chain}/step{j}/prev_timestep"].item<long>(), s.PreviousTimestep(t, n));
                if (inp.TryGetValue($"{chain}/step{j}/sample", out var given)) x = given;
                TensorAssert.Close(x, outp[$"{chain}/step{j}/sample"], abs, rel, $"{chain} step{j} sample");
                // float32 cumprod order differs between libtorch versions by up to ~5e-7 (README: compare with abs 1e-6).
                Assert.InRange(s.AlphaBar(t) - outp[$"{chain}/step{j}/alpha_prod_t"].item<float>(), -1e-6, 1e-6);
                Assert.InRange(s.AlphaBar(s.PreviousTimestep(t, n)) - outp[$"{chain}/step{j}/alpha_prod_t_prev"].item<float>(), -1e-6, 1e-6);
                inp.TryGetValue($"{chain}/step{j}/variance_noise", out var noise);
                var (prev, x0) = s.Step(inp[$"{chain}/step{j}/model_output"], t, x, n, eta, noise);
                TensorAssert.Close(x0, outp[$"{chain}/step{j}/pred_original_sample"], abs, rel, $"{chain} step{j} pred_original_sample");
                TensorAssert.Close(prev, outp[$"{chain}/step{j}/prev_sample"], abs, rel, $"{chain} step{j} prev_sample");
                // Each step from the stored sample entering the next one (chained chains store it as this prev_sample),
                // so long chains of unseen cases do not accumulate float32 error.
                x = outp.TryGetValue($"{chain}/step{j + 1}/sample", out var stored) ? stored : prev;
            }
        }
        var added = s.AddNoise(inp["add_noise/original_samples"], inp["add_noise/noise"], inp["add_noise/timesteps"]);
        TensorAssert.Close(added, outp["add_noise/noisy_samples"], abs, rel, "add_noise");
    }
}
