namespace ZMagic.Cli;

/// <summary>
/// An output folder written atomically: a run writes into a staging folder next to the target and publishes it with a
/// rename, so the target holds either the previous run or the new one, never a mix and never a partial file.
/// </summary>
/// <remarks>
/// <see cref="Prepare"/> runs before any model is loaded, so a bad <c>--out</c> fails at once (exit 2). A target that
/// already exists is replaced only when it is empty or holds an earlier zmagic run (the <see cref="Marker"/> file); a
/// folder with other files is refused, so <c>--out ~/Pictures</c> cannot delete anything. Publishing an existing
/// target renames it aside, renames the staging folder in and then deletes the old one.
/// </remarks>
public sealed class RunFolder : IDisposable
{
    /// <summary>The file that marks a folder as written by zmagic (safe to replace with a newer run).</summary>
    public const string Marker = ".zmagic-run";

    private RunFolder(string target, string staging)
    {
        Target = target;
        Staging = staging;
    }

    /// <summary>The folder the run publishes to (full path).</summary>
    public string Target { get; }

    /// <summary>The staging folder the run writes into.</summary>
    public string Staging { get; }

    /// <summary>Checks <paramref name="outDir"/> and creates the staging folder next to it.</summary>
    /// <exception cref="UsageException">Empty, a file, a folder of other files, or a place that cannot be written.</exception>
    public static RunFolder Prepare(string outDir, string flag = "--out")
    {
        if (string.IsNullOrWhiteSpace(outDir)) throw new UsageException($"{flag} is empty; give an output folder.");
        string full;
        try { full = Path.GetFullPath(outDir); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new UsageException($"{flag} '{outDir}' is not a valid path: {e.Message}");
        }
        full = Path.TrimEndingDirectorySeparator(full);
        string? parent = Path.GetDirectoryName(full);
        if (parent is null) throw new UsageException($"{flag} '{outDir}' is a root folder; give a folder to create.");
        if (System.IO.File.Exists(full)) throw new UsageException($"{flag} '{outDir}' is a file; give a folder.");
        if (Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any() && !System.IO.File.Exists(Path.Combine(full, Marker)))
            throw new UsageException($"{flag} '{outDir}' exists and holds files that zmagic did not write; give a new or empty folder (nothing was changed).");
        string staging = Path.Combine(parent, "." + Path.GetFileName(full) + ".staging-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            Directory.CreateDirectory(staging);
            System.IO.File.WriteAllText(Path.Combine(staging, Marker), "written by zmagic; the folder is replaced as a whole by the next run\n");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            try { if (Directory.Exists(staging)) Directory.Delete(staging, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw new UsageException($"{flag} '{outDir}' cannot be written: {e.Message}");
        }
        return new RunFolder(full, staging);
    }

    /// <summary>A path inside the staging folder.</summary>
    public string File(string name) => Path.Combine(Staging, name);

    /// <summary>
    /// Publishes the staging folder as <see cref="Target"/>. Cancellation is checked first: once the renames start the
    /// run counts as complete.
    /// </summary>
    public void Publish(CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        if (!Directory.Exists(Target))
        {
            Directory.Move(Staging, Target);
            return;
        }
        string old = Path.Combine(Path.GetDirectoryName(Target)!, "." + Path.GetFileName(Target) + ".old-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.Move(Target, old);
        try
        {
            Directory.Move(Staging, Target);
        }
        catch
        {
            Directory.Move(old, Target);
            throw;
        }
        try { Directory.Delete(old, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* the new run is in place; the old copy stays hidden */ }
    }

    /// <summary>Removes the staging folder if the run was not published.</summary>
    public void Dispose()
    {
        try { if (Directory.Exists(Staging)) Directory.Delete(Staging, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
