using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A flag greenlets can wait for, like gevent's <c>Event</c>: <see cref="Set"/> wakes every waiting greenlet,
/// <see cref="Clear"/> resets the flag.
/// </summary>
/// <remarks>
/// <para><see cref="Set"/> guarantees the flag was set <em>at least once</em> for the greenlets waiting at that
/// moment: each of them returns true from <see cref="Wait"/> even if <see cref="Clear"/> follows immediately,
/// before they run. After <see cref="Clear"/> no stale notification is left: a later <see cref="Wait"/> blocks
/// until the next <see cref="Set"/>. Waiters are resumed in the order they started waiting.</para>
/// <para>Every method is safe from any thread, and greenlets of several hubs may wait on one event: each waiter is
/// woken through its own hub (<see cref="HubGroup"/>). <see cref="Wait"/> parks a greenlet; on a thread-pool thread
/// it blocks that thread.</para>
/// </remarks>
/// <example>
/// <code>
/// var ready = new Event();
/// var worker = Green.Spawn(() => { ready.Wait(); Console.WriteLine("go"); });
/// ready.Set();
/// worker.Join();
/// </code>
/// </example>
[DebuggerDisplay("Event IsSet={_flag} Waiters={_waiters.Count}")]
public sealed class Event : IGreenWaitable
{
    private readonly SyncLock _lock = new();
    private readonly WaiterList<bool> _waiters = new();
    private volatile bool _flag;

    /// <summary>Creates a cleared event. It may be used from any thread and any hub.</summary>
    public Event() { }

    /// <summary>Whether the flag is set.</summary>
    public bool IsSet => _flag;

    bool IGreenWaitable.Ready => IsSet;

    /// <summary>Sets the flag and wakes every greenlet (and thread) waiting now. Safe from any thread.</summary>
    public void Set()
    {
        _lock.Enter();
        _flag = true;
        _waiters.ServeAll(true);
        _lock.Exit();
    }

    /// <summary>Resets the flag. Greenlets already woken by <see cref="Set"/> still return true. Safe from any thread.</summary>
    public void Clear()
    {
        _lock.Enter();
        _flag = false;
        _lock.Exit();
    }

    /// <summary>Waits until the flag is set or the timeout elapses.</summary>
    /// <param name="timeout">How long to wait; null waits as long as it takes; zero only tests the flag.</param>
    /// <returns>true if the flag was set (now, or by a <see cref="Set"/> during the wait); false on timeout.</returns>
    /// <exception cref="LoopExitException">Called from the main greenlet and nothing else can ever set the event.</exception>
    public bool Wait(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (_flag) return true;
        if (timeout == TimeSpan.Zero) return false;
        var hub = Blocking.WaitingHub();
        _lock.Enter();
        if (_flag)
        {
            _lock.Exit();
            return true;
        }
        return Blocking.Park(hub, _lock, _waiters, WaitReason.Event, timeout) != null || _flag;
    }

    /// <summary>Waits without blocking a thread: for stackless greenlets (or any async caller).</summary>
    /// <returns>A task that completes with true when the flag is set, or false when the timeout elapses.</returns>
    /// <remarks>On a hub the task's continuation is posted through the awaiting greenlet's synchronization context.
    /// If the awaiting stackless greenlet is killed or its <see cref="GreenTimeout"/> fires, the task faults with that exception.</remarks>
    public Task<bool> WaitAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        => Blocking.WaitFlagAsync(this, _lock, _waiters, static self => self._flag, timeout, cancellationToken);

    IDisposable IGreenWaitable.Subscribe(Action onReady) =>
        Blocking.SubscribeFlag(this, _lock, _waiters, static self => self._flag, onReady);

    /// <summary>Describes the event for logs.</summary>
    public override string ToString() => $"<Event {(IsSet ? "set" : "clear")}>";
}
