namespace ZMagic.Core.IO;

/// <summary>
/// A path that names something other than a regular file with data: a folder, a FIFO, a device, a socket, or an empty
/// file. Reading such a path could block forever (a FIFO with no writer) or never end (<c>/dev/zero</c>).
/// </summary>
public sealed class NotARegularFileException : IOException
{
    /// <summary>Creates the exception for <paramref name="path"/>.</summary>
    public NotARegularFileException(string path, string problem)
        : base($"'{path}' {problem}")
    {
        Path = path;
    }

    /// <summary>The path that was refused.</summary>
    public string Path { get; }
}

/// <summary>
/// Opens input files only when they are regular files with data. Every reader of untrusted files (checkpoints, images)
/// goes through here, so a FIFO, device or folder gives a clear error instead of a hang or an endless read.
/// </summary>
public static class RegularFile
{
    /// <summary>
    /// Checks that <paramref name="path"/> is an existing, non-empty regular file (symbolic links are followed).
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="what">What the file is, for messages (e.g. "Checkpoint file").</param>
    /// <exception cref="FileNotFoundException">Nothing exists at the path.</exception>
    /// <exception cref="NotARegularFileException">A folder, FIFO, device, socket or empty file.</exception>
    public static void Check(string path, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Directory.Exists(path)) throw new NotARegularFileException(path, $"is a folder; {what} must be a file.");
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"{what} not found: {path}", path);
        // FIFOs, character and block devices and sockets all report a size of 0 (stat's st_size); a real checkpoint
        // or image is never empty. Opening a FIFO would block until a writer appears, and /dev/zero never ends.
        if (info.Length == 0)
            throw new NotARegularFileException(path, $"is empty or not a regular file (a FIFO, device or socket); {what} must be a regular file.");
    }

    /// <summary>Checks the path (<see cref="Check"/>) and opens it for reading.</summary>
    /// <exception cref="FileNotFoundException">Nothing exists at the path.</exception>
    /// <exception cref="NotARegularFileException">A folder, FIFO, device, socket or empty file.</exception>
    public static FileStream OpenRead(string path, string what, int bufferSize = 1 << 16)
    {
        Check(path, what);
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize);
        if (!fs.CanSeek || fs.Length == 0)
        {
            fs.Dispose();
            throw new NotARegularFileException(path, $"is not a regular file; {what} must be a regular file.");
        }
        return fs;
    }
}
