using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Compression;
using System.Text;

namespace ZMagic.Cli.Tests;

/// <summary>Hostile files written at run time (no binary blobs in the repository).</summary>
internal static class HostileFiles
{
    /// <summary>
    /// A PNG whose IHDR declares <paramref name="w"/> x <paramref name="h"/> RGB pixels, with a tiny IDAT (a few hundred
    /// bytes: the "decompression bomb" shape), valid chunk CRCs. <paramref name="cutAfterIhdr"/> stops after IHDR.
    /// </summary>
    public static byte[] Png(uint w, uint h, bool cutAfterIhdr = false)
    {
        using var ms = new MemoryStream();
        ms.Write(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A });
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, w);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), h);
        ihdr[8] = 8; // bit depth
        ihdr[9] = 2; // RGB
        Chunk(ms, "IHDR", ihdr);
        if (cutAfterIhdr) return ms.ToArray();
        using (var z = new MemoryStream())
        {
            using (var zl = new ZLibStream(z, CompressionLevel.SmallestSize, leaveOpen: true)) zl.Write(new byte[Math.Min(4096, (int)Math.Min(int.MaxValue, 1 + 3L * w))]);
            Chunk(ms, "IDAT", z.ToArray());
        }
        Chunk(ms, "IEND", Array.Empty<byte>());
        return ms.ToArray();
    }

    /// <summary>A real, decodable w x h PNG.</summary>
    public static byte[] RealPng(int w, int h)
    {
        var px = new byte[3 * w * h];
        for (int i = 0; i < px.Length; i++) px[i] = (byte)(i * 7);
        return ZMagic.Guidance.Imaging.ImageFiles.EncodePng(new ZMagic.Guidance.Imaging.RgbImage(w, h, px));
    }

    /// <summary>A 1x1 GIF89a.</summary>
    public static byte[] Gif() => Convert.FromHexString("47494638396101000100800000FFFFFF00000021F90401000000002C00000000010001000002024401003B");

    /// <summary>A 2x2 24-bit BMP.</summary>
    public static byte[] Bmp()
    {
        var b = new byte[54 + 16];
        b[0] = (byte)'B'; b[1] = (byte)'M';
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(2), b.Length);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(10), 54);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(14), 40);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(18), 2);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(22), 2);
        BinaryPrimitives.WriteInt16LittleEndian(b.AsSpan(26), 1);
        BinaryPrimitives.WriteInt16LittleEndian(b.AsSpan(28), 24);
        return b;
    }

    public static string MkFifo(string path)
    {
        using var p = Process.Start("mkfifo", path)!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return path;
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        var len = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(len, (uint)data.Length);
        s.Write(len);
        var td = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        s.Write(td);
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(td));
        s.Write(crc);
    }

    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }
}

/// <summary>Runs the real CLI as a child process and samples its peak resident memory (VmHWM).</summary>
internal static class CliProcess
{
    public sealed record Result(int Code, string Out, string Err, long PeakRssBytes, TimeSpan Elapsed);

    /// <param name="args">The CLI's arguments.</param>
    /// <param name="env">Extra environment variables.</param>
    /// <param name="defaultSigint">
    /// Start the child with SIGINT at its default disposition (through coreutils' <c>env --default-signal=INT</c>, which
    /// execs it under the same pid). A process started in the background by a non-interactive shell (<c>cmd &amp;</c>,
    /// <c>nohup</c>) ignores SIGINT, its children inherit that, and the CLI rightly keeps ignoring it; a test of Ctrl+C must
    /// not depend on how the test run itself was started.
    /// </param>
    public static Process Start(IEnumerable<string> args, IDictionary<string, string>? env = null, bool defaultSigint = false)
    {
        string dotnet = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var psi = new ProcessStartInfo(defaultSigint ? "env" : dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (defaultSigint)
        {
            psi.ArgumentList.Add("--default-signal=INT");
            psi.ArgumentList.Add(dotnet);
        }
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "zmagic.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["OMP_NUM_THREADS"] = "1";
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    public static Result Run(IEnumerable<string> args, TimeSpan timeout, IDictionary<string, string>? env = null)
    {
        var sw = Stopwatch.StartNew();
        using var p = Start(args, env);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        long peak = 0;
        while (!p.WaitForExit(20))
        {
            peak = Math.Max(peak, PeakRss(p.Id));
            if (sw.Elapsed > timeout)
            {
                p.Kill(entireProcessTree: true);
                Assert.Fail($"zmagic {string.Join(' ', args)} did not finish in {timeout.TotalSeconds} s (peak RSS {peak >> 20} MiB)");
            }
        }
        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result, peak, sw.Elapsed);
    }

    /// <summary>VmHWM of a live process in bytes (0 once it has gone).</summary>
    public static long PeakRss(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }
}
