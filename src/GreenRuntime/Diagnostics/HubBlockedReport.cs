namespace GreenRuntime;

/// <summary>
/// What the blocking monitor found: which greenlet (or hub callback) kept the baton of a hub for longer than
/// <see cref="HubOptions.MaxBlockingTime"/>, for how long, and where it was blocked. Raised by
/// <see cref="Hub.Blocked"/> and logged as event 10 (with a stack) or 11 (without).
/// </summary>
public sealed class HubBlockedReport
{
    internal HubBlockedReport() { }

    /// <summary>The hub that was blocked (<see cref="Hub.Id"/>).</summary>
    public int HubId { get; internal init; }

    /// <summary>The greenlet holding the baton, or null when a hub callback (timer, link, <see cref="Hub.Post"/>) held it.</summary>
    public Greenlet? Greenlet { get; internal init; }

    /// <summary>gevent-style name of the holder: <c>&lt;Greenlet name#id&gt;</c>, or <c>a hub callback</c>.</summary>
    public string Holder { get; internal init; } = "";

    /// <summary>How long the holder had kept the baton when the report was made (a lower bound, to about a quarter of
    /// <see cref="HubOptions.MaxBlockingTime"/>). The episode may go on after the report.</summary>
    public TimeSpan BlockedFor { get; internal init; }

    /// <summary>The OS thread id (Linux TID) of the thread that held the baton, or 0 if unknown.</summary>
    public int OsThreadId { get; internal init; }

    /// <summary>
    /// The stack of the blocked thread, innermost frame first, one frame per line (<c>at Namespace.Type.Method(args) [assembly]</c>),
    /// read while the holder was still blocked; null when it could not be had (see <see cref="StackUnavailableReason"/>).
    /// </summary>
    /// <remarks>Frames of native code and runtime stubs appear as <c>[native code: module]</c> and
    /// <c>[runtime stub]</c>; for a blocking call such as <c>Thread.Sleep</c> the first managed frame below them is the
    /// caller that blocked.</remarks>
    public string? StackTrace { get; internal init; }

    /// <summary>Why <see cref="StackTrace"/> is null (capture disabled, rate-limited, unsupported platform, tool
    /// failure, or the holder released the baton before the snapshot); null when there is a stack.</summary>
    public string? StackUnavailableReason { get; internal init; }

    /// <summary>
    /// True when the hub's baton had not changed hands by the end of the capture, so the stack certainly shows the
    /// blocked episode. False when the holder released the baton while the capture was finishing: the stack was
    /// still taken during the episode unless its top shows the scheduler (such stacks are dropped).
    /// </summary>
    public bool StackCertain { get; internal init; }

    /// <summary>How long the stack capture took (the process is paused for most of it), or zero if none was tried.</summary>
    public TimeSpan CaptureDuration { get; internal init; }

    /// <summary>When the monitor detected the episode (UTC, wall clock).</summary>
    public DateTimeOffset DetectedAt { get; internal init; }

    /// <summary>One-line summary, then the stack or the reason it is missing.</summary>
    public override string ToString() =>
        $"{Holder} blocked hub #{HubId} for {BlockedFor.TotalMilliseconds:F0} ms" + (StackTrace != null
            ? $"{Environment.NewLine}{StackTrace}"
            : $" (no stack: {StackUnavailableReason})");
}
