using GreenRuntime.Diagnostics;

namespace GreenRuntime;

/// <summary>One greenlet in a <see cref="HubRunInfo"/> snapshot.</summary>
public sealed class GreenletRunInfo
{
    internal GreenletRunInfo() { }

    /// <summary><see cref="Greenlet.Id"/>.</summary>
    public long Id { get; internal init; }

    /// <summary><see cref="Greenlet.Name"/>.</summary>
    public string Name { get; internal init; } = "";

    /// <summary>Whether it runs async code (stackless) rather than synchronous code on a carrier thread (stackful).</summary>
    public bool IsStackless { get; internal init; }

    /// <summary>Whether this is the hub's main greenlet (the thread that created the hub).</summary>
    public bool IsMain { get; internal init; }

    /// <summary>Whether it holds the baton now (it is the one that asked for the snapshot).</summary>
    public bool IsCurrent { get; internal init; }

    /// <summary><see cref="Greenlet.State"/> at the snapshot.</summary>
    public GreenletState State { get; internal init; }

    /// <summary>What it is parked in (sleep, join, socket, ...), or <see cref="WaitReason.None"/>.</summary>
    public WaitReason WaitReason { get; internal init; }

    /// <summary>When a timer will wake it (end of a sleep, or timeout of another wait), relative to the snapshot; null if no timer will.</summary>
    public TimeSpan? WakesIn { get; internal init; }

    /// <summary>How long ago it last gave up the baton, for a parked or ready greenlet; null for the others.</summary>
    public TimeSpan? SinceLastSwitch { get; internal init; }

    /// <summary>Id of the greenlet that created it, or null.</summary>
    public long? ParentId { get; internal init; }

    /// <summary>Name of the greenlet that created it, or null.</summary>
    public string? ParentName { get; internal init; }

    /// <summary>Where it was created, when <see cref="HubOptions.TrackSpawnStacks"/> is on; otherwise null.</summary>
    public string? SpawnStack { get; internal init; }

    /// <summary>For a stackless greenlet, its steps that are blocked now: continuations of it that made a blocking call (a
    /// patched wait, a contended lock waited for with the baton released) and are parked on a carrier of their own, each
    /// described like a parked greenlet (<see cref="WaitReason"/>, <see cref="WakesIn"/>, <see cref="SinceLastSwitch"/>).
    /// Empty otherwise.</summary>
    public IReadOnlyList<GreenletRunInfo> BlockedSteps { get; internal init; } = [];

    /// <summary>Human-readable state: <c>running</c>, <c>ready</c>, <c>parked in Sleep (wakes in 0.95 s)</c>, ...</summary>
    public string Describe() => State switch
    {
        GreenletState.Running => IsCurrent ? "running (current)" : "running",
        GreenletState.Parked when WaitReason == WaitReason.Sleep && WakesIn is { } w => $"sleeping until +{RunInfoFormatter.Seconds(w)}",
        GreenletState.Parked => $"parked in {WaitReason}" + (WakesIn is { } t ? $" (times out in {RunInfoFormatter.Seconds(t)})" : ""),
        GreenletState.Ready => "ready",
        GreenletState.Scheduled => "scheduled (not started)",
        GreenletState.Awaiting when BlockedSteps.Count > 0 => $"awaiting (stackless), {BlockedSteps.Count} blocked step{(BlockedSteps.Count == 1 ? "" : "s")}",
        GreenletState.Awaiting => "awaiting (stackless)",
        GreenletState.Created => "created",
        GreenletState.Dead => "dead",
        _ => State.ToString(),
    };

    /// <summary>gevent-style name: <c>&lt;Greenlet name#id&gt;</c>.</summary>
    public override string ToString() => $"<Greenlet {Name}#{Id}>";
}
