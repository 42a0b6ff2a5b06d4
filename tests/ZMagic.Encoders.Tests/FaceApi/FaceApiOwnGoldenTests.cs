using System.Text.Json;
using ZMagic.Encoders.FaceApi;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.FaceApi;

/// <summary>
/// Parity with this repository's own face-api golden data (tools/faceapi-golden/generate.js: the package's JavaScript on
/// tfjs CPU): detections on the full astronaut photo at three input sizes, every net on the detected crop (whole
/// pipeline, preprocessing included), and synthetic non-square images.
/// </summary>
[Collection(FaceApiCollection.Name)]
[Trait("Category", "Golden")]
[Trait("Category", "Slow")]
public sealed class FaceApiOwnGoldenTests(FaceApiFixture nets)
{
    private static readonly Lazy<JsonElement> Doc = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "ZMagic.sln"))) dir = dir.Parent;
        Assert.NotNull(dir);
        string file = Path.Combine(dir!.FullName, "tests", "ZMagic.Encoders.Tests", "FaceApi", "golden", "faceapi-own-golden.json");
        using var d = JsonDocument.Parse(File.ReadAllText(file));
        return d.RootElement.Clone();
    });

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in Doc.Value.GetProperty("cases").EnumerateArray()) data.Add(c.GetProperty("name").GetString()!);
        return data;
    }

    private static JsonElement Case(string name) =>
        Doc.Value.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("name").GetString() == name);

    private static (double Abs, double Rel) Tol(string output)
    {
        var root = Doc.Value;
        var t = root.GetProperty("tolerance_per_output").TryGetProperty(output, out var per) ? per : root.GetProperty("tolerance");
        return (t.GetProperty("abs").GetDouble(), t.GetProperty("rel").GetDouble());
    }

    private static Tensor Arr(JsonElement e) => tensor(e.EnumerateArray().Select(v => v.GetDouble()).ToArray(), ScalarType.Float64);

    private static void Close(Tensor actual, JsonElement expected, string output, string what) => Close(actual, Arr(expected), output, what);

    private static void Close(Tensor actual, Tensor expected, string output, string what)
    {
        var (abs, rel) = Tol(output);
        TensorAssert.Close(actual.flatten(), expected, abs, rel, $"{what}: {output}");
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void OwnGolden_MatchesTfjs(string name)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var c = Case(name);
        Tensor image;
        if (c.TryGetProperty("synthetic", out var syn))
        {
            int w = syn.GetProperty("width").GetInt32(), h = syn.GetProperty("height").GetInt32();
            var v = new float[3 * h * w];
            for (int ch = 0; ch < 3; ch++) for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) v[(ch * h + y) * w + x] = (7 * y + 13 * x + 29 * ch) % 256;
            image = tensor(v, new long[] { 1, 3, h, w });
            // The detector size is part of the entry name (detector_<size>_raw_nhwc); every such entry is checked.
            var rawSpecs = c.EnumerateObject().Where(p => System.Text.RegularExpressions.Regex.IsMatch(p.Name, "^detector_[0-9]+_raw_nhwc$")).ToList();
            Assert.NotEmpty(rawSpecs);
            foreach (var rawSpec in rawSpecs)
            {
                int size = int.Parse(rawSpec.Name.Split('_')[1], System.Globalization.CultureInfo.InvariantCulture);
                var raw = nets.Detector.forward(TfOps.ToNetInput(image, size, false, FaceApiMeans.TinyFaceDetector));
                Close(raw.permute(0, 2, 3, 1), rawSpec.Value.GetProperty("values"), rawSpec.Name, name);
            }
        }
        else
        {
            var imagePath = c.GetProperty("image").GetString()!;
            Assert.Equal("shared/golden/images/astronaut.png", imagePath); // the only image the fixture decodes
            image = TestImages.Astronaut255();
            if (c.TryGetProperty("image_wh", out var wh))
                Assert.Equal(wh.EnumerateArray().Select(e => e.GetInt64()).ToArray(), new[] { image.shape[3], image.shape[2] });
            foreach (var sizeProp in c.GetProperty("detections").EnumerateObject())
            {
                int size = int.Parse(sizeProp.Name, System.Globalization.CultureInfo.InvariantCulture);
                var got = nets.Detector.LocateFaces(image, size, 0.5);
                var exp = sizeProp.Value.EnumerateArray().ToList();
                Assert.Equal(exp.Count, got.Count);
                for (int i = 0; i < exp.Count; i++)
                {
                    Close(tensor(new[] { got[i].Score }), tensor(new[] { exp[i].GetProperty("score").GetDouble() }), "score", $"{name}@{size}");
                    Close(tensor(new[] { got[i].X, got[i].Y, got[i].Width, got[i].Height }), exp[i].GetProperty("box_px_xywh"), "box_px_xywh", $"{name}@{size}");
                    var b = got[i].ToFaceBox();
                    Assert.Equal(exp[i].GetProperty("crop_rect_xywh").EnumerateArray().Select(e => e.GetInt32()).ToArray(), new[] { b.Left, b.Top, b.Width, b.Height });
                }
            }
            var r = c.GetProperty("face_crop_rect_xywh").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            image = image[.., .., r[1]..(r[1] + r[3]), r[0]..(r[0] + r[2])];
        }

        long iw = image.shape[3], ih = image.shape[2];
        var face = c.GetProperty("face");
        var x112 = TfOps.ToNetInput(image, 112, true, FaceApiMeans.Face);
        var x150 = TfOps.ToNetInput(image, 150, true, FaceApiMeans.Face);
        var lm = nets.Landmarks.forward(x112);
        Close(lm, face.GetProperty("lm68_raw"), "lm68_raw", name);
        Close(FaceLandmarks.PostProcess(lm, iw, ih), face.GetProperty("lm68_post"), "lm68_post", name);
        var lmt = nets.LandmarksTiny.forward(x112);
        Close(lmt, face.GetProperty("lm68tiny_raw"), "lm68tiny_raw", name);
        Close(FaceLandmarks.PostProcess(lmt, iw, ih), face.GetProperty("lm68tiny_post"), "lm68tiny_post", name);
        var logits = nets.Expression.forward(x112);
        Close(logits, face.GetProperty("expr_logits"), "expr_logits", name);
        Close(logits.softmax(1), face.GetProperty("expr_probs"), "expr_probs", name);
        var ag = nets.AgeGender.forward(x112);
        Close(ag.Age, tensor(new[] { face.GetProperty("age").GetDouble() }), "age", name);
        Close(ag.GenderLogits, face.GetProperty("gender_logits"), "gender_logits", name);
        var probs = ag.GenderLogits.softmax(1)[0].data<float>().ToArray();
        bool male = probs[0] > 0.5;
        Assert.Equal(face.GetProperty("gender").GetString(), male ? "male" : "female");
        Assert.Equal(face.GetProperty("gender_probability").GetDouble(), male ? probs[0] : probs[1], 4);
        var desc = nets.Recognition.forward(x150);
        Close(desc, face.GetProperty("descriptor"), "descriptor", name);

        if (c.TryGetProperty("mirror_descriptor_distance", out var md))
        {
            var dm = nets.Recognition.forward(TfOps.ToNetInput(image.flip(3), 150, true, FaceApiMeans.Face));
            Assert.Equal(md.GetDouble(), (desc - dm).norm().item<float>(), 4);
        }
        if (c.TryGetProperty("shifted_crop", out var sc))
        {
            var s = sc.GetProperty("shift_xy").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var r = c.GetProperty("face_crop_rect_xywh").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var photo = TestImages.Astronaut255();
            var shifted = photo[.., .., (r[1] + s[1])..(r[1] + s[1] + r[3]), (r[0] + s[0])..(r[0] + s[0] + r[2])];
            var ds = nets.Recognition.forward(TfOps.ToNetInput(shifted, 150, true, FaceApiMeans.Face));
            Assert.Equal(sc.GetProperty("descriptor_distance").GetDouble(), (desc - ds).norm().item<float>(), 4);
        }
    }
}
