using System.Security.Cryptography;
using Xunit.Abstractions;
using ZMagic.Encoders.FaceApi;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.FaceApi;

/// <summary>The real shipped weights on the real photo (golden images/astronaut.png, decoded with SkiaSharp).</summary>
[Collection(FaceApiCollection.Name)]
[Trait("Category", "Slow")]
public sealed class FaceApiRealPhotoTests(FaceApiFixture nets, ITestOutputHelper output)
{
    private static Tensor Crop(Tensor img255, FaceBox b, int dx = 0, int dy = 0) =>
        img255[.., .., (b.Top + dy)..(b.Bottom + dy), (b.Left + dx)..(b.Right + dx)];

    private FaceBox DetectOne(Tensor img255)
    {
        var dets = nets.Detector.LocateFaces(img255, 416, 0.5);
        foreach (var d in dets) output.WriteLine($"detection: score {d.Score:F4} box x {d.X:F2} y {d.Y:F2} w {d.Width:F2} h {d.Height:F2} -> {d.ToFaceBox()}");
        Assert.Single(dets);
        return dets[0].ToFaceBox();
    }

    [Fact]
    public void SkiaSharpDecoding_MatchesGoldenChecksum()
    {
        var (rgb, w, h) = TestImages.DecodeRgb(TestImages.AstronautPath);
        Assert.Equal((512, 512), (w, h));
        var json = Golden.CaseJson(Path.Combine(Golden.Root, "faceapi", "tiny_face_detector_flipcrop_416"));
        Assert.Equal(json.GetProperty("image").GetProperty("decoded_rgb_hwc_u8_sha256").GetString(), Convert.ToHexStringLower(SHA256.HashData(rgb)));
    }

    [Fact]
    public void Detector_FindsOneFace_LandmarksInsideBox_EyesAboveNoseAboveMouth()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var img = TestImages.Astronaut255();
        var box = DetectOne(img);
        foreach (var (name, net) in new (string, FaceProcessorNet)[] { ("lm68", nets.Landmarks), ("lm68tiny", nets.LandmarksTiny) })
        {
            var face = Crop(img, box);
            var raw = net.forward(TfOps.ToNetInput(face, 112, true, FaceApiMeans.Face));
            var px = FaceLandmarks.ToPixels(FaceLandmarks.PostProcess(raw, box.Width, box.Height), box.Width, box.Height)[0];
            var xs = (px[.., 0] + box.Left).data<double>().ToArray();
            var ys = (px[.., 1] + box.Top).data<double>().ToArray();
            for (int i = 0; i < 68; i++)
            {
                Assert.InRange(xs[i], box.Left, box.Right);
                Assert.InRange(ys[i], box.Top, box.Bottom);
            }
            double eyes = Enumerable.Range(36, 12).Average(i => ys[i]);
            double nose = Enumerable.Range(27, 9).Average(i => ys[i]);
            double mouth = Enumerable.Range(48, 20).Average(i => ys[i]);
            output.WriteLine($"{name}: mean y eyes {eyes:F1} < nose {nose:F1} < mouth {mouth:F1} (box rows {box.Top}..{box.Bottom}); x range {xs.Min():F1}..{xs.Max():F1}, y range {ys.Min():F1}..{ys.Max():F1}");
            Assert.True(eyes < nose && nose < mouth, $"{name}: eyes {eyes}, nose {nose}, mouth {mouth}");
        }
    }

    [Fact]
    public void Descriptor_SamePerson_UnderMirrorAndShift()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var img = TestImages.Astronaut255();
        var box = DetectOne(img);
        Tensor Desc(Tensor face) => nets.Recognition.forward(TfOps.ToNetInput(face, 150, true, FaceApiMeans.Face));
        var d0 = Desc(Crop(img, box));
        double mirror = (Desc(Crop(img, box).flip(3)) - d0).norm().item<float>();
        double shifted = (Desc(Crop(img, box, 4, 3)) - d0).norm().item<float>();
        double shifted2 = (Desc(Crop(img, box, -3, -4)) - d0).norm().item<float>();
        // A different "face": the golden noise image, to show the distance is not trivially small.
        var noise = Golden.Load(Path.Combine(Golden.Root, "faceapi", "noise_97x120_seed3"), "inputs.safetensors")["image_u8"];
        double other = (Desc(TestImages.HwcToNchw(noise)) - d0).norm().item<float>();
        output.WriteLine($"descriptor |d| {d0.norm().item<float>():F4}; distance to mirror {mirror:F4}, to crop shifted (+4,+3) {shifted:F4}, (-3,-4) {shifted2:F4}; to noise image {other:F4}");
        Assert.InRange(mirror, 0, FaceRecognitionNet.SamePersonThreshold);
        Assert.InRange(shifted, 0, FaceRecognitionNet.SamePersonThreshold);
        Assert.InRange(shifted2, 0, FaceRecognitionNet.SamePersonThreshold);
        Assert.True(other > FaceRecognitionNet.SamePersonThreshold, $"noise image distance {other}");
    }

    [Fact]
    public void ExpressionAgeGender_StableUnderSmallShifts()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var img = TestImages.Astronaut255();
        var box = DetectOne(img);
        var shifts = new[] { (0, 0), (3, 0), (-3, 0), (0, 3), (0, -3), (2, -2) };
        var exprs = new List<int>();
        var genders = new List<int>();
        var ages = new List<double>();
        foreach (var (dx, dy) in shifts)
        {
            var x = TfOps.ToNetInput(Crop(img, box, dx, dy), 112, true, FaceApiMeans.Face);
            var probs = nets.Expression.forward(x).softmax(1)[0].data<float>().ToArray();
            var ag = nets.AgeGender.forward(x);
            var g = ag.GenderLogits.softmax(1)[0].data<float>().ToArray();
            double age = ag.Age[0].item<float>();
            int e = Array.IndexOf(probs, probs.Max());
            exprs.Add(e);
            genders.Add(g[0] > 0.5 ? 0 : 1);
            ages.Add(age);
            output.WriteLine($"shift ({dx,2},{dy,2}): expression {(FaceExpression)e} p={probs[e]:F4}; gender {(g[0] > 0.5 ? "male" : "female")} p(female)={g[1]:F4}; age {age:F2}");
        }
        Assert.All(exprs, e => Assert.Equal(exprs[0], e));
        Assert.All(genders, g => Assert.Equal(genders[0], g));
        Assert.True(ages.Max() - ages.Min() < 10, $"ages {string.Join(", ", ages)}");
    }
}
