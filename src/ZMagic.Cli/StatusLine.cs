using System.Diagnostics;

namespace ZMagic.Cli;

/// <summary>
/// One status line (progress) that follows where it is written. On a terminal it is redrawn in place with <c>\r</c>,
/// at most about ten times a second. Written to a file or pipe (CI logs, <c>2&gt; log.txt</c>, tests) it never uses
/// <c>\r</c>: it prints whole lines, the first update, one each time another tenth is done or half a minute has
/// passed, and the last one, so a log stays short and readable.
/// </summary>
public sealed class StatusLine
{
    private static readonly TimeSpan RedrawEvery = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan LogEvery = TimeSpan.FromSeconds(30);

    private readonly TextWriter? _writer;
    private readonly Stopwatch _sinceDrawn = new();
    private string? _pending;
    private int _drawnLength;
    private int _loggedTenth = -1;
    private bool _open;

    /// <summary>Creates a status line on <paramref name="writer"/> (null: silent).</summary>
    /// <param name="writer">Where to write, usually stderr.</param>
    /// <param name="interactive">Redraw in place; null asks <see cref="Terminal.IsInteractive"/>.</param>
    public StatusLine(TextWriter? writer, bool? interactive = null)
    {
        _writer = writer;
        Interactive = interactive ?? Terminal.IsInteractive(writer);
    }

    /// <summary>Whether the line is redrawn in place (a terminal) rather than logged as whole lines.</summary>
    public bool Interactive { get; }

    /// <summary>Shows <paramref name="text"/>; <paramref name="fraction"/> (0..1) of the work is done.</summary>
    public void Update(string text, double fraction)
    {
        if (_writer is null) return;
        _pending = text;
        if (Interactive)
        {
            if (_open && _sinceDrawn.IsRunning && _sinceDrawn.Elapsed < RedrawEvery && fraction < 1) return;
            Draw();
            return;
        }
        int tenth = (int)Math.Floor(Math.Clamp(fraction, 0, 1) * 10);
        if (_loggedTenth < 0 || tenth > _loggedTenth || _sinceDrawn.Elapsed >= LogEvery)
        {
            _writer.WriteLine(text);
            _loggedTenth = Math.Max(tenth, _loggedTenth);
            _pending = null;
            _sinceDrawn.Restart();
        }
    }

    /// <summary>Shows the last update if it was not shown yet and ends the line.</summary>
    public void End()
    {
        if (_writer is null) return;
        if (Interactive)
        {
            if (_pending is not null) Draw();
            if (_open) _writer.WriteLine();
        }
        else if (_pending is not null)
        {
            _writer.WriteLine(_pending);
        }
        _pending = null;
        _open = false;
        _drawnLength = 0;
        _loggedTenth = -1;
    }

    /// <summary>
    /// Writes <paramref name="text"/> as a line of its own (a result, not progress). On a terminal the status line is
    /// wiped first and drawn again by the next update; in a log it is simply another line.
    /// </summary>
    public void Note(string text)
    {
        if (_writer is null) return;
        if (Interactive && _open)
        {
            _writer.Write("\r" + new string(' ', _drawnLength) + "\r");
            _open = false;
            _drawnLength = 0;
        }
        _writer.WriteLine(text);
    }

    private void Draw()
    {
        string text = _pending ?? "";
        // Pad over what the previous frame left on the line.
        _writer!.Write("\r" + text + new string(' ', Math.Max(0, _drawnLength - text.Length)));
        _writer.Flush();
        _drawnLength = text.Length;
        _open = true;
        _pending = null;
        _sinceDrawn.Restart();
    }
}
