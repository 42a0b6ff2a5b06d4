using TorchSharp;
using ZMagic.Core.Guidance;
using ZMagic.Core.IO;
using ZMagic.Encoders.Clip;
using ZMagic.Encoders.Vgg;
using ZMagic.Guidance.TextStyleContent;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Guidance.Tests.TextStyleContent;

public class ConditionTests
{
    internal static string ClipCase => Golden.CaseDirectories("clip").First();

    internal static ClipModel TinyClip()
    {
        var config = ClipConfig.FromConstructorJson(Golden.CaseJson(ClipCase).GetProperty("constructor"));
        var model = new ClipModel(config);
        var sd = Golden.Load(ClipCase, "weights.safetensors");
        ClipWeights.Load(model, sd, "tiny clip");
        foreach (var t in sd.Values) t.Dispose();
        foreach (var p in model.parameters()) p.requires_grad_(false);
        return model;
    }

    internal static readonly Lazy<VggFeatures> FormulaVgg16 = new(() =>
    {
        var vgg = new VggFeatures(VggKind.Vgg16);
        FormulaWeights.Apply(vgg);
        foreach (var p in vgg.parameters()) p.requires_grad_(false);
        return vgg;
    });

    /// <summary>Normalised gradient descent on x0; returns the summed energy before each step and at the end.</summary>
    internal static List<double> Descend(IGuidanceCondition c, Tensor x, int steps, double stepLength)
    {
        var energies = new List<double>();
        x = x.detach().clone();
        for (int k = 0; k <= steps; k++)
        {
            using var scope = torch.NewDisposeScope();
            var xr = x.detach().requires_grad_(true);
            var e = c.Energy(xr);
            Assert.Equal(new long[] { x.shape[0] }, e.shape);
            Assert.True(e.isfinite().all().item<bool>(), $"{c.Name}: non-finite energy");
            Assert.True((e >= 0).all().item<bool>(), $"{c.Name}: negative energy");
            var total = e.sum();
            energies.Add(total.to(ScalarType.Float64).item<double>());
            if (k == steps) break;
            var g = torch.autograd.grad(new[] { total }, new[] { xr }, retain_graph: false)[0];
            var next = (xr - g / g.norm() * stepLength).detach().MoveToOuterDisposeScope();
            x = next;
        }
        return energies;
    }

    private static void AssertDecreasing(IReadOnlyList<double> e, string what)
    {
        for (int i = 1; i < e.Count; i++)
            Assert.True(e[i] < e[i - 1], $"{what}: energy rose at step {i}: {string.Join(", ", e.Select(v => v.ToString("G6")))}");
        Assert.True(e[^1] < e[0] * 0.98, $"{what}: energy hardly fell: {string.Join(", ", e.Select(v => v.ToString("G6")))}");
    }

    [Fact]
    [Trait("Category", "Golden")]
    public void Text_energy_and_gradient_match_freedom_get_residual()
    {
        using var scope = torch.NewDisposeScope();
        using var clip = TinyClip();
        var inputs = Golden.Load(ClipCase, "inputs.safetensors");
        var outputs = Golden.Load(ClipCase, "outputs.safetensors");
        var cond = new TextCondition(clip, inputs["freedom/prompt_tokens"]);
        Assert.Equal("text", cond.Name);
        Assert.IsType<NormRelativeStepSize>(cond.Schedule.StepSize);
        Assert.Equal(0.02, ((NormRelativeStepSize)cond.Schedule.StepSize).Scale);
        var x0 = inputs["freedom/x0"].clone().requires_grad_(true);
        var e = cond.Energy(x0);
        TensorAssert.Close(e, outputs["freedom/residual"].norm(1), 1e-4, 1e-4, "per-item |residual|");
        // FreeDoM's loss is one Frobenius norm over the batch: sqrt(sum_b E_b^2).
        var loss = e.square().sum().sqrt();
        TensorAssert.Close(loss, outputs["freedom/loss_norm"], 1e-4, 1e-4, "loss_norm");
        var g = torch.autograd.grad(new[] { loss }, new[] { x0 }, retain_graph: false)[0];
        TensorAssert.RelL2(g, outputs["freedom/grad_loss_wrt_x0"], 1e-3, "grad");
    }

    [Fact]
    public void Text_condition_from_a_prompt_uses_the_tokenizer()
    {
        using var scope = torch.NewDisposeScope();
        using var clip = TinyClip();
        var tok = ClipTokenizer.FromSimpleVocab(Path.Combine(Golden.Root, "clip", "bpe_simple_vocab_16e6.txt.gz"));
        var inputs = Golden.Load(ClipCase, "inputs.safetensors");
        var fromPrompt = new TextCondition(clip, tok, "blonde beauty");
        var fromTokens = new TextCondition(clip, inputs["freedom/prompt_tokens"]);
        TensorAssert.Close(fromPrompt.TextFeatures, fromTokens.TextFeatures, 0, 0, "same prompt features");
    }

    [Theory]
    [InlineData(TextMetric.L2)]
    [InlineData(TextMetric.Cosine)]
    public void Text_energy_decreases_under_gradient_steps(TextMetric metric)
    {
        using var scope = torch.NewDisposeScope();
        using var clip = TinyClip();
        var inputs = Golden.Load(ClipCase, "inputs.safetensors");
        var cond = new TextCondition(clip, inputs["freedom/prompt_tokens"], new TextConditionOptions { Metric = metric });
        AssertDecreasing(Descend(cond, inputs["freedom/x0"], 5, 0.5), $"text {metric}");
    }

    [Fact]
    public void Clip_style_energy_decreases_and_is_zero_at_the_reference()
    {
        using var scope = torch.NewDisposeScope();
        using var clip = TinyClip();
        var inputs = Golden.Load(ClipCase, "inputs.safetensors");
        var x0 = inputs["freedom/x0"];
        var reference = x0[..1].flip(-1);
        var cond = StyleCondition.Clip(clip, reference, new StyleConditionOptions { ClipBlock = 1 });
        using (torch.no_grad())
            Assert.True(cond.Energy(reference).item<float>() < 1e-3 * cond.Energy(x0[1..]).item<float>());
        AssertDecreasing(Descend(cond, x0, 5, 0.5), "clip style");
        Assert.Throws<ArgumentException>(() => StyleCondition.Clip(clip, reference)); // block 2 of a 2-block tower
    }

    [Fact]
    public void Vgg_style_and_content_energies_decrease()
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator(7);
        var x0 = torch.rand(1, 3, 32, 32, generator: gen) * 2 - 1;
        var reference = torch.rand(1, 3, 32, 32, generator: gen) * 2 - 1;
        var style = StyleCondition.Vgg(FormulaVgg16.Value, reference, new StyleConditionOptions { VggLayers = new[] { "relu1_1", "relu2_1", "relu3_1" } });
        AssertDecreasing(Descend(style, x0, 4, 0.5), "vgg style");
        var content = new ContentCondition(FormulaVgg16.Value, reference);
        AssertDecreasing(Descend(content, x0, 4, 0.5), "vgg content");
        var contentPos = new ContentCondition(FormulaVgg16.Value, reference, new ContentConditionOptions { Normalization = ContentNormalization.PerPosition, Layer = "relu3_1" });
        AssertDecreasing(Descend(contentPos, x0, 4, 0.5), "vgg content per position");
    }

    [Fact]
    public void Vgg_style_gram_matches_the_encoder_gram()
    {
        using var scope = torch.NewDisposeScope();
        var reference = torch.rand(1, 3, 32, 32, generator: new torch.Generator(3)) * 2 - 1;
        var style = StyleCondition.Vgg(FormulaVgg16.Value, reference, new StyleConditionOptions { VggLayers = new[] { "relu2_1" } });
        using var _ = torch.no_grad();
        var act = FormulaVgg16.Value.Extract(VggFeatures.NormalizeSignedUnit(reference), new[] { "relu2_1" })["relu2_1"];
        TensorAssert.Close(style.ReferenceGrams[0], VggFeatures.Gram(act), 0, 0, "reference gram");
        Assert.True(style.Energy(reference).item<float>() < 1e-6);
    }

    [Fact]
    public void Disposed_conditions_refuse_to_run()
    {
        using var scope = torch.NewDisposeScope();
        var reference = torch.zeros(1, 3, 32, 32);
        var content = new ContentCondition(FormulaVgg16.Value, reference);
        var style = StyleCondition.Vgg(FormulaVgg16.Value, reference, new StyleConditionOptions { VggLayers = new[] { "relu1_1" } });
        content.Dispose();
        style.Dispose();
        Assert.Throws<ObjectDisposedException>(() => content.Energy(reference));
        Assert.Throws<ObjectDisposedException>(() => style.Energy(reference));
    }

    [Fact]
    public void Bad_inputs_are_refused()
    {
        using var scope = torch.NewDisposeScope();
        var reference = torch.zeros(1, 3, 32, 32);
        var content = new ContentCondition(FormulaVgg16.Value, reference);
        var ex = Assert.Throws<ArgumentException>(() => content.Energy(torch.zeros(1, 3, 48, 48)));
        Assert.Contains("48x48", ex.Message);
        Assert.Contains("32x32", ex.Message);
        var resized = new ContentCondition(FormulaVgg16.Value, reference, new ContentConditionOptions { Resolution = 32 });
        Assert.Equal(new long[] { 2 }, resized.Energy(torch.zeros(2, 3, 48, 48)).shape);
        Assert.Throws<ArgumentException>(() => content.Energy(torch.zeros(1, 1, 32, 32)));
        Assert.Throws<ArgumentException>(() => new ContentCondition(FormulaVgg16.Value, reference, new ContentConditionOptions { Layer = "relu9_9" }));
        var two = new ContentCondition(FormulaVgg16.Value, torch.zeros(2, 3, 32, 32));
        Assert.Throws<ArgumentException>(() => two.Energy(torch.zeros(3, 3, 32, 32)));
        Assert.Throws<ArgumentException>(() => StyleCondition.Vgg(FormulaVgg16.Value, reference,
            new StyleConditionOptions { VggLayers = new[] { "relu1_1" }, VggLayerWeights = new[] { 1.0, 2.0 } }));
    }
}
