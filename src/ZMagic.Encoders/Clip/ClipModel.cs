using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ZMagic.Encoders.Clip;

#pragma warning disable IDE1006

/// <summary>
/// openai/CLIP's <c>CLIP</c> model with a ViT image tower, exact to <c>clip/model.py</c>: state-dict keys are the
/// OpenAI ones (<c>visual.*</c>, <c>transformer.resblocks.N.*</c>, <c>token_embedding.weight</c>, ...).
/// </summary>
/// <remarks>
/// <para>Load weights with <see cref="ClipWeights"/>: OpenAI state dicts (safetensors or, once converted, PyTorch
/// files) and Hugging Face <c>CLIPModel</c> folders load unchanged. The released OpenAI <c>.pt</c> files are
/// TorchScript archives; convert one once in Python:</para>
/// <code>
/// import torch; from safetensors.torch import save_file
/// sd = torch.jit.load("ViT-B-16.pt", map_location="cpu").state_dict()
/// for k in ("input_resolution", "context_length", "vocab_size"): sd.pop(k, None)
/// save_file({k: v.float().contiguous() for k, v in sd.items()}, "ViT-B-16.safetensors")
/// </code>
/// <para>Attention runs batch-first ([N, L, D]) rather than CLIP's sequence-first layout; the math is identical.
/// Computation is float32 (fp16 files are widened on load).</para>
/// </remarks>
public sealed class ClipModel : Module<Tensor, Tensor, (Tensor LogitsPerImage, Tensor LogitsPerText)>
{
    private readonly ClipVisionTransformer visual;
    private readonly ClipTransformer transformer;
    private readonly Embedding token_embedding;
    private readonly Parameter positional_embedding;
    private readonly LayerNorm ln_final;
    private readonly Parameter text_projection;
    private readonly Parameter logit_scale;

    /// <summary>Creates a randomly initialised model of <paramref name="config"/> (load weights afterwards).</summary>
    /// <param name="config">The sizes.</param>
    /// <param name="device">Where the parameters are allocated (CPU by default; <c>meta</c> to inspect keys without memory).</param>
    public ClipModel(ClipConfig config, Device? device = null) : base("CLIP")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        visual = new ClipVisionTransformer(config.ImageResolution, config.VisionPatchSize, config.VisionWidth, config.VisionLayers,
            config.VisionHeads, config.EmbedDim, device);
        transformer = new ClipTransformer(config.TransformerWidth, config.TransformerLayers, config.TransformerHeads, device);
        token_embedding = Embedding(config.VocabSize, config.TransformerWidth, device: device);
        positional_embedding = new Parameter(torch.randn(config.ContextLength, config.TransformerWidth, device: device) * 0.01);
        ln_final = LayerNorm(config.TransformerWidth, 1e-5, device: device);
        text_projection = new Parameter(torch.randn(config.TransformerWidth, config.EmbedDim, device: device) * Math.Pow(config.TransformerWidth, -0.5));
        logit_scale = new Parameter(torch.tensor((float)Math.Log(1 / 0.07), device: device));
        RegisterComponents();
        eval();
    }

    /// <summary>The configuration.</summary>
    public ClipConfig Config { get; }

    /// <summary>The dtype of the parameters (float32 unless the model was converted); inputs are cast to it.</summary>
    public ScalarType ParameterType => logit_scale.dtype;

    /// <summary>The device of the parameters.</summary>
    public Device Device => logit_scale.device;

    /// <summary>The image tower (<c>visual</c>).</summary>
    internal ClipVisionTransformer Visual => visual;

    /// <summary><c>logit_scale.exp()</c> (100 for the released models).</summary>
    public double LogitScale => logit_scale.exp().item<float>();

    /// <summary>Projected image features [N, EmbedDim] of normalised images [N, 3, R, R] (<c>encode_image</c>).</summary>
    /// <exception cref="ArgumentException">The image is not [N, 3, ImageResolution, ImageResolution].</exception>
    public Tensor EncodeImage(Tensor image)
    {
        CheckImage(image);
        return visual.Forward(image.to(ParameterType), null);
    }

    /// <summary>
    /// FreeDoM's <c>encode_image_with_features</c>: the projected features and the output tokens of every image
    /// block, each [N, 1 + grid^2, VisionWidth] (batch-first; FreeDoM's are [L, N, D]).
    /// </summary>
    public (Tensor Features, IReadOnlyList<Tensor> BlockTokens) EncodeImageWithFeatures(Tensor image)
    {
        CheckImage(image);
        var blocks = new List<Tensor>(Config.VisionLayers);
        var f = visual.Forward(image.to(ParameterType), blocks);
        return (f, blocks);
    }

    /// <summary>Projected text features [N, EmbedDim] of token rows [N, ContextLength] (<c>encode_text</c>): the end-token (argmax id) position.</summary>
    /// <exception cref="ArgumentException">Tokens are not int64 [N, ContextLength] with ids below VocabSize.</exception>
    public Tensor EncodeText(Tensor tokens) =>
        ClipText.Encode(tokens, Config.ContextLength, Config.VocabSize, token_embedding, positional_embedding, transformer, ln_final, text_projection);

    /// <summary>The text tower's final hidden states [N, ContextLength, width] after <c>ln_final</c> (what Stable Diffusion uses).</summary>
    public Tensor EncodeTextHidden(Tensor tokens) =>
        ClipText.Hidden(tokens, Config.ContextLength, Config.VocabSize, token_embedding, positional_embedding, transformer, ln_final);

    /// <summary>CLIP's forward: cosine logits scaled by <c>logit_scale.exp()</c>, per image [Ni, Nt] and per text [Nt, Ni].</summary>
    public override (Tensor LogitsPerImage, Tensor LogitsPerText) forward(Tensor image, Tensor tokens)
    {
        var img = EncodeImage(image);
        var txt = EncodeText(tokens);
        return Logits(img, txt);
    }

    /// <summary>Logits from already computed features.</summary>
    public (Tensor LogitsPerImage, Tensor LogitsPerText) Logits(Tensor imageFeatures, Tensor textFeatures)
    {
        if (imageFeatures.ndim != 2 || textFeatures.ndim != 2 || imageFeatures.shape[1] != textFeatures.shape[1])
            throw new ArgumentException($"Feature shapes [{string.Join(", ", imageFeatures.shape)}] and [{string.Join(", ", textFeatures.shape)}] do not pair.");
        var i = imageFeatures / imageFeatures.norm(1, true);
        var t = textFeatures / textFeatures.norm(1, true);
        var perImage = logit_scale.exp() * torch.matmul(i, t.t());
        return (perImage, perImage.t());
    }

    private void CheckImage(Tensor image)
    {
        int r = Config.ImageResolution;
        if (image.ndim != 4 || image.shape[1] != 3 || image.shape[2] != r || image.shape[3] != r)
            throw new ArgumentException(
                $"CLIP image input must be [N, 3, {r}, {r}] (normalised); got [{string.Join(", ", image.shape)}]. " +
                "Resize first (ClipPreprocess.FromSignedUnit does it differentiably).", nameof(image));
    }
}

/// <summary>
/// CLIP's text tower alone (OpenAI keys <c>token_embedding</c>, <c>positional_embedding</c>, <c>transformer.*</c>,
/// <c>ln_final</c>, optionally <c>text_projection</c>), e.g. Stable Diffusion's text encoder.
/// </summary>
public sealed class ClipTextModel : Module<Tensor, Tensor>
{
    private readonly int _context;
    private readonly int _vocab;
    private readonly ClipTransformer transformer;
    private readonly Embedding token_embedding;
    private readonly Parameter positional_embedding;
    private readonly LayerNorm ln_final;
    private readonly Parameter? text_projection;

    /// <summary>Creates the text tower of <paramref name="config"/>; with <paramref name="withProjection"/> it has <c>text_projection</c>.</summary>
    /// <param name="config">The sizes.</param>
    /// <param name="withProjection">Whether the tower has <c>text_projection</c>.</param>
    /// <param name="device">Where the parameters are allocated.</param>
    public ClipTextModel(ClipConfig config, bool withProjection = true, Device? device = null) : base("CLIPText")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        _context = config.ContextLength;
        _vocab = config.VocabSize;
        transformer = new ClipTransformer(config.TransformerWidth, config.TransformerLayers, config.TransformerHeads, device);
        token_embedding = Embedding(config.VocabSize, config.TransformerWidth, device: device);
        positional_embedding = new Parameter(torch.randn(config.ContextLength, config.TransformerWidth, device: device) * 0.01);
        ln_final = LayerNorm(config.TransformerWidth, 1e-5, device: device);
        if (withProjection)
            text_projection = new Parameter(torch.randn(config.TransformerWidth, config.EmbedDim, device: device) * Math.Pow(config.TransformerWidth, -0.5));
        RegisterComponents();
        eval();
    }

    /// <summary>The configuration (only the text fields are used).</summary>
    public ClipConfig Config { get; }

    /// <summary>Projected features [N, EmbedDim] (needs <c>text_projection</c>).</summary>
    /// <exception cref="InvalidOperationException">The model was built without a projection.</exception>
    public Tensor EncodeText(Tensor tokens) => text_projection is null
        ? throw new InvalidOperationException("This text tower has no text_projection; use EncodeTextHidden.")
        : ClipText.Encode(tokens, _context, _vocab, token_embedding, positional_embedding, transformer, ln_final, text_projection);

    /// <summary>Final hidden states [N, ContextLength, width].</summary>
    public Tensor EncodeTextHidden(Tensor tokens) => ClipText.Hidden(tokens, _context, _vocab, token_embedding, positional_embedding, transformer, ln_final);

    /// <inheritdoc />
    public override Tensor forward(Tensor tokens) => EncodeTextHidden(tokens);
}

/// <summary>The text forward shared by <see cref="ClipModel"/> and <see cref="ClipTextModel"/>.</summary>
internal static class ClipText
{
    public static Tensor Hidden(Tensor tokens, int context, int vocab, Embedding tokenEmbedding, Tensor positional, ClipTransformer transformer, LayerNorm lnFinal)
    {
        Check(tokens, context, vocab);
        var x = tokenEmbedding.forward(tokens) + positional;
        // Causal mask: -inf strictly above the diagonal (CLIP.build_attention_mask).
        var mask = torch.full(context, context, float.NegativeInfinity, ScalarType.Float32, x.device).triu(1);
        x = transformer.forward(x, mask);
        return lnFinal.forward(x);
    }

    public static Tensor Encode(Tensor tokens, int context, int vocab, Embedding tokenEmbedding, Tensor positional, ClipTransformer transformer,
        LayerNorm lnFinal, Tensor projection)
    {
        var x = Hidden(tokens, context, vocab, tokenEmbedding, positional, transformer, lnFinal);
        var eot = tokens.argmax(-1);
        var pooled = x[torch.arange(x.shape[0], device: x.device), eot];
        return torch.matmul(pooled, projection);
    }

    private static void Check(Tensor tokens, int context, int vocab)
    {
        if (tokens.dtype != ScalarType.Int64 || tokens.ndim != 2 || tokens.shape[1] != context)
            throw new ArgumentException($"CLIP text input must be int64 [N, {context}] token ids (ClipTokenizer.Tokenize); got {tokens.dtype} [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        if (tokens.numel() > 0)
        {
            long max = tokens.max().item<long>(), min = tokens.min().item<long>();
            if (min < 0 || max >= vocab) throw new ArgumentException($"Token ids must lie in [0, {vocab}); got [{min}, {max}].", nameof(tokens));
        }
    }
}
#pragma warning restore IDE1006
