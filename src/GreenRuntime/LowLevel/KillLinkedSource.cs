// The source behind Parking.LinkCancellation: a token for foreign code that a greenlet's kill and timeouts cancel.
//
// Why the cancel runs off the hub: a kill or a timeout's expiry is hub code (a hub callback, a timer, the killing
// greenlet's own step), and a token cancelled there runs its callbacks there. The callbacks here are foreign code's:
// CoreLib's SemaphoreSlim registers one that takes the semaphore's lock. Hub code cannot park, so a contended lock is
// waited for with the baton held; when a greenlet of the hub held that lock (won in a released wait, queued for the
// baton) neither could go on, and an ASP.NET Core app under client disconnects (each one a kill from a hub callback)
// stopped answering for good. So the greenlet's and the timeouts' cancellations are handed to one thread of the
// process that does nothing else (the thread pool would do, but legacy code keeps it busy: a kill would wait for it),
// and the callbacks run there, where waiting for a lock is only waiting (the gate and the thread are shared with
// GreenTimeout.Token: LowLevel/GatedCancellationSource.cs). The caller's own token is linked directly,
// as CancellationTokenSource.CreateLinkedTokenSource does.
//
// A kill or timeout that comes while the greenlet is shielded (Green.Shield) cancels nothing: the shield holds it back
// for the greenlet's next blocking point after the shield, and an operation started inside the shield ends inside it.
//
// The greenlet is often woken by the kill itself (parked, not in a released wait), and then unwinds through the
// operation's code, whose finally blocks unregister from the token. The cancel must come first, or the operation
// never sees it (a request queued for a pooled connection then takes the next free one for nobody). So the greenlet,
// resuming with the kill or timeout, cancels its sources itself, on its own stack (where a lock is only a cooperative
// wait), before it raises the exception (CancelQueued, from Hub.EndPark, BeginPark and the return of a released
// call). The cancelling thread serves the greenlet in a released wait, which nothing else can wake. A cancel queued
// when the source is disposed leaves the source to that thread. The greenlet's list of its sources is locked: an
// asynchronous operation's source is disposed by whatever thread completes the operation.
//
// The greenlet that resumes with the kill may find its source's cancel begun by the cancelling thread and not finished:
// CancellationTokenSource.Cancel marks the source cancelled first and runs the callbacks after, one by one. Unwinding
// then unregisters the callbacks not run yet, and they never run. A callback that completes what the greenlet waited
// for matters most: SocketsHttpHandler cancels a request's place in a pooled connection's queue by cancelling the
// waiter's task; unregistered, the place stays queued and takes the next free connection for nobody, so every later
// request waits for ever. A thread cannot leave that wait but through the callback. So a task wait that a kill or
// timeout ended first waits, shielded and parked, until its task completes or the begun cancels have ended (Settle,
// through Parking.SettleCancellation). It waits parked, never with the baton held: a callback may need a lock that a
// greenlet queued for the baton holds. It waits only for a task, not in every unwinding: a released Monitor.Wait that
// the kill interrupted comes back holding the monitor, which a callback (SemaphoreSlim's) may need. Every cancel of a
// source goes through one gate (CancelQuietly), so a source is cancelled once and its end is known.
//
// The greenlet's own token (Greenlet.CancellationToken) is the other token foreign operations get, passed by the
// greenlet's code itself (docs/patching.md, "Sync over a library's async API"). A kill cancels it inside the kill's
// call, on the killer, unless it wakes the greenlet from a park: then the greenlet cancels it itself as it resumes
// (CancelQueued), shielded, so that a callback that blocks (Npgsql sends its server a cancel request and waits for the
// answer) parks the greenlet it serves instead of the killer. Neither ends the operation: the server answers the cancel
// a moment later, and only then does the operation stop reading its connection. Unwinding at once ran the greenlet's
// using blocks meanwhile, and Npgsql's Dispose read the same connection as the operation still running: it waited for
// the whole command timeout (30 s) for data the operation had taken. A thread whose token is cancelled stays in its
// wait until the task ends. So once the kill has cancelled the greenlet's token, and the greenlet gave that token out,
// Settle also waits for the task itself, bounded (OwnTokenSettleLimit): the runtime cannot tell whether that task
// observes the token, and a kill must still end a wait for one that does not. A timeout's token (GreenTimeout.Token)
// is the third, and settles the same way: Settle waits for a cancel of it begun on the cancelling thread, and then for
// the task while the token, given out, has been cancelled (GreenTimeout.cs, "The token").
//
// An operation another greenlet waits for is no longer the starter's alone (a single-flight cache: the first caller
// starts the request, the others wait for the same task): the starter's kill or timeout then cancels nothing, or every
// waiter would get the cancellation where threads get the result (Parking.TieCancellation, Parking.WaitingFor).

namespace GreenRuntime.LowLevel;

/// <summary>See the header of this file. Dispose it once the operation is over.</summary>
internal sealed class KillLinkedSource : GatedCancellationSource
{
    private readonly Greenlet _greenlet;
    private CancellationTokenRegistration _callerRegistration;
    private List<CancellationTokenRegistration>? _timeoutRegistrations; // null without an open GreenTimeout scope
    private bool _queued; // hub-only: the kill or a timeout asked for a cancel (handed to the cancelling thread, or left to the greenlet by CancelQueued)
    private volatile bool _shared; // another greenlet waits for the operation (see the header)

    /// <summary>The operations given a source's token, for <see cref="WaitingFor"/>.</summary>
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Task, KillLinkedSource> s_operations = new();

    /// <summary>Records that <paramref name="operation"/> was given this source's token.</summary>
    internal void Tie(Task operation)
    {
        if (operation.IsCompleted) return;
        using (Parking.SuppressCooperation()) // the table's lock: its holder must not queue for the baton
            s_operations.AddOrUpdate(operation, this);
    }

    /// <summary>A greenlet is about to wait for <paramref name="task"/>: if it is an operation another greenlet started with
    /// a linked token, that greenlet's kill or timeout no longer cancels it.</summary>
    internal static void WaitingFor(Greenlet waiter, Task task)
    {
        if (s_operations.TryGetValue(task, out var source) && source._greenlet != waiter) source._shared = true;
    }

    public KillLinkedSource(Greenlet greenlet, CancellationToken callerToken)
    {
        _greenlet = greenlet;
        var live = greenlet.LiveCancellations ??= new();
        lock (live) live.Add(this);
        EnsureCancellerStarted(); // here, in the greenlet's own code: not inside a kill, which may run on the hub
        if (callerToken.CanBeCanceled)
            _callerRegistration = callerToken.UnsafeRegister(static s => ((KillLinkedSource)s!).CancelQuietly(), this);
        for (var t = greenlet.InnermostTimeout; t != null; t = t.Outer)
            (_timeoutRegistrations ??= new(2)).Add(t.ExpiryToken.UnsafeRegister(static s => ((KillLinkedSource)s!).OnKillOrTimeout(), this));
        // The kill reaches the greenlet's live sources itself (Hub.Kill calls OnKill, under the baton, as this runs):
        // a registration on the greenlet's own token made that token's source, its registration list and a node for
        // every request a greenlet linked, and withdrew them again when the request ended. A kill that came before
        // this source counts as it would have through a token already cancelled.
        if (greenlet.KillException != null) OnKillOrTimeout();
    }

    /// <summary>On the hub, where the kill or the timeout's expiry cancelled its token.</summary>
    private void OnKillOrTimeout()
    {
        if (_greenlet.ShieldDepth > 0 || _queued || _shared) return;
        _queued = true;
        QueueCancel();
    }

    /// <summary>On the greenlet, as it resumes with a kill or timeout: cancels, here and now, each of its sources whose
    /// cancel that kill or timeout queued (see the header).</summary>
    internal static void CancelQueued(Greenlet greenlet)
    {
        foreach (var source in Sources(greenlet))
            if (source._queued && !source._shared) source.CancelQuietly();
        greenlet.CancelOwnTokenBeforeUnwinding();
        GreenTimeout.CancelTokensBeforeUnwinding(greenlet);
    }

    /// <summary>On the hub, for the first kill of <paramref name="greenlet"/> (Hub.Kill): each of its live sources takes its
    /// course (queues its cancel, see the header), whether the kill cancels the greenlet's own token there or leaves that
    /// cancel to the greenlet as it resumes.</summary>
    internal static void OnKill(Greenlet greenlet)
    {
        foreach (var source in Sources(greenlet))
            source.OnKillOrTimeout();
    }

    /// <summary>A copy of <paramref name="greenlet"/>'s live sources, taken under their list's lock; none is the common
    /// case, read without it.</summary>
    private static KillLinkedSource[] Sources(Greenlet greenlet)
    {
        if (greenlet.LiveCancellations is not { Count: > 0 } live) return [];
        lock (live) return live.ToArray();
    }

    /// <summary>On <paramref name="greenlet"/>, after a kill or timeout ended its wait for <paramref name="awaited"/>:
    /// waits, shielded, until <paramref name="awaited"/> completes or no cancel of the greenlet's sources that another
    /// thread began is still running (see the header).</summary>
    internal static void Settle(Hub hub, Greenlet greenlet, Task awaited)
    {
        using var shield = new CancellationShield(greenlet);
        while (!awaited.IsCompleted && BegunElsewhere(greenlet) is { } ended)
            hub.WaitForTask(Task.WhenAny(awaited, ended), timeout: null, WaitReason.Task);
        if (!awaited.IsCompleted && (greenlet.OwnTokenCancelledByKill || GreenTimeout.TokenCancelledFor(greenlet)))
            hub.WaitForTask(awaited, OwnTokenSettleLimit, WaitReason.Task);
    }

    /// <summary>How long a task wait that a kill ended waits for its task once the kill has cancelled the greenlet's own
    /// token, which the greenlet gave out (see the header): long enough for a library to hear back from its server
    /// about the cancel (Npgsql gives up on that after 2 s), short enough that a task that never looked at the token
    /// delays the kill only that much.</summary>
    internal static readonly TimeSpan OwnTokenSettleLimit = TimeSpan.FromSeconds(5);

    /// <summary>The end of a cancel of one of <paramref name="greenlet"/>'s sources, or of the token of one of its
    /// expired timeouts, still running on another thread; null if there is none.</summary>
    private static Task? BegunElsewhere(Greenlet greenlet)
    {
        foreach (var source in Sources(greenlet))
            if (source.CancelEnded() is { } ended) return ended;
        return GreenTimeout.TokenCancelEnded(greenlet);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _callerRegistration.Dispose();
            if (_timeoutRegistrations != null)
                foreach (var r in _timeoutRegistrations) r.Dispose();
            if (_greenlet.LiveCancellations is { } live)
                lock (live) live.Remove(this);
            if (_queued) return; // the cancelling thread still cancels it (see the header); nothing else holds on to it
        }
        base.Dispose(disposing);
    }

    protected override void CancelOnCancellingThread()
    {
        if (!_shared) CancelQuietly();
    }
}
