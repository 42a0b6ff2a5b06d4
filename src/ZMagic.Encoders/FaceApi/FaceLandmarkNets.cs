using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace ZMagic.Encoders.FaceApi;

/// <summary>
/// The face-api feature extractor + fully connected classifier shared by FaceLandmark68Net, FaceLandmark68TinyNet and
/// FaceExpressionNet. Input: the preprocessed [B, 3, 112, 112] tensor (<see cref="TfOps.ToNetInput"/> with the face
/// mean); output: the fc output [B, outputs].
/// </summary>
public abstract class FaceProcessorNet : FaceApiNetwork<Tensor>
{
    private readonly nn.Module<Tensor, Tensor> dense0;
    private readonly nn.Module<Tensor, Tensor> dense1;
    private readonly nn.Module<Tensor, Tensor> dense2;
    private readonly nn.Module<Tensor, Tensor>? dense3;
    private readonly TfFullyConnected fc;
    private readonly long _pool;

    /// <summary>Builds the 4-block (channels 32..256, pool 7) or tiny 3-block (32..128, pool 14) extractor.</summary>
    protected FaceProcessorNet(string name, bool tiny, long outputs) : base(name)
    {
        dense0 = new FaceApiDenseBlock(3, 32, true, !tiny);
        dense1 = new FaceApiDenseBlock(32, 64, false, !tiny);
        dense2 = new FaceApiDenseBlock(64, 128, false, !tiny);
        dense3 = tiny ? null : new FaceApiDenseBlock(128, 256, false, true);
        FeatureSize = tiny ? 128 : 256;
        fc = new TfFullyConnected(FeatureSize, outputs);
        _pool = tiny ? 14 : 7;
        RegisterComponents();
    }

    /// <inheritdoc />
    public override long InputSize => 112;

    /// <summary>Length of the pooled feature vector (256, or 128 for the tiny net).</summary>
    public long FeatureSize { get; }

    /// <summary>The extractor output after average pooling (<c>faceFeatureExtractor.forwardInput</c>), [B, FeatureSize].</summary>
    public Tensor Features(Tensor input)
    {
        CheckInput(input);
        using var scope = NewDisposeScope();
        var x = dense0.forward(input);
        x = dense1.forward(x);
        x = dense2.forward(x);
        if (dense3 is not null) x = dense3.forward(x);
        x = F.avg_pool2d(x, new[] { _pool, _pool }, new[] { 2L, 2L });
        return x.flatten(1).MoveToOuterDisposeScope();
    }

    /// <summary>The fc output (<c>runNet</c>), [B, outputs].</summary>
    public override Tensor forward(Tensor input)
    {
        using var f = Features(input);
        return fc.forward(f);
    }
}

/// <summary>
/// FaceLandmark68Net: 68 (x, y) points, interleaved, relative to the padded 112 x 112 square (see
/// <see cref="FaceLandmarks.PostProcess"/> for image coordinates).
/// </summary>
public sealed class FaceLandmark68Net : FaceProcessorNet
{
    /// <summary>Creates the net (zero weights until <see cref="FaceApiNetwork{TOutput}.LoadWeights(string)"/>).</summary>
    public FaceLandmark68Net() : base(nameof(FaceLandmark68Net), false, 136) { }

    /// <inheritdoc />
    public override string ModelName => "face_landmark_68_model";
}

/// <summary>FaceLandmark68TinyNet: the 3-block variant of <see cref="FaceLandmark68Net"/>, same output.</summary>
public sealed class FaceLandmark68TinyNet : FaceProcessorNet
{
    /// <summary>Creates the net.</summary>
    public FaceLandmark68TinyNet() : base(nameof(FaceLandmark68TinyNet), true, 136) { }

    /// <inheritdoc />
    public override string ModelName => "face_landmark_68_tiny_model";
}

/// <summary>The seven face-api expressions, in the order of the net's outputs.</summary>
public enum FaceExpression
{
    /// <summary>Neutral.</summary>
    Neutral = 0,

    /// <summary>Happy.</summary>
    Happy = 1,

    /// <summary>Sad.</summary>
    Sad = 2,

    /// <summary>Angry.</summary>
    Angry = 3,

    /// <summary>Fearful.</summary>
    Fearful = 4,

    /// <summary>Disgusted.</summary>
    Disgusted = 5,

    /// <summary>Surprised.</summary>
    Surprised = 6,
}

/// <summary>FaceExpressionNet: 7 logits (softmax gives the package's probabilities), order of <see cref="FaceExpression"/>.</summary>
public sealed class FaceExpressionNet : FaceProcessorNet
{
    /// <summary>Creates the net.</summary>
    public FaceExpressionNet() : base(nameof(FaceExpressionNet), false, 7) { }

    /// <inheritdoc />
    public override string ModelName => "face_expression_model";
}

/// <summary>Landmark post-processing as the package does it.</summary>
public static class FaceLandmarks
{
    /// <summary>
    /// <c>FaceLandmark68NetBase.postProcess</c>: raw [B, 136] relative to the padded 112 square -> [B, 136] relative to
    /// the unpadded image of size <paramref name="width"/> x <paramref name="height"/>. Like the package, it subtracts a
    /// symmetric |w - h|/2 padding even when the real padding was uneven.
    /// </summary>
    public static Tensor PostProcess(Tensor raw, double width, double height, double inputSize = 112)
    {
        double scale = inputSize / Math.Max(width, height);
        double ws = width * scale, hs = height * scale;
        double padX = ws < hs ? Math.Abs(ws - hs) / 2 : 0;
        double padY = hs < ws ? Math.Abs(ws - hs) / 2 : 0;
        using var scope = NewDisposeScope();
        var sub = tensor(Enumerable.Range(0, 136).Select(i => (float)(i % 2 == 0 ? padX : padY)).ToArray(), ScalarType.Float32, raw.device);
        var div = tensor(Enumerable.Range(0, 136).Select(i => (float)(i % 2 == 0 ? ws : hs)).ToArray(), ScalarType.Float32, raw.device);
        var result = (raw * (float)inputSize - sub) / div;
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Points in pixels of the image: [B, 68, 2] (x, y) = post-processed values times (width, height).</summary>
    public static Tensor ToPixels(Tensor post, double width, double height)
    {
        using var scope = NewDisposeScope();
        var p = post.to(ScalarType.Float64).reshape(post.shape[0], 68, 2);
        var s = tensor(new[] { width, height }, ScalarType.Float64, post.device);
        return (p * s).MoveToOuterDisposeScope();
    }
}
