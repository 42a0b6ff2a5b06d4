using System.Text.RegularExpressions;
using ZMagic.Core.Guidance;
using ZMagic.Docs;
using ZMagic.Guidance.Generation;

namespace ZMagic.Guidance.Tests.Packaging;

/// <summary>
/// The docs' C# snippets are docs/snippets/*.cs, compiled into this test project. These tests check that every
/// ```csharp block in docs/*.md is exactly a snippet region (so no uncompiled code is shown) and run the snippets that
/// need no downloaded weights.
/// </summary>
public sealed class DocSnippetTests
{
    private static string Docs => Path.Combine(RepoPaths.Root, "docs");

    private static Dictionary<string, string> Snippets()
    {
        var result = new Dictionary<string, string>();
        foreach (var cs in Directory.GetFiles(Path.Combine(Docs, "snippets"), "*.cs"))
            foreach (Match m in Regex.Matches(File.ReadAllText(cs).ReplaceLineEndings("\n"),
                         @"^([ \t]*)// <snippet:([\w-]+)>\n(.*?)^[ \t]*// </snippet>", RegexOptions.Singleline | RegexOptions.Multiline))
            {
                int indent = m.Groups[1].Length;
                var lines = m.Groups[3].Value.TrimEnd('\n').Split('\n')
                    .Select(l => string.IsNullOrWhiteSpace(l) ? "" : l[Math.Min(indent, l.Length)..]);
                Assert.True(result.TryAdd(m.Groups[2].Value, string.Join("\n", lines)), $"snippet '{m.Groups[2].Value}' defined twice");
            }
        return result;
    }

    public static TheoryData<string> Pages() =>
        new(Directory.GetFiles(Path.Combine(RepoPaths.Root, "docs"), "*.md").Select(Path.GetFileName).Order()!);

    private static readonly string[] ConceptPages = { "getting-started", "backbones", "conditions", "strategies", "combiners", "trace" };

    [Fact]
    public void Every_concept_page_exists()
    {
        foreach (var page in ConceptPages)
            Assert.True(File.Exists(Path.Combine(Docs, page + ".md")), $"docs/{page}.md is missing");
    }

    [Theory]
    [MemberData(nameof(Pages))]
    public void Every_csharp_block_is_a_compiled_snippet(string page)
    {
        var snippets = Snippets();
        string md = File.ReadAllText(Path.Combine(Docs, page)).ReplaceLineEndings("\n");
        var blocks = Regex.Matches(md, @"(?:<!-- snippet: ([\w-]+) -->\n)?```csharp\n(.*?)```", RegexOptions.Singleline);
        // The concept pages teach through code; the other pages may have none, but any C# they show must compile.
        if (ConceptPages.Contains(Path.GetFileNameWithoutExtension(page))) Assert.NotEmpty(blocks);
        foreach (Match b in blocks)
        {
            Assert.True(b.Groups[1].Success, $"{page}: a ```csharp block has no <!-- snippet: NAME --> marker, so nothing compiles it:\n{b.Value}");
            string name = b.Groups[1].Value;
            Assert.True(snippets.ContainsKey(name), $"{page}: snippet '{name}' is not in docs/snippets/*.cs");
            Assert.True(snippets[name] + "\n" == b.Groups[2].Value,
                $"{page}: block '{name}' differs from docs/snippets; run scripts/sync-doc-snippets.py. Expected:\n{snippets[name]}");
        }
    }

    [Fact]
    public async Task Getting_started_and_previews_run()
    {
        using var result = await DocSnippets.GettingStarted();
        Assert.Equal([1L, 1, 16, 16], result.Images.shape);
        Assert.True(double.IsFinite(result.Trace.Steps[^1].Conditions[0].Energy));

        var generator = new ZMagicGenerator(new GaussianPrior(1, 16, 0.5), new ZMagicGeneratorDefaults { Steps = 20 });
        Assert.Equal(4, await DocSnippets.Previews(generator, [new BrightnessCondition(0.4)]));
    }

    [Fact]
    public void Embedded_digits_prior_snippet_makes_digits_of_the_wanted_class()
    {
        using var result = DocSnippets.EmbeddedPrior();
        Assert.Equal([8L, 1, 32, 32], result.Images.shape);
        using var judge = ZMagic.Demo.Digits.DigitsModels.LoadJudge();
        using var noGrad = TorchSharp.torch.no_grad();
        using var x = result.Images.clamp(-1, 1);
        using var logits = judge.forward(x);
        var classes = logits.argmax(1).data<long>().ToArray();
        Assert.True(classes.Count(c => c == 3) >= 6, $"judged classes: {string.Join(",", classes)}");
    }

    [Fact]
    public void Strategies_combiners_and_trace_run()
    {
        var (vanilla, zmagic) = DocSnippets.Strategies(new GaussianPrior(1, 16, 0.5));
        using (vanilla)
        using (zmagic)
        {
            Assert.Equal("vanilla", vanilla.Trace.Strategy);
            Assert.StartsWith("zmagic", zmagic.Trace.Strategy);
            var dir = Directory.CreateTempSubdirectory("zmagic-trace");
            try
            {
                string csv = DocSnippets.Trace(zmagic, dir.FullName);
                Assert.Contains("brightness", csv);
                Assert.True(File.Exists(Path.Combine(dir.FullName, "trace.json")));
            }
            finally
            {
                dir.Delete(recursive: true);
            }
        }
        Assert.Equal(5, DocSnippets.Combiners().Select(c => c.Name).Distinct().Count());
    }

    [Fact]
    public void Preset_snippet_names_the_missing_checkpoint()
    {
        var e = Assert.ThrowsAny<Exception>(() => DocSnippets.LoadPreset("/no/such/celeba_hq.ckpt"));
        Assert.Contains("celeba_hq.ckpt", e.ToString());
    }
}
