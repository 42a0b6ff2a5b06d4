using ZMagic.Core.Guidance;
using System.Globalization;
using BenchmarkDotNet.Running;
using ZMagic.Benchmarking;

namespace ZMagic.Benchmarks;

/// <summary>
/// Entry point.
/// <list type="bullet">
/// <item><c>dotnet run -c Release --project benchmarks/ZMagic.Benchmarks -- --filter '*Combiner*' --inProcess</c>:
/// BenchmarkDotNet suites (in-process, so the build's GLIBCXX fix of libLibTorchSharp.so applies: the default
/// out-of-process toolchain rebuilds a generated project without it).</item>
/// <item><c>... -- compare --backbone celebahq --cases vanilla/sum/2,zmagic/cagrad/2 [--steps K] [--warmup W] [--batch B] [--device cpu] [--threads N] [--json FILE]</c>:
/// alternating side-by-side step measurement; medians and ratios to the first case.</item>
/// <item><c>... -- soak --backbone digits32 --method zmagic --combiner cagrad --conditions 3 --steps 1000 [--every 100] [--threads N]</c>:
/// memory over many steps.</item>
/// <item><c>... -- sd-memory [--size 512] [--method vanilla|zmagic]</c>: peak memory of one guided SD 1.5-sized step
/// (random weights).</item>
/// </list>
/// </summary>
public static class Program
{
    /// <summary>Runs the selected command or benchmarks ("sd-memory ..." runs <see cref="SdMemoryProbe"/>).</summary>
    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "sd-memory") return SdMemoryProbe.Run(args[1..]);
        if (args.Length > 0 && (args[0] == "compare" || args[0] == "soak"))
        {
            var o = Options(args);
            if (o.TryGetValue("threads", out var threads)) TorchSharp.torch.set_num_threads(int.Parse(threads, CultureInfo.InvariantCulture));
            // --allocator retain: NativeAllocator.RetainFreedMemory() (what the zmagic command does); default: glibc's defaults.
            string allocator = o.TryGetValue("allocator", out var a) ? a : "default";
            if (allocator is not ("default" or "retain")) throw new ArgumentException($"--allocator must be default or retain; got '{allocator}'.");
            bool retained = allocator == "retain" && ZMagic.Core.Native.NativeAllocator.RetainFreedMemory();
            Console.WriteLine($"# native allocator: {(retained ? "freed memory retained (NativeAllocator.RetainFreedMemory)" : "C library defaults")}");
            return args[0] == "compare" ? Compare(o) : Soak(o);
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }

    private static Dictionary<string, string> Options(string[] args)
    {
        var o = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 1; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                throw new ArgumentException($"Expected '--name value' pairs; got '{args[i]}'.");
            o[args[i][2..]] = args[++i];
        }
        return o;
    }

    private static string Get(Dictionary<string, string> o, string key, string fallback) => o.TryGetValue(key, out var v) ? v : fallback;

    private static int Compare(Dictionary<string, string> o)
    {
        var device = StepBenchmark.ParseDevice(Get(o, "device", "cpu"));
        using var denoiser = Backbones.Create(Get(o, "backbone", "digits32"), device);
        // --energies toy (default): cheap toy energies, so the denoiser's passes dominate; face: the real face encoders.
        string energies = Get(o, "energies", "toy");
        if (energies is not ("toy" or "face")) throw new ArgumentException($"--energies must be toy or face; got '{energies}'.");
        using var face = energies == "face" ? new FaceEnergies(device) : null;
        var cases = Get(o, "cases", "vanilla/sum/2,zmagic/cagrad/2").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(spec =>
        {
            var p = spec.Split('/');
            if (p.Length != 3) throw new ArgumentException($"Case '{spec}': expected method/combiner/conditions.");
            int n = int.Parse(p[2], CultureInfo.InvariantCulture);
            return new StepBenchmarkCase(spec, GuidanceMethods.Strategy(p[0]), GuidanceMethods.Combiner(p[1]),
                face?.Conditions(n, denoiser.Channels, denoiser.SampleSize, device) ?? ToyCondition.Many(n, denoiser.Channels, denoiser.SampleSize, device));
        }).ToList();
        Console.WriteLine($"# energies: {(face is null ? "toy" : "face (identity IR-SE50, parsing BiSeNet, landmarks MobileFaceNet; formula weights)")}");
        var options = new StepBenchmarkOptions
        {
            Steps = int.Parse(Get(o, "steps", "3"), CultureInfo.InvariantCulture),
            Warmup = int.Parse(Get(o, "warmup", "1"), CultureInfo.InvariantCulture),
            BatchSize = int.Parse(Get(o, "batch", "1"), CultureInfo.InvariantCulture),
            Device = device,
        };
        Console.WriteLine($"# compare on {Get(o, "backbone", "digits32")} [{options.BatchSize}x{denoiser.Channels}x{denoiser.SampleSize}x{denoiser.SampleSize}], device {device}, {options.Warmup} warm-up + {options.Steps} alternating rounds, torch threads {TorchSharp.torch.get_num_threads()}");
        var results = StepBenchmark.Compare(denoiser, cases, options, line => Console.Error.WriteLine("  " + line));
        double baseline = results[0].MsPerStepMedian;
        // Rounds alternate the cases, so the ratio within each round is the least disturbed by drifting background load.
        Console.WriteLine("| case | fwd | bwd (of which VJP) | items fwd / bwd | median ms/step | MAD ms | ratio of medians | median of per-round ratios | fwd / bwd / vjp ms | combiner ms | combiner share |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in results)
        {
            double roundRatio = StepBenchmark.Median(r.MsPerStep.Zip(results[0].MsPerStep, (a, b) => a / b));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Label} | {r.ForwardPassesPerStep} | {r.BackwardPassesPerStep} ({r.VjpsPerStep}) | {r.ForwardItemsPerStep} / {r.BackwardItemsPerStep} | {r.MsPerStepMedian:F0} | {r.MsPerStepMad:F0} | {r.MsPerStepMedian / baseline:F2} | {roundRatio:F2} | {r.ForwardMsMedian:F0} / {r.BackwardMsMedian:F0} / {r.VjpMsMedian:F0} | {r.CombinerMsMedian:F2} | {100 * r.CombinerFraction:F3}% |"));
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"peak resident memory {results[^1].PeakMemoryMb:F0} MB"));
        if (o.TryGetValue("json", out var path))
            File.WriteAllText(path, "[" + string.Join(",\n", results.Select(r => r.ToJson())) + "]\n");
        return 0;
    }

    private static int Soak(Dictionary<string, string> o)
    {
        var device = StepBenchmark.ParseDevice(Get(o, "device", "cpu"));
        using var denoiser = Backbones.Create(Get(o, "backbone", "digits32"), device);
        int n = int.Parse(Get(o, "conditions", "3"), CultureInfo.InvariantCulture);
        var c = new StepBenchmarkCase("soak", GuidanceMethods.Strategy(Get(o, "method", "zmagic")), GuidanceMethods.Combiner(Get(o, "combiner", "cagrad")),
            ToyCondition.Many(n, denoiser.Channels, denoiser.SampleSize, device));
        int steps = int.Parse(Get(o, "steps", "1000"), CultureInfo.InvariantCulture);
        int every = int.Parse(Get(o, "every", "100"), CultureInfo.InvariantCulture);
        var r = StepBenchmark.Soak(denoiser, c, steps, every, new StepBenchmarkOptions { Device = device });
        Console.WriteLine($"# soak: {c.Strategy.Name} / {c.Combiner.Name} / {n} conditions, {steps} steps on {Get(o, "backbone", "digits32")}, device {device}");
        Console.WriteLine("| after step | managed MB | resident MB | peak resident MB |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var (step, m) in r.Samples)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {step} | {m.ManagedMb:F1} | {m.ResidentMb:F1} | {m.PeakResidentMb:F1} |"));
        return 0;
    }
}
