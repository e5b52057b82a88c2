// Greenlet lifecycle on the hub: start, kill, finish, and the list of greenlets alive.
// All of it is hub-only (the baton holder).

using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private Greenlet? _aliveHead;
    private int _aliveCount;
    private int _aliveStackful;
    private long _finishSequence;

    /// <summary>Greenlets started and not yet finished.</summary>
    internal int AliveCount => _aliveCount;

    internal List<Greenlet> AliveGreenlets()
    {
        var list = new List<Greenlet>(_aliveCount);
        for (var g = _aliveHead; g != null; g = g.NextAlive) list.Add(g);
        list.Reverse(); // oldest first
        return list;
    }

    /// <summary>
    /// Whether the code running now may park: greenlet code may; callbacks, the scheduler itself and a greenlet between
    /// its BeginPark and EndPark (ParkInProgress) may not. Patched BCL methods ask this before acting cooperatively, so
    /// a BCL call the scheduler makes (a ConcurrentQueue spinning calls Thread.Yield, which may be patched) runs the
    /// original, and so does one made while a park's wakers are registered (a registration that sleeps, takes a
    /// contended lock or reads a socket): parked there, the greenlet began a second park over the first, whose token
    /// its wakers then no longer matched.
    /// Only the baton holder may: a thread of the hub is its current thread (<c>Hub.CurrentOrNull</c>) also while it
    /// runs without the baton, as when a released call's return goes into the inbox (Hub.Blocking.cs) or an idle
    /// carrier that lent its baton forwards socket events there (Hub.IdleLending.cs). The inbox's queue takes a lock
    /// when it grows; patched, that lock found contended released a baton this thread did not hold, and the hub had two
    /// holders (a cold HTTP server under wrk failed requests with 500s and crashed in HandBaton). The other conditions
    /// read state only the holder may read.
    /// </summary>
    internal bool CanBlockHere => HoldsBaton && _callbackDepth == 0 && !_inScheduler && !ParkInProgress;

    /// <summary>Whether this thread holds the hub's baton (Invariant 1). Any thread may ask.</summary>
    private bool HoldsBaton => Volatile.Read(ref _batonHolder) == Environment.CurrentManagedThreadId;

    internal void StartGreenlet(Greenlet g, bool first = false)
    {
        // Greenlets that outlived Dispose still run on the hub; they finish, but start nothing new.
        if (_disposed)
            throw new ObjectDisposedException(ToString(), $"The hub has been disposed; it starts no new greenlet ({g}).");
        g.MarkStarted();
        g.State = GreenletState.Scheduled;
        _spawnedCount++;
        if (!g.IsStackless) _aliveStackful++;
        g.NextAlive = _aliveHead;
        if (_aliveHead != null) _aliveHead.PrevAlive = g;
        _aliveHead = g;
        _aliveCount++;
        Enqueue(RunItem.ForStart(g), first);
    }

    /// <summary>
    /// Kills <paramref name="g"/>: the first delivery of the exception is an edge (wake its park, or pend it for a
    /// greenlet that is running or ready), and the kill is also recorded as a state (<see cref="Greenlet.KillException"/>)
    /// that every later blocking point of the greenlet raises again until it ends.
    /// </summary>
    internal void KillGreenlet(Greenlet g, Exception exception)
    {
        AssertOnHub();
        if (g.State == GreenletState.Dead) return;
        bool first = g.KillException == null;
        g.KillException ??= exception;
        if (exception is GreenletExit exit) exit.Killed ??= g;
        try
        {
            switch (g.State)
            {
                case GreenletState.Created:
                case GreenletState.Scheduled:
                    g.StartTimer?.Cancel();
                    g.StartTimer = null;
                    Finish(g, null, exception);
                    return;
                case GreenletState.Running:
                    if (g == _current) throw g.Raising(exception);
                    g.PendingException = exception;
                    return;
                case GreenletState.Parked when g.ShieldDepth > 0:
                    return; // shielded: recorded (KillException), raised after the last shield closes
                case GreenletState.Parked:
                    // Woken with the kill, a stackful greenlet cancels its own token as it resumes (Greenlet.CancellationToken).
                    if (TryWakeCancelling(g, exception) && first && !g.IsStackless)
                        g.OwnTokenCancelDeferred = true;
                    return;
                case GreenletState.Ready:
                    g.PendingException = exception;
                    if (first && !g.IsStackless && g.ShieldDepth == 0) g.OwnTokenCancelDeferred = true; // raised as it resumes (EndPark)
                    return;
                case GreenletState.Awaiting when g.ShieldDepth > 0:
                    return;
                case GreenletState.Awaiting:
                    // Alive until its body's task completes, so Kill(block) and Join return after its finally blocks
                    // ran. A primitive's Task it awaits faults now; an await of anything else sees the kill at the
                    // next blocking point (and through Greenlet.CancellationToken).
                    if (g.FailAsyncWaits(exception) == 0) g.PendingException = exception;
                    return;
            }
        }
        finally
        {
            if (first)
            {
                LowLevel.KillLinkedSource.OnKill(g); // its linked sources register on no token of the greenlet's
                if (!g.OwnTokenCancelDeferred) g.CancelToken(); // foreign code: after the greenlet's state is consistent
            }
        }
    }

    /// <summary>Records the outcome of <paramref name="g"/> and schedules its links. Called once per greenlet.</summary>
    internal void Finish(Greenlet g, object? value, Exception? error)
    {
        if (g.State == GreenletState.Dead) return;
        if (g.OwnTokenCancelDeferred) g.CancelToken(); // it ended without resuming (its hub stopped): the kill's cancel is due
        bool alive = g.Started && (g.PrevAlive != null || g.NextAlive != null || _aliveHead == g);
        // The outcome first, then the state: other threads (a join or an await from another hub) read Dead without
        // the baton, and must then see the outcome.
        g.SetResult(value, error);
        // The app's logger runs here, before the state says Dead: a logger may block (a file sink behind a lock), and a
        // cooperative block parks the current greenlet, often this one, which must then still be a running greenlet: a
        // dead one parked and resumed came back Running and stayed so, never Dead again. Shielded, so that a kill landing
        // in the logger cannot leave this greenlet half-finished; nor can a logger that throws, which has nobody to tell.
        // Under the greenlet's own context: the failure is the greenlet's, so its creator's logging scopes and Activity
        // (the request a greenlet was spawned in) go with the message, wherever Finish runs (its carrier after the body's
        // context was reset, a hub callback, the greenlet that killed it before it started), also when the message is
        // queued for the hub's log writer (Diagnostics/HubContextLogger.cs).
        if (g.Exception != null)
        {
            using (Green.Shield())
            {
                try
                {
                    Log.GreenletFailed(_logger.Under(g.Context ?? AmbientContext.Default), g.Exception, g.ToString(), g.Exception.GetType().Name);
                }
                catch (Exception)
                {
                    // the greenlet's outcome is recorded; a broken logger must not keep it from ending
                }
            }
        }
        g.FinishSequence = ++_finishSequence;
        g.WaitReason = WaitReason.None;
        Interlocked.MemoryBarrier();
        g.State = GreenletState.Dead;
        if (alive)
        {
            if (g.PrevAlive != null) g.PrevAlive.NextAlive = g.NextAlive;
            else _aliveHead = g.NextAlive;
            if (g.NextAlive != null) g.NextAlive.PrevAlive = g.PrevAlive;
            g.PrevAlive = g.NextAlive = null;
            _aliveCount--;
            if (!g.IsStackless) _aliveStackful--;
            _finishedCount++;
            if (g.Exception != null) _failedCount++;
        }
        if (g.HasLinks)
            Enqueue(RunItem.ForCallback(static s => ((Greenlet)s!).NotifyLinks(), g));
        if (g.StartedBySwitch && g.Parent is { State: GreenletState.Parked, WaitReason: WaitReason.Switch } parent)
            TryWake(new WakeToken(parent, parent.ParkSequence), g.Value, g.Exception, first: true);
        g.ReleaseForGc();
    }
}
