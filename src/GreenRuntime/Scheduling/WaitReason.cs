namespace GreenRuntime;

/// <summary>Why a greenlet is parked; reported by run-info and metrics.</summary>
public enum WaitReason
{
    /// <summary>Not parked.</summary>
    None,
    /// <summary>Yielded (<c>Sleep(0)</c>) and waiting for its turn.</summary>
    Yield,
    /// <summary>Sleeping until a deadline.</summary>
    Sleep,
    /// <summary>Joining one or more greenlets.</summary>
    Join,
    /// <summary>Suspended in <see cref="Greenlet.Switch"/>, waiting for something to switch back.</summary>
    Switch,
    /// <summary>Waiting for a .NET task.</summary>
    Task,
    /// <summary>Waiting for an event.</summary>
    Event,
    /// <summary>Waiting on a queue or channel.</summary>
    Queue,
    /// <summary>Waiting for a lock or semaphore.</summary>
    Lock,
    /// <summary>Waiting for a socket operation.</summary>
    Socket,
    /// <summary>Waiting for a DNS lookup.</summary>
    Dns,
    /// <summary>Waiting for a file operation.</summary>
    File,
    /// <summary>Waiting for a thread-synchronisation primitive.</summary>
    Thread,
    /// <summary>Waiting for something else.</summary>
    Other,
    /// <summary>Running a call that really blocks (<see cref="Green.RunBlocking(Action)"/>, a lock or monitor
    /// wait, another thread's class initialiser) on its own thread, with the hub's baton released.</summary>
    Blocking,
}
