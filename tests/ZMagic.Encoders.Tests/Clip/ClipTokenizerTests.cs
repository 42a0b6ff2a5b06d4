using System.Text.Json;
using ZMagic.Encoders.Clip;
using ZMagic.TestSupport;

namespace ZMagic.Encoders.Tests.Clip;

public class ClipTokenizerTests
{
    private static readonly Lazy<ClipTokenizer> Truncating = new(() =>
        ClipTokenizer.FromSimpleVocab(VocabPath, new ClipTokenizerOptions(Truncate: true)));

    private static readonly Lazy<ClipTokenizer> Strict = new(() => ClipTokenizer.FromSimpleVocab(VocabPath));

    private static string VocabPath => Path.Combine(Golden.Root, "clip", "bpe_simple_vocab_16e6.txt.gz");

    /// <summary>Every tokens.json under every golden root, with each case index.</summary>
    public static TheoryData<string, int> TokenCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var root in Golden.Roots())
        {
            var file = Path.Combine(root, "clip", "tokens.json");
            if (!File.Exists(file)) continue;
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            int n = doc.RootElement.GetProperty("cases").GetArrayLength();
            for (int i = 0; i < n; i++) data.Add(file, i);
        }
        return data;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(string Vocab, int Context, bool Truncate), ClipTokenizer> ByFile = new();

    /// <summary>The vocabulary beside a tokens.json (its own root's clip/ folder), else the main root's.</summary>
    private static string VocabFor(string tokensJson)
    {
        var own = Path.Combine(Path.GetDirectoryName(tokensJson)!, "bpe_simple_vocab_16e6.txt.gz");
        return File.Exists(own) ? own : VocabPath;
    }

    [Theory]
    [Trait("Category", "Golden")]
    [MemberData(nameof(TokenCases))]
    public void Matches_reference_tokens_exactly(string tokensJson, int index)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(tokensJson));
        var root = doc.RootElement;
        var c = root.GetProperty("cases")[index];
        // context_length, sot and eot come from the file (the visible one: 77, 49406, 49407).
        int context = root.TryGetProperty("context_length", out var cl) ? cl.GetInt32() : 77;
        string vocab = VocabFor(tokensJson);
        var truncating = ByFile.GetOrAdd((vocab, context, true), k => ClipTokenizer.FromSimpleVocab(k.Vocab, new ClipTokenizerOptions(ContextLength: k.Context, Truncate: true)));
        var strict = ByFile.GetOrAdd((vocab, context, false), k => ClipTokenizer.FromSimpleVocab(k.Vocab, new ClipTokenizerOptions(ContextLength: k.Context)));
        string text = c.GetProperty("text").GetString()!;
        var expectedBpe = c.GetProperty("bpe_tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        var expectedRow = c.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        bool truncated = c.GetProperty("truncated").GetBoolean();
        Assert.Equal(context, expectedRow.Length);
        if (root.TryGetProperty("sot", out var sot)) Assert.Equal(sot.GetInt64(), expectedRow[0]);
        if (root.TryGetProperty("eot", out var eot)) Assert.Contains(eot.GetInt64(), expectedRow);

        Assert.Equal(expectedBpe, truncating.EncodeIds(text).ToArray());
        Assert.Equal(expectedRow, truncating.EncodeRow(text));
        if (truncated)
        {
            var ex = Assert.Throws<ArgumentException>(() => strict.EncodeRow(text));
            Assert.Contains("too long", ex.Message);
            Assert.Contains(context.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Message);
        }
        else
        {
            Assert.Equal(expectedRow, strict.EncodeRow(text));
        }
    }

    [Fact]
    public void Vocab_json_and_merges_give_the_same_ids_as_the_gz_file()
    {
        // Write the HF files from the gz vocabulary and check both loaders agree.
        var dir = Directory.CreateTempSubdirectory("zmagic-tok-");
        try
        {
            var vocab = Truncating.Value.Bpe.Vocabulary.OrderBy(kv => kv.Value).ToList();
            Assert.Equal(49408, vocab.Count);
            File.WriteAllText(Path.Combine(dir.FullName, "vocab.json"), JsonSerializer.Serialize(vocab.ToDictionary(kv => kv.Key, kv => kv.Value)));
            var merges = ReadMerges();
            File.WriteAllLines(Path.Combine(dir.FullName, "merges.txt"), new[] { "#version: 0.2" }.Concat(merges));
            var hf = ClipTokenizer.FromFolder(dir.FullName);
            foreach (var text in new[] { "a photo of a cat", "Grüße aus München", "emoji 😀🎉👍", "it's a dog's life", "aaaaaaaaaaaaaaaa" })
                Assert.Equal(Truncating.Value.EncodeIds(text).ToArray(), hf.EncodeIds(text).ToArray());
        }
        finally { dir.Delete(true); }
    }

    private static IEnumerable<string> ReadMerges()
    {
        using var gz = new System.IO.Compression.GZipStream(File.OpenRead(VocabPath), System.IO.Compression.CompressionMode.Decompress);
        using var reader = new StreamReader(gz);
        var lines = reader.ReadToEnd().Split('\n');
        return lines.Skip(1).Take(ClipTokenizer.MergeCount).ToList();
    }

    [Fact]
    public void Sd1_padding_uses_end_token()
    {
        var sd = ClipTokenizer.FromSimpleVocab(VocabPath, ClipTokenizerOptions.StableDiffusion1);
        var row = sd.EncodeRow("a photo of a cat");
        Assert.Equal(new long[] { 49406, 320, 1125, 539, 320, 2368, 49407, 49407 }, row.Take(8).ToArray());
        Assert.All(row.Skip(7), id => Assert.Equal(49407, id));
    }

    [Fact]
    public void Tokenize_returns_int64_rows()
    {
        using var t = Truncating.Value.Tokenize("a photo of a cat", "blonde beauty");
        Assert.Equal(new long[] { 2, 77 }, t.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Int64, t.dtype);
        Assert.Equal(49407L, t[1, 3].item<long>());
    }

    [Fact]
    public void Missing_tokenizer_files_are_named()
    {
        var dir = Directory.CreateTempSubdirectory("zmagic-tok-");
        try
        {
            File.WriteAllText(Path.Combine(dir.FullName, "vocab.json"), "{}");
            var ex = Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromFolder(dir.FullName));
            Assert.Contains("merges.txt", ex.Message);
            Assert.DoesNotContain("vocab.json and", ex.Message);
            Assert.Throws<FileNotFoundException>(() => ClipTokenizer.FromSimpleVocab(Path.Combine(dir.FullName, "nope.txt.gz")));
            Assert.Throws<DirectoryNotFoundException>(() => ClipTokenizer.FromFolder(Path.Combine(dir.FullName, "absent")));
        }
        finally { dir.Delete(true); }
    }
}
