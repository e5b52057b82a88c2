namespace GreenRuntime;

/// <summary>Where a greenlet is in its life. Reported by <see cref="Greenlet.State"/> and run-info.</summary>
public enum GreenletState
{
    /// <summary>Created and not started.</summary>
    Created,
    /// <summary>Started (or started later by a timer) and waiting to run its body for the first time.</summary>
    Scheduled,
    /// <summary>Holding the baton now.</summary>
    Running,
    /// <summary>Suspended in a blocking call; see <see cref="Greenlet.WaitReason"/>.</summary>
    Parked,
    /// <summary>Woken and waiting in the ready queue for the baton.</summary>
    Ready,
    /// <summary>A stackless greenlet whose async body is awaiting something.</summary>
    Awaiting,
    /// <summary>Finished, failed, or killed: it will never run again.</summary>
    Dead,
}
