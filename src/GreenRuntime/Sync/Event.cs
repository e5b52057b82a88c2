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
/// <para><see cref="Set"/> and <see cref="Clear"/> are safe from any thread (they are marshalled to the hub, so
/// from a foreign thread they take effect shortly after the call returns). <see cref="Wait"/> on the event's hub
/// parks the greenlet; from a foreign thread it blocks that thread.</para>
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
    private readonly WaiterList<bool> _waiters = new();
    private Hub? _hub;
    private bool _flag;

    /// <summary>Creates a cleared event, bound to the calling thread's hub (or to the first hub that uses it).</summary>
    public Event() => _hub = Hub.CurrentOrNull;

    /// <summary>Whether the flag is set. Reading it from a foreign thread gives a recent value.</summary>
    public bool IsSet => Volatile.Read(ref _flag);

    bool IGreenWaitable.Ready => IsSet;

    /// <summary>Sets the flag and wakes every greenlet waiting now. Safe from any thread.</summary>
    public void Set()
    {
        var hub = Blocking.BindForSignal(ref _hub, this, Set);
        if (hub == null) return; // no hub has used it yet: applied when one does
        if (!hub.IsOnHubThread)
        {
            hub.Post(Set);
            return;
        }
        Volatile.Write(ref _flag, true);
        _waiters.ServeAll(true);
    }

    /// <summary>Resets the flag. Greenlets already woken by <see cref="Set"/> still return true. Safe from any thread.</summary>
    public void Clear()
    {
        var hub = Blocking.BindForSignal(ref _hub, this, Clear);
        if (hub == null) return;
        if (!hub.IsOnHubThread)
        {
            hub.Post(Clear);
            return;
        }
        Volatile.Write(ref _flag, false);
    }

    /// <summary>Waits until the flag is set or the timeout elapses.</summary>
    /// <param name="timeout">How long to wait; null waits as long as it takes; zero only tests the flag.</param>
    /// <returns>true if the flag was set (now, or by a <see cref="Set"/> during the wait); false on timeout.</returns>
    /// <exception cref="LoopExitException">Called from the main greenlet and nothing else can ever set the event.</exception>
    public bool Wait(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        var hub = Blocking.Bind(ref _hub, this);
        if (!hub.IsOnHubThread) return Blocking.BlockOn(WaitAsync(timeout));
        if (_flag) return true;
        if (timeout == TimeSpan.Zero) return false;
        return Blocking.Park(hub, _waiters, WaitReason.Event, timeout) != null || _flag;
    }

    /// <summary>Waits without blocking a thread: for stackless greenlets (or any async caller).</summary>
    /// <returns>A task that completes with true when the flag is set, or false when the timeout elapses.</returns>
    /// <remarks>On the hub the task's continuation is posted through the awaiting greenlet's synchronization context.
    /// If the awaiting stackless greenlet is killed or its <see cref="GreenTimeout"/> fires, the task faults with that exception.</remarks>
    public Task<bool> WaitAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
        => Blocking.WaitFlagAsync(ref _hub, this, _flag, static (self, w, t, c) => self.StartWait(w, t, c), timeout, cancellationToken);

    IDisposable IGreenWaitable.Subscribe(Action onReady)
    {
        var w = Waiter<bool>.ForCallback(Blocking.Bind(ref _hub, this), _ => onReady());
        _waiters.AddLast(w);
        return new Unsubscriber(() => _waiters.Remove(w));
    }

    /// <summary>Describes the event for logs.</summary>
    public override string ToString() => $"<Event {(IsSet ? "set" : "clear")}>";

    // Applies a Task-form wait on the hub (kept out of the public method so its fast path allocates no closure).
    private void StartWait(Waiter<bool> w, TimeSpan? timeout, CancellationToken cancellationToken)
    {
            if (_flag) w.TryServe(true);
            else if (timeout == TimeSpan.Zero) w.TryServe(false);
            else w.ArmTask(_waiters, timeout, cancellationToken, null, timeoutValue: false);
    }
}
