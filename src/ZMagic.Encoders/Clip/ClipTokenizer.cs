using System.IO.Compression;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using static TorchSharp.torch;

namespace ZMagic.Encoders.Clip;

/// <summary>How a <see cref="ClipTokenizer"/> fills the positions after the end token.</summary>
public enum ClipPadding
{
    /// <summary>Pad with id 0 (<c>"!"</c>), as OpenAI's <c>clip.tokenize</c> (and SD 2.x) do.</summary>
    Zero,

    /// <summary>Pad with the end token 49407, as Stable Diffusion 1.x's tokenizer does.</summary>
    EndOfText,
}

/// <summary>Options of a <see cref="ClipTokenizer"/>.</summary>
/// <param name="ContextLength">Sequence length of every encoded row (77 for every released CLIP).</param>
/// <param name="Padding">The id used after the end token.</param>
/// <param name="Truncate">
/// When true, over-long text keeps its first <c>ContextLength</c> ids with the end token forced last (as
/// <c>clip.tokenize(..., truncate=True)</c>); when false such text raises an <see cref="ArgumentException"/>.
/// </param>
public sealed record ClipTokenizerOptions(int ContextLength = 77, ClipPadding Padding = ClipPadding.Zero, bool Truncate = false)
{
    /// <summary>OpenAI CLIP's <c>clip.tokenize</c> defaults: 77 ids, zero padding, no truncation.</summary>
    public static ClipTokenizerOptions OpenAI { get; } = new();

    /// <summary>Stable Diffusion 1.x: 77 ids padded with the end token, truncated.</summary>
    public static ClipTokenizerOptions StableDiffusion1 { get; } = new(77, ClipPadding.EndOfText, true);
}

/// <summary>
/// CLIP's byte-level BPE tokenizer (openai/CLIP <c>simple_tokenizer.py</c> with <c>clip.tokenize</c>), built on
/// Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>.
/// </summary>
/// <remarks>
/// <para>Text goes through the reference clean-up first: HTML entities are decoded twice, the text is stripped,
/// every whitespace run becomes one space, and it is lower-cased. It is then split with CLIP's pattern
/// (<c>&lt;|startoftext|&gt;|&lt;|endoftext|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>,
/// case-insensitive), each piece is mapped to GPT-2's byte-to-unicode alphabet and merged by BPE with a
/// <c>&lt;/w&gt;</c> end-of-word suffix. Rows are <c>[49406, ids..., 49407, pad...]</c>.</para>
/// <para>Not replicated: <c>ftfy.fix_text</c> (mojibake repair, curly-quote and ligature folding, NFC), so text
/// that ftfy would change can give other ids; normalise such text yourself. HTML decoding uses .NET's
/// <see cref="WebUtility.HtmlDecode(string)"/>, which knows the HTML 4 entity names, not all HTML 5 ones;
/// lower-casing is .NET's invariant one (Python's differs for a handful of characters such as U+0130).</para>
/// </remarks>
public sealed class ClipTokenizer
{
    /// <summary>Id of <c>&lt;|startoftext|&gt;</c>.</summary>
    public const int StartOfText = 49406;

    /// <summary>Id of <c>&lt;|endoftext|&gt;</c>.</summary>
    public const int EndOfText = 49407;

    /// <summary>Number of merges <c>simple_tokenizer.py</c> takes from <c>bpe_simple_vocab_16e6.txt.gz</c>.</summary>
    public const int MergeCount = 49152 - 256 - 2;

    private const string StartText = "<|startoftext|>";
    private const string EndText = "<|endoftext|>";

    /// <summary>CLIP's pre-tokenizer pattern (matched case-insensitively).</summary>
    public const string Pattern = @"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

    private readonly BpeTokenizer _bpe;

    private ClipTokenizer(BpeTokenizer bpe, ClipTokenizerOptions options)
    {
        _bpe = bpe;
        Options = options;
    }

    /// <summary>The options in use.</summary>
    public ClipTokenizerOptions Options { get; }

    /// <summary>The underlying Microsoft.ML.Tokenizers BPE model (configured for CLIP, without SOT/EOT/padding).</summary>
    public BpeTokenizer Bpe => _bpe;

    /// <summary>
    /// Loads <c>vocab.json</c> and <c>merges.txt</c> from <paramref name="folder"/> (a Hugging Face CLIP or Stable
    /// Diffusion <c>tokenizer/</c> folder), or, when the folder holds only <c>bpe_simple_vocab_16e6.txt.gz</c>, that.
    /// </summary>
    /// <exception cref="FileNotFoundException">Neither file set is present.</exception>
    public static ClipTokenizer FromFolder(string folder, ClipTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Tokenizer folder '{folder}' does not exist.");
        string vocab = Path.Combine(folder, "vocab.json"), merges = Path.Combine(folder, "merges.txt");
        if (File.Exists(vocab) && File.Exists(merges)) return FromVocabAndMerges(vocab, merges, options);
        string gz = Path.Combine(folder, "bpe_simple_vocab_16e6.txt.gz");
        if (File.Exists(gz)) return FromSimpleVocab(gz, options);
        var missing = new[] { vocab, merges }.Where(f => !File.Exists(f));
        throw new FileNotFoundException(
            $"No CLIP tokenizer files in '{folder}': missing {string.Join(" and ", missing.Select(Path.GetFileName))} " +
            "(and no bpe_simple_vocab_16e6.txt.gz). A Hugging Face CLIP folder or an SD 'tokenizer/' folder has both.");
    }

    /// <summary>Creates the tokenizer from Hugging Face <c>vocab.json</c> and <c>merges.txt</c> files.</summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    public static ClipTokenizer FromVocabAndMerges(string vocabJson, string mergesTxt, ClipTokenizerOptions? options = null)
    {
        foreach (var f in new[] { vocabJson, mergesTxt })
            if (!File.Exists(f)) throw new FileNotFoundException($"CLIP tokenizer file '{f}' does not exist.", f);
        var bpeOptions = new BpeOptions(vocabJson, mergesTxt);
        return Create(bpeOptions, options, vocabJson);
    }

    /// <summary>
    /// Creates the tokenizer from OpenAI's <c>bpe_simple_vocab_16e6.txt.gz</c>, building the vocabulary exactly as
    /// <c>simple_tokenizer.py</c>: 256 byte symbols, the same with <c>&lt;/w&gt;</c>, one entry per merge (the first
    /// <see cref="MergeCount"/> lines after the header), then the two special tokens (49,408 in all).
    /// </summary>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="InvalidDataException">The file has fewer merges than CLIP uses.</exception>
    public static ClipTokenizer FromSimpleVocab(string bpeGzPath, ClipTokenizerOptions? options = null)
    {
        if (!File.Exists(bpeGzPath)) throw new FileNotFoundException($"CLIP BPE file '{bpeGzPath}' does not exist.", bpeGzPath);
        string text;
        using (var gz = new GZipStream(File.OpenRead(bpeGzPath), CompressionMode.Decompress))
        using (var reader = new StreamReader(gz, Encoding.UTF8))
            text = reader.ReadToEnd();
        var lines = text.Split('\n');
        if (lines.Length < MergeCount + 1)
            throw new InvalidDataException($"'{bpeGzPath}' has {lines.Length - 1} merge lines; CLIP needs {MergeCount}.");
        var merges = new List<string>(MergeCount);
        var vocab = new List<KeyValuePair<string, int>>(49408);
        var byteSymbols = ByteToUnicodeOrder();
        foreach (var s in byteSymbols) vocab.Add(new(s, vocab.Count));
        foreach (var s in byteSymbols) vocab.Add(new(s + "</w>", vocab.Count));
        for (int i = 1; i <= MergeCount; i++)
        {
            var parts = lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2) throw new InvalidDataException($"'{bpeGzPath}' line {i + 1} is not a merge pair: '{lines[i]}'.");
            merges.Add(parts[0] + " " + parts[1]);
            vocab.Add(new(parts[0] + parts[1], vocab.Count));
        }
        vocab.Add(new(StartText, StartOfText));
        vocab.Add(new(EndText, EndOfText));
        var bpeOptions = new BpeOptions(vocab) { Merges = merges };
        return Create(bpeOptions, options, bpeGzPath);
    }

    private static ClipTokenizer Create(BpeOptions bpeOptions, ClipTokenizerOptions? options, string source)
    {
        options ??= ClipTokenizerOptions.OpenAI;
        if (options.ContextLength < 2) throw new ArgumentException($"ContextLength must be at least 2; got {options.ContextLength}.", nameof(options));
        var special = new Dictionary<string, int> { [StartText] = StartOfText, [EndText] = EndOfText };
        bpeOptions.EndOfWordSuffix = "</w>";
        bpeOptions.ByteLevel = true;
        bpeOptions.SpecialTokens = special;
        bpeOptions.Normalizer = new LowerCaseNormalizer();
        bpeOptions.PreTokenizer = new RegexPreTokenizer(new Regex(Pattern, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.Compiled), special);
        var bpe = BpeTokenizer.Create(bpeOptions);
        var check = bpe.EncodeToIds(EndText);
        if (check.Count != 1 || check[0] != EndOfText)
            throw new InvalidDataException($"'{source}' does not give <|endoftext|> the id {EndOfText}; it is not a CLIP vocabulary.");
        return new ClipTokenizer(bpe, options);
    }

    /// <summary>The reference text clean-up: HTML-unescape twice, strip, collapse whitespace, lower-case.</summary>
    public static string Clean(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = WebUtility.HtmlDecode(WebUtility.HtmlDecode(text));
        var sb = new StringBuilder(text.Length);
        bool pendingSpace = false;
        foreach (char c in text)
        {
            if (IsPythonSpace(c)) { pendingSpace = sb.Length > 0; continue; }
            if (pendingSpace) { sb.Append(' '); pendingSpace = false; }
            sb.Append(c);
        }
        return sb.ToString().ToLowerInvariant();
    }

    // Python's str.isspace (used by \s and strip) also counts the separators U+001C..U+001F.
    private static bool IsPythonSpace(char c) => char.IsWhiteSpace(c) || (c >= '\u001c' && c <= '\u001f');

    /// <summary>The BPE ids of <paramref name="text"/> without start/end tokens or padding.</summary>
    public IReadOnlyList<int> EncodeIds(string text) => _bpe.EncodeToIds(Clean(text));

    /// <summary>
    /// One row of <see cref="ClipTokenizerOptions.ContextLength"/> ids: start token, BPE ids, end token, padding.
    /// </summary>
    /// <exception cref="ArgumentException">The text is too long and truncation is off.</exception>
    public long[] EncodeRow(string text)
    {
        var ids = EncodeIds(text);
        int n = Options.ContextLength;
        var row = new long[n];
        long pad = Options.Padding == ClipPadding.EndOfText ? EndOfText : 0;
        Array.Fill(row, pad);
        if (ids.Count + 2 > n)
        {
            if (!Options.Truncate)
                throw new ArgumentException(
                    $"Input text is too long for context length {n}: it has {ids.Count} tokens plus start and end " +
                    $"(at most {n - 2} fit). Shorten it or create the tokenizer with Truncate = true. Text: \"{Shorten(text)}\"", nameof(text));
        }
        row[0] = StartOfText;
        int count = Math.Min(ids.Count, n - 2);
        for (int i = 0; i < count; i++) row[i + 1] = ids[i];
        // Truncation (clip.tokenize truncate=True) keeps the first n ids of [SOT, ids..., EOT] with EOT forced last,
        // which is the same as keeping the first n - 2 BPE ids.
        row[count + 1] = EndOfText;
        return row;
    }

    /// <summary>Encodes texts into an int64 tensor [N, ContextLength], as <c>clip.tokenize</c>.</summary>
    /// <exception cref="ArgumentException">A text is too long and truncation is off.</exception>
    public Tensor Tokenize(params string[] texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        int n = Options.ContextLength;
        var data = new long[texts.Length * n];
        for (int i = 0; i < texts.Length; i++) EncodeRow(texts[i]).CopyTo(data, i * n);
        return tensor(data, new long[] { texts.Length, n }, ScalarType.Int64);
    }

    private static string Shorten(string s) => s.Length <= 60 ? s : s[..57] + "...";

    // simple_tokenizer.bytes_to_unicode: printable Latin-1 bytes map to themselves (in byte order), the rest to
    // 256 + n; the dictionary's value order is printable bytes first, then the rest.
    private static List<string> ByteToUnicodeOrder()
    {
        var bs = new List<int>();
        for (int b = '!'; b <= '~'; b++) bs.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) bs.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) bs.Add(b);
        var cs = new List<int>(bs);
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            if (bs.Contains(b)) continue;
            bs.Add(b);
            cs.Add(256 + n++);
        }
        return cs.Select(c => ((char)c).ToString()).ToList();
    }
}
