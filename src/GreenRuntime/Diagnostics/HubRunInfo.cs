using GreenRuntime.Diagnostics;

namespace GreenRuntime;

/// <summary>
/// A snapshot of one hub: every live greenlet and what it does, plus scheduler and carrier statistics. Returned by
/// <see cref="Hub.GetRunInfo"/>; <see cref="Hub.FormatRunInfo"/> renders it as text.
/// </summary>
public sealed class HubRunInfo
{
    internal HubRunInfo() { }

    /// <summary><see cref="Hub.Id"/>.</summary>
    public int HubId { get; internal init; }

    /// <summary>The hub's description, <c>&lt;Hub #id&gt;</c>.</summary>
    public string Hub { get; internal init; } = "";

    /// <summary>When the snapshot was taken, by the hub's <see cref="HubOptions.TimeProvider"/>.</summary>
    public DateTimeOffset Taken { get; internal init; }

    /// <summary>Who held the baton when the snapshot was taken (the caller, or <c>hub callback</c>).</summary>
    public string Current { get; internal init; } = "";

    /// <summary>The main greenlet first, then every started, unfinished greenlet, oldest first.</summary>
    public IReadOnlyList<GreenletRunInfo> Greenlets { get; internal init; } = [];

    /// <summary>Items waiting in the ready queue (greenlets to resume or start, callbacks).</summary>
    public int ReadyCount { get; internal init; }

    /// <summary>Timers in the hub's heap (including cancelled ones not yet discarded).</summary>
    public int TimerCount { get; internal init; }

    /// <summary>Greenlet switches since the hub was created.</summary>
    public long Switches { get; internal init; }

    /// <summary>Carriers woken ahead of their turn to watch for the baton (<see cref="HubOptions.SpinBeforeParking"/>),
    /// since the hub was created.</summary>
    public long NudgesSent { get; internal init; }

    /// <summary>Of <see cref="NudgesSent"/>, the carriers that saw the baton while they watched: a hand-off with no wake
    /// on its path. Few catches turn nudging down.</summary>
    public long NudgesCaught { get; internal init; }

    /// <summary>Blocked episodes the monitor has reported for this hub.</summary>
    public long BlockedEpisodes { get; internal init; }

    /// <summary>Whether the blocking monitor watches this hub.</summary>
    public bool MonitorOn { get; internal init; }

    /// <summary>The carrier pool this hub uses.</summary>
    public CarrierPoolInfo Carriers { get; internal init; } = null!;

    /// <summary>The same text as <see cref="GreenRuntime.Hub.FormatRunInfo"/>.</summary>
    public override string ToString() => RunInfoFormatter.Format(this);
}
