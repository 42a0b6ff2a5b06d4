using System.Text.Json;
using TorchSharp;
using Xunit;
using ZMagic.Core.IO;
using static TorchSharp.torch;

namespace ZMagic.TestSupport;

/// <summary>
/// Finds golden reference cases: ../shared/golden beside the repository (or ZMAGIC_GOLDEN_ROOT), plus every root
/// listed in ZMAGIC_GOLDEN_PATH (path-separated, each laid out as &lt;network&gt;/&lt;case&gt;/).
/// </summary>
public static class Golden
{
    private static readonly Lazy<string> RootLazy = new(FindRoot);

    /// <summary>The main golden root (contains arcface_irse50/, cagrad/, ...).</summary>
    public static string Root => RootLazy.Value;

    /// <summary>All roots: the main one, then those in ZMAGIC_GOLDEN_PATH.</summary>
    public static IEnumerable<string> Roots()
    {
        yield return Root;
        var extra = Environment.GetEnvironmentVariable("ZMAGIC_GOLDEN_PATH");
        if (string.IsNullOrWhiteSpace(extra)) yield break;
        foreach (var r in extra.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Directory.Exists(r)) throw new DirectoryNotFoundException($"ZMAGIC_GOLDEN_PATH names '{r}', which does not exist.");
            yield return Path.GetFullPath(r);
        }
    }

    /// <summary>
    /// Case ids of every case of <paramref name="network"/> in every root, for xunit MemberData. An id is
    /// "&lt;network&gt;/&lt;case&gt;" for the main root and "extra&lt;k&gt;:&lt;network&gt;/&lt;case&gt;" for the k-th root of
    /// ZMAGIC_GOLDEN_PATH, short enough that the case folder shows in the test name (xunit cuts long arguments).
    /// Resolve an id with <see cref="Dir"/>; <see cref="CaseJson"/>, <see cref="Load"/> and <see cref="File"/> accept ids.
    /// </summary>
    public static TheoryData<string> Cases(string network, Func<string, bool>? filter = null)
    {
        var data = new TheoryData<string>();
        var roots = Roots().ToList();
        for (int r = 0; r < roots.Count; r++)
        {
            var dir = Path.Combine(roots[r], network);
            if (!Directory.Exists(dir)) continue;
            foreach (var c in Directory.GetDirectories(dir).OrderBy(d => d, StringComparer.Ordinal))
            {
                if (!System.IO.File.Exists(Path.Combine(c, "case.json"))) continue;
                var id = (r == 0 ? "" : $"extra{r}:") + network + "/" + Path.GetFileName(c);
                if (filter is null || filter(id)) data.Add(id);
            }
        }
        if (data.Count == 0) throw new InvalidOperationException($"No golden cases found for '{network}' under {string.Join(", ", roots)}.");
        return data;
    }

    /// <summary>The absolute folder of a case id from <see cref="Cases"/> (an absolute path is returned unchanged).</summary>
    public static string Dir(string caseId)
    {
        ArgumentException.ThrowIfNullOrEmpty(caseId);
        if (Path.IsPathRooted(caseId)) return caseId;
        int root = 0;
        var rel = caseId;
        if (caseId.StartsWith("extra", StringComparison.Ordinal) && caseId.Contains(':'))
        {
            root = int.Parse(caseId[5..caseId.IndexOf(':')], System.Globalization.CultureInfo.InvariantCulture);
            rel = caseId[(caseId.IndexOf(':') + 1)..];
        }
        var dir = Path.Combine(Roots().ElementAt(root), rel);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"Golden case '{caseId}' not found at {dir}.");
        return dir;
    }

    /// <summary>Absolute folders of every case of <paramref name="network"/> in every root.</summary>
    public static IEnumerable<string> CaseDirectories(string network) => ((IEnumerable<object[]>)Cases(network)).Select(row => Dir((string)row[0]));

    /// <summary>A file of a case: <c>Dir(caseId)/name</c>.</summary>
    public static string File(string caseId, string name) => Path.Combine(Dir(caseId), name);

    /// <summary>Parses a case's case.json.</summary>
    public static JsonElement CaseJson(string caseDir)
    {
        using var doc = JsonDocument.Parse(System.IO.File.ReadAllText(File(caseDir, "case.json")));
        return doc.RootElement.Clone();
    }

    /// <summary>Loads a safetensors file of a case (inputs.safetensors, outputs.safetensors, ...).</summary>
    public static Dictionary<string, Tensor> Load(string caseDir, string file) => SafeTensors.Load(File(caseDir, file));

    private static string FindRoot()
    {
        var env = Environment.GetEnvironmentVariable("ZMAGIC_GOLDEN_ROOT");
        if (!string.IsNullOrWhiteSpace(env)) return Path.GetFullPath(env);
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            if (System.IO.File.Exists(Path.Combine(dir.FullName, "ZMagic.sln")))
            {
                var candidate = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "golden"));
                if (Directory.Exists(candidate)) return candidate;
                throw new DirectoryNotFoundException($"Golden data not found at {candidate} (expected ../shared/golden beside the repository; or set ZMAGIC_GOLDEN_ROOT).");
            }
            dir = dir.Parent;
        }
        throw new DirectoryNotFoundException("Could not find the repository root (ZMagic.sln) above " + AppContext.BaseDirectory);
    }
}

/// <summary>Numeric comparisons with golden tolerances.</summary>
public static class TensorAssert
{
    /// <summary>Asserts <c>|a - b| &lt;= abs + rel * |b|</c> elementwise (computed in float64), naming the worst element.</summary>
    public static void Close(Tensor actual, Tensor expected, double abs, double rel, string what)
    {
        Assert.True(actual.shape.SequenceEqual(expected.shape),
            $"{what}: shape [{string.Join(", ", actual.shape)}] != expected [{string.Join(", ", expected.shape)}]");
        using var scope = torch.NewDisposeScope();
        var a = actual.detach().cpu().to(ScalarType.Float64);
        var b = expected.detach().cpu().to(ScalarType.Float64);
        var excess = (a - b).abs() - (b.abs() * rel + abs);
        if (excess.numel() == 0) return;
        long idx = excess.flatten().argmax().item<long>();
        double worst = excess.flatten()[idx].item<double>();
        if (worst > 0 || double.IsNaN(worst) || a.isnan().any().item<bool>())
        {
            double av = a.flatten()[idx].item<double>(), bv = b.flatten()[idx].item<double>();
            Assert.Fail($"{what}: element {idx} = {av:R}, expected {bv:R} (|diff| {Math.Abs(av - bv):E3} > abs {abs:E1} + rel {rel:E1}*|ref|); max abs diff {(a - b).abs().max().item<double>():E3}");
        }
    }

    /// <summary>Asserts <c>||a - b|| / ||b|| &lt;= tol</c>.</summary>
    public static void RelL2(Tensor actual, Tensor expected, double tol, string what)
    {
        Assert.True(actual.shape.SequenceEqual(expected.shape),
            $"{what}: shape [{string.Join(", ", actual.shape)}] != expected [{string.Join(", ", expected.shape)}]");
        using var scope = torch.NewDisposeScope();
        var a = actual.detach().cpu().to(ScalarType.Float64);
        var b = expected.detach().cpu().to(ScalarType.Float64);
        double num = (a - b).norm().item<double>(), den = b.norm().item<double>();
        double r = den > 0 ? num / den : num;
        Assert.True(r <= tol, $"{what}: rel L2 error {r:E3} > {tol:E1}");
    }
}
