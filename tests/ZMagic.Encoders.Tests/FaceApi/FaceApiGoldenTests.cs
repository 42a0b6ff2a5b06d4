using System.Security.Cryptography;
using System.Text.Json;
using ZMagic.Encoders.FaceApi;
using ZMagic.TestSupport;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Tests.FaceApi;

/// <summary>
/// Parity with the package's own JavaScript (tfjs CPU) on the shared golden data: synthetic.json, and every case folder
/// under faceapi/ (face cases and detector cases, dispatched on content), plus this project's own golden data.
/// </summary>
[Collection(FaceApiCollection.Name)]
[Trait("Category", "Golden")]
[Trait("Category", "Slow")]
public sealed class FaceApiGoldenTests(FaceApiFixture nets, Xunit.Abstractions.ITestOutputHelper log)
{
    private static readonly float[] NoMean = { 0f, 0f, 0f };

    /// <summary>x[h, w, c] = (7h + 13w + 29c) mod 256 as a [1, 3, n, n] image in 0..255.</summary>
    internal static Tensor Synthetic(int n)
    {
        var data = new float[3 * n * n];
        for (int c = 0; c < 3; c++)
            for (int h = 0; h < n; h++)
                for (int w = 0; w < n; w++)
                    data[(c * n + h) * n + w] = (7 * h + 13 * w + 29 * c) % 256;
        return tensor(data, new long[] { 1, 3, n, n });
    }

    private static Tensor Json1D(JsonElement root, string name) =>
        tensor(root.GetProperty(name).EnumerateArray().Select(e => e.GetDouble()).ToArray(), ScalarType.Float64);

    [Fact]
    public void SyntheticJson_MatchesTfjs()
    {
        using var scope = NewDisposeScope();
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Golden.Root, "faceapi", "synthetic.json")));
        var root = doc.RootElement;
        // synthetic.json states no tolerance: the golden default (abs 1e-4, rel 1e-4) is used for every array.
        const double abs = 1e-4, rel = 1e-4;
        var x112 = TfOps.ToNetInput(Synthetic(112), 112, true, FaceApiMeans.Face);
        var x150 = TfOps.ToNetInput(Synthetic(150), 150, true, FaceApiMeans.Face);
        using var _ = no_grad();
        var lm = nets.Landmarks.forward(x112);
        TensorAssert.Close(lm[0], Json1D(root, "lm68_raw"), abs, rel, "lm68_raw");
        TensorAssert.Close(FaceLandmarks.PostProcess(lm, 112, 112)[0], Json1D(root, "lm68_post"), abs, rel, "lm68_post");
        TensorAssert.Close(nets.LandmarksTiny.forward(x112)[0], Json1D(root, "lm68tiny_raw"), abs, rel, "lm68tiny_raw");
        TensorAssert.Close(nets.Recognition.forward(x150)[0], Json1D(root, "desc"), abs, rel, "desc");
        var ag = nets.AgeGender.forward(x112);
        TensorAssert.Close(ag.Age, Json1D(root, "age"), abs, rel, "age");
        TensorAssert.Close(ag.GenderLogits[0], Json1D(root, "gender_logits"), abs, rel, "gender_logits");
        TensorAssert.Close(nets.Expression.forward(x112).softmax(1)[0], Json1D(root, "expr"), abs, rel, "expr");
        // lm68_rect_post is not checked: the file does not say which non-square input produced it (golden faceapi/README.md).
    }

    // Dispatch on content (faceapi/README.md): a face case has a "runs" list in case.json; a detector case has
    // "input_size" in inputs.safetensors. A case that is neither (or both) fails Every_case_is_claimed.
    private static bool IsFaceCase(string d) => Golden.CaseJson(d).TryGetProperty("runs", out _);

    private static bool IsDetectorCase(string d) => Golden.Load(d, "inputs.safetensors").ContainsKey("input_size");

    public static TheoryData<string> AllCases() => Golden.Cases("faceapi");

    public static TheoryData<string> FaceCases() => Golden.Cases("faceapi", IsFaceCase);

    public static TheoryData<string> DetectorCases() => Golden.Cases("faceapi", IsDetectorCase);

    [Theory]
    [MemberData(nameof(AllCases))]
    public void Every_case_is_claimed(string caseDir)
    {
        bool face = IsFaceCase(caseDir), detector = IsDetectorCase(caseDir);
        Assert.True(face ^ detector, $"{caseDir}: face case (runs) {face}, detector case (input_size) {detector}; expected exactly one.");
    }

    [Theory]
    [MemberData(nameof(FaceCases))]
    public void FaceCase_MatchesTfjs(string caseDir)
    {
        using var scope = NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        var image = inputs["image_u8"];
        long h = image.shape[0], w = image.shape[1];
        var image255 = TestImages.HwcToNchw(image);
        using var _ = no_grad();
        // Every stored input_* (not only those a run names) must be rebuilt from image_u8 bit-exactly.
        foreach (var (inputName, storedNhwc) in inputs.Where(kv => kv.Key.StartsWith("input_", StringComparison.Ordinal)))
        {
            var stored = storedNhwc.permute(0, 3, 1, 2);
            var rebuilt = TfOps.ToNetInput(image255, stored.shape[2], true, FaceApiMeans.Face);
            Assert.True(rebuilt.shape.SequenceEqual(stored.shape) && rebuilt.eq(stored).all().item<bool>(), $"{caseDir}: {inputName} rebuilt from image_u8 differs");
        }
        foreach (var run in json.GetProperty("runs").EnumerateArray())
        {
            string net = run.GetProperty("net").GetString()!;
            string inputName = run.GetProperty("input").GetString()!;
            var stored = inputs[inputName].permute(0, 3, 1, 2);
            long size = stored.shape[2];
            // Our preprocessing must rebuild the stored network input from the raw image bit-exactly.
            var rebuilt = TfOps.ToNetInput(image255, size, true, FaceApiMeans.Face);
            Assert.True(rebuilt.shape.SequenceEqual(stored.shape) && rebuilt.eq(stored).all().item<bool>(), $"{caseDir}: {inputName} rebuilt from image_u8 differs, max |diff| {(rebuilt - stored).abs().max().item<float>():E3}");
            var got = new Dictionary<string, Tensor>();
            switch (net)
            {
                case "FaceLandmark68Net":
                case "FaceLandmark68TinyNet":
                {
                    FaceProcessorNet m = net == "FaceLandmark68Net" ? nets.Landmarks : nets.LandmarksTiny;
                    string p = net == "FaceLandmark68Net" ? "lm68" : "lm68tiny";
                    got[$"{p}/features"] = m.Features(stored);
                    got[$"{p}/raw"] = m.forward(stored);
                    got[$"{p}/post"] = FaceLandmarks.PostProcess(got[$"{p}/raw"], w, h);
                    got[$"{p}/points_px"] = FaceLandmarks.ToPixels(got[$"{p}/post"], w, h)[0];
                    break;
                }
                case "FaceExpressionNet":
                    got["expr/features"] = nets.Expression.Features(stored);
                    got["expr/logits"] = nets.Expression.forward(stored);
                    got["expr/probs"] = got["expr/logits"].softmax(1);
                    break;
                case "AgeGenderNet":
                {
                    got["agegender/pooled"] = nets.AgeGender.Pooled(stored);
                    var o = nets.AgeGender.forward(stored);
                    got["agegender/age"] = o.Age;
                    got["agegender/gender_logits"] = o.GenderLogits;
                    got["agegender/gender_probs"] = o.GenderLogits.softmax(1);
                    break;
                }
                case "FaceRecognitionNet":
                    got["recog/descriptor"] = nets.Recognition.forward(stored);
                    if (outputs.ContainsKey("recog/distance_to_crop"))
                    {
                        Assert.Contains("_face_mirror", Path.GetFileName(caseDir), StringComparison.Ordinal);
                        string other = Path.Combine(Path.GetDirectoryName(caseDir)!, Path.GetFileName(caseDir).Replace("_face_mirror", "_face_crop"));
                        var otherInput = Golden.Load(other, "inputs.safetensors")["input_150"].permute(0, 3, 1, 2);
                        var d2 = nets.Recognition.forward(otherInput);
                        got["recog/distance_to_crop"] = (got["recog/descriptor"].to(ScalarType.Float64) - d2.to(ScalarType.Float64)).norm();
                    }
                    break;
                default:
                    Assert.Fail($"{caseDir}: unknown net '{net}'");
                    break;
            }
            foreach (var o in run.GetProperty("outputs").EnumerateArray())
            {
                string name = o.GetString()!;
                Assert.True(got.ContainsKey(name), $"{caseDir}: output {name} of {net} not computed");
                CompareOutput(json, name, got[name], outputs[name], caseDir, log);
            }
        }
    }

    [Theory]
    [MemberData(nameof(DetectorCases))]
    public void DetectorCase_MatchesTfjs(string caseDir)
    {
        using var scope = NewDisposeScope();
        var json = Golden.CaseJson(caseDir);
        var inputs = Golden.Load(caseDir, "inputs.safetensors");
        var outputs = Golden.Load(caseDir, "outputs.safetensors");
        int size = (int)inputs["input_size"].item<long>();
        var dims = inputs["image_dims_hw"].data<long>().ToArray();
        int imgH = (int)dims[0], imgW = (int)dims[1];
        Tensor input;
        if (inputs.TryGetValue("input", out var storedInput))
        {
            input = storedInput.permute(0, 3, 1, 2);
            if (inputs.TryGetValue("image_u8", out var img))
                Assert.True(TfOps.ToNetInput(TestImages.HwcToNchw(img), size, false, FaceApiMeans.TinyFaceDetector).eq(input).all().item<bool>(), "rebuilt detector input differs");
        }
        else
        {
            input = TfOps.ToNetInput(TestImages.HwcToNchw(inputs["image_u8"]), size, false, FaceApiMeans.TinyFaceDetector);
        }
        // The README: check the sha256 of the (stored or rebuilt) NHWC float32 input whenever the field exists.
        if (json.TryGetProperty("preprocessing", out var prep) && prep.TryGetProperty("input_sha256_f32_le", out var sha))
        {
            var nhwc = input.permute(0, 2, 3, 1).contiguous().data<float>().ToArray();
            var bytes = new byte[nhwc.Length * 4];
            Buffer.BlockCopy(nhwc, 0, bytes, 0, bytes.Length);
            Assert.Equal(sha.GetString(), Convert.ToHexStringLower(SHA256.HashData(bytes)));
        }
        else Assert.True(inputs.ContainsKey("input"), $"{caseDir}: no stored input and no input_sha256_f32_le to check the rebuilt one against");
        var anchors = inputs["anchors_wh"];
        Assert.Equal(TinyFaceDetector.Anchors.Count, (int)anchors.shape[0]);
        for (int a = 0; a < anchors.shape[0]; a++)
        {
            Assert.Equal(inputs["anchors_wh"][a, 0].item<double>(), TinyFaceDetector.Anchors[a].W);
            Assert.Equal(inputs["anchors_wh"][a, 1].item<double>(), TinyFaceDetector.Anchors[a].H);
        }
        Tensor raw;
        using (no_grad()) raw = nets.Detector.forward(input);
        CompareOutput(json, "raw", raw.permute(0, 2, 3, 1), outputs["raw"], caseDir, log);

        var (rw, rh) = TinyFaceDetector.ReshapedDimensions(imgW, imgH, size);
        var tags = outputs.Keys.Where(k => k.StartsWith("th", StringComparison.Ordinal)).Select(k => k[..k.IndexOf('/')]).Distinct().ToList();
        Assert.NotEmpty(tags);
        foreach (var tag in tags)
        {
            double th = json.GetProperty("thresholds").GetProperty(tag).GetProperty("score_threshold").GetDouble();
            var cands = TinyFaceDetector.DecodeCandidates(raw, rw, rh, th);
            var keep = TinyFaceDetector.NonMaxSuppression(cands, size);
            var dets = keep.Select(i => cands[i]).ToList();
            var got = new Dictionary<string, Tensor>
            {
                [$"{tag}/cand_score"] = tensor(cands.Select(c => c.Score).ToArray()),
                [$"{tag}/cand_box_rel_xywh"] = tensor(cands.SelectMany(c => new[] { c.X, c.Y, c.Width, c.Height }).ToArray(), new long[] { cands.Count, 4 }),
                [$"{tag}/cand_cell_rca"] = tensor(cands.SelectMany(c => new long[] { c.Row, c.Col, c.Anchor }).ToArray(), new long[] { cands.Count, 3 }),
                [$"{tag}/nms_keep"] = tensor(keep.Select(i => (long)i).ToArray()),
                [$"{tag}/det_score"] = tensor(dets.Select(c => c.Score).ToArray()),
                [$"{tag}/det_box_px_xywh"] = tensor(dets.SelectMany(c => new[] { c.X * imgW, c.Y * imgH, c.Width * imgW, c.Height * imgH }).ToArray(), new long[] { dets.Count, 4 }),
                [$"{tag}/det_crop_rect_xywh"] = tensor(dets.Select(c => new FaceDetection(c.Score, c.X * imgW, c.Y * imgH, c.Width * imgW, c.Height * imgH, imgW, imgH).ToFaceBox())
                    .SelectMany(b => new long[] { b.Left, b.Top, b.Width, b.Height }).ToArray(), new long[] { dets.Count, 4 }),
            };
            foreach (var (name, value) in got)
            {
                Assert.True(outputs.ContainsKey(name), $"{caseDir}: no stored {name}");
                CompareOutput(json, name, value, outputs[name], caseDir, log);
            }
        }
    }

    internal static void CompareOutput(JsonElement caseJson, string name, Tensor actual, Tensor expected, string caseDir, Xunit.Abstractions.ITestOutputHelper? log = null)
    {
        if (actual.numel() == expected.numel() && actual.numel() > 0)
            log?.WriteLine($"{name}: max |diff| {(actual.reshape(expected.shape).to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs().max().item<double>():E2}");
        string what = $"{Path.GetFileName(caseDir)}: {name}";
        JsonElement tol = caseJson.GetProperty("tolerance");
        if (caseJson.TryGetProperty("tolerance_per_output", out var per) && per.TryGetProperty(name, out var t)) tol = t;
        if (tol.ValueKind == JsonValueKind.String)
        {
            Assert.StartsWith("exact", tol.GetString());
            Assert.True(actual.shape.SequenceEqual(expected.shape), $"{what}: shape [{string.Join(",", actual.shape)}] != [{string.Join(",", expected.shape)}]");
            Assert.Equal(expected.to(ScalarType.Int64).data<long>().ToArray(), actual.to(ScalarType.Int64).data<long>().ToArray());
            return;
        }
        TensorAssert.Close(actual.reshape(expected.shape), expected, tol.GetProperty("abs").GetDouble(), tol.GetProperty("rel").GetDouble(), what);
        Assert.Equal(expected.numel(), actual.numel());
    }
}
