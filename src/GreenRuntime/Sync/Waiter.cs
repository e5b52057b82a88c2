// Waiters: how every primitive in Sync/ parks greenlets (of any hub) and threads, and hands them what they waited for.
//
// Glossary
//   waiter       one pending wait on one primitive: a parked greenlet (Park), a Task a caller awaits or a thread
//                blocks on (Task), or an internal callback (Callback, used by Green.IWait). It carries an item in (a
//                putter's item) or out (what a getter was given), and the hub of the greenlet that waits.
//   waiter list  the FIFO of waiters of one primitive (getters, putters, acquirers...). Intrusive, O(1) removal.
//   serve        hand a waiter what it waits for: mark it Served with the item, then wake it — its park (through its
//                hub's inbox when that hub is not the caller's), or its Task.
//   resolve      what the waiting side does once its wait ended, whatever ended it (served, timer, kill, close):
//                under the primitive's lock, a Served waiter keeps its item; any other is withdrawn.
//
// Design chosen: each primitive has one SyncLock; its state, its waiter lists and every waiter's State are touched
// only under it, from any thread: greenlets of every hub of a HubGroup, plain threads, thread-pool threads. The
// waiter's State, not the park's wake token, decides who gets an item: a server marks a waiter Served (with the
// item) under the lock, then wakes the park; a timeout or a kill only ends the park, and the waiting side resolves
// under the lock afterwards. So a timeout or kill racing a serve from another hub never loses nor duplicates an item:
// either the server saw the waiter Pending and it resumes with the item (a killed one gives the item back to the
// primitive), or the waiting side withdrew it first and the server passes it by.
// On the waiter's own hub the server also requires the park's token to be current, so there (the single-hub case) a
// waiter whose timer already fired is never served, exactly as before several hubs existed. A waiter of another hub
// cannot be asked that (its hub owns its state); when its timeout and a serve cross, it returns the item, and when a
// kill or GreenTimeout and a serve cross, a served waiter with nothing to give back (a putter: its item is the
// getter's) returns as served, leaving the kill or expired scope to its next blocking point (Blocking.Park).
//
// Rejected designs
//   * Binding each primitive to one hub and marshalling every call from elsewhere through that hub's inbox: cheap
//     for one hub, but every cross-hub operation paid a post, a Task and a thread-pool hop, a primitive bound to a
//     hub whose thread went on with other work stranded the waiters of every other hub, and an item served to a
//     Task waiter whose greenlet had been killed meanwhile was lost.
//   * Lock-free lists: the give-back paths (a killed getter's item returns to the head of the queue) need several
//     structures to change together.
//   * Deferred notification as in gevent (the setter schedules a callback that later switches to waiters): two
//     steps per wake and a window in which a waiter can time out while its item is in flight.
//
// The protocol of a blocking call X(timeout) on a primitive (Blocking.Park):
//   1. Under the lock: TryX — if the primitive can satisfy the call now (and no earlier waiter is queued), do it.
//   2. Still under the lock: token = hub.BeginPark(reason); link a Park waiter. Release the lock; arm a timeout.
//   3. hub.EndPark(token): ends with the waiter (served), TimedOut (the timer), or an exception (kill, GreenTimeout,
//      LoopExit, or the primitive's own failure such as Close).
//   4. Resolve under the lock: Served -> return its item (or, if an exception ended the park anyway, let the primitive
//      take the item back); Failed -> throw its failure; Pending -> withdraw it (unlink) and report the timeout or
//      rethrow the exception.
// A caller with no hub that may block (a thread-pool thread) does the same with a Task waiter and blocks its thread.
// The Task form does steps 1-2 with a Task waiter whose timer and CancellationToken resolve it the same way.
//
// Invariant W: a waiter is served at most once, and only while Pending. Checked by Waiter.AssertServable.

using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Sync;

internal enum WaiterKind : byte
{
    Park,
    Task,
    Callback,
}

internal enum WaiterState : byte
{
    Pending,
    Served,
    TimedOut,
    Failed,
}

/// <summary>A pending Task-form wait that a kill or a GreenTimeout of its (stackless) owner can end.</summary>
internal interface IAsyncWait
{
    void Fail(Exception error);
}

/// <summary>One pending wait on a primitive; see the header of this file. Its fields are guarded by <see cref="Lock"/>.</summary>
internal sealed class Waiter<T> : IAsyncWait
{
    internal Waiter<T>? Prev, Next;
    internal WaiterList<T>? List;

    /// <summary>The hub of the waiting greenlet (Park), of the awaiting caller (Task; null for a thread with no hub).</summary>
    internal readonly Hub? Hub;
    internal readonly WaiterKind Kind;
    internal readonly Greenlet? Owner;
    internal readonly SyncLock Lock;
    private readonly WakeToken _token;
    private readonly TaskCompletionSource<T>? _completion;
    private readonly Action<Waiter<T>>? _callback;
    internal T Item;
    internal WaiterState State;

    /// <summary>Why a Failed waiter failed (Close of a queue): thrown by the waiting side when it resolves.</summary>
    internal Exception? Failure;

    // Task form only.
    private HubTimer? _hubTimer;
    private ITimer? _threadTimer;
    private CancellationTokenRegistration _registration;
    private Func<Exception>? _timeoutError;
    private T _timeoutValue = default!;

    private Waiter(SyncLock lk, Hub? hub, WaiterKind kind, Greenlet? owner, WakeToken token, T item, Action<Waiter<T>>? callback)
    {
        Lock = lk;
        Hub = hub;
        Kind = kind;
        Owner = owner;
        _token = token;
        Item = item;
        _callback = callback;
        // Continuations run asynchronously: an awaiting stackless greenlet gets its continuation posted through its
        // SynchronizationContext either way, and an awaiter without a context must not run its code inline inside the
        // primitive's lock.
        if (kind == WaiterKind.Task) _completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A waiter for the park named by <paramref name="token"/> (step 2 of the protocol).</summary>
    internal static Waiter<T> ForPark(SyncLock lk, Hub hub, in WakeToken token, T item = default!) =>
        new(lk, hub, WaiterKind.Park, token.Greenlet, token, item, null);

    /// <summary>A waiter that completes a Task. <paramref name="hub"/> is the caller's hub (null off any hub),
    /// <paramref name="owner"/> the awaiting greenlet (null for a thread or a hub callback).</summary>
    internal static Waiter<T> ForTask(SyncLock lk, Hub? hub, Greenlet? owner, T item = default!)
    {
        var w = new Waiter<T>(lk, hub, WaiterKind.Task, owner, default, item, null);
        if (owner is { IsStackless: true }) owner.TrackAsyncWait(w, GreenTimeout.FlowScope); // on the owner's hub: a kill fails the wait
        return w;
    }

    /// <summary>A waiter that runs an internal, non-blocking callback when served (under the lock: it may only post).</summary>
    internal static Waiter<T> ForCallback(SyncLock lk, Action<Waiter<T>> callback) =>
        new(lk, null, WaiterKind.Callback, null, default, default!, callback);

    internal Task<T> Task => _completion!.Task;

    internal WakeToken ParkToken => _token;

    /// <summary>Whether serving this waiter can still succeed (Invariant W). Under the lock.</summary>
    internal bool IsLive
    {
        get
        {
            if (State != WaiterState.Pending) return false;
            return Kind switch
            {
                // On its own hub the token is readable: a park a timer or kill already ended is not served.
                WaiterKind.Park => !Hub!.IsOnHubThread || _token.IsCurrent,
                WaiterKind.Task => Owner is not { Dead: true },
                _ => true,
            };
        }
    }

    /// <summary>Whether it is a pending park that a kill or timeout woke and whose greenlet has not run since: not live, but
    /// not stale either (WaiterList.FirstLive). Under the lock.</summary>
    internal bool AwaitsCancellationVerdict =>
        Kind == WaiterKind.Park && State == WaiterState.Pending && Hub!.IsOnHubThread && _token.AwaitsCancellationVerdict;

    /// <summary>Hands <paramref name="item"/> to the waiter. False (nothing done) if it is stale. Under the lock.</summary>
    internal bool TryServe(T item)
    {
        Debug.Assert(Lock.IsHeld, "Waiters are served under their primitive's lock.");
        switch (Kind)
        {
            case WaiterKind.Park:
                if (!IsLive) return false;
                Item = item;
                State = WaiterState.Served;
                if (Hub!.IsOnHubThread) Hub.TryWake(_token, this);
                else Hub.PostWake(_token, this); // another hub's greenlet: through its inbox
                return true;
            case WaiterKind.Task:
                if (State != WaiterState.Pending) return false;
                if (Owner is { Dead: true })
                {
                    Fail(new GreenletExit());
                    return false;
                }
                Item = item;
                State = WaiterState.Served;
                ReleaseTaskResources();
                _completion!.TrySetResult(item);
                return true;
            default:
                if (State != WaiterState.Pending) return false;
                Item = item;
                State = WaiterState.Served;
                _callback!(this);
                return true;
        }
    }

    /// <summary>Serves the waiter with the item it carries (a putter whose item was taken).</summary>
    internal bool TryServe() => TryServe(Item);

    /// <summary>Ends the wait with <paramref name="error"/> (Close): a Park is woken to throw it. Under the lock.</summary>
    internal void FailWith(Exception error)
    {
        if (Kind != WaiterKind.Park)
        {
            FailLocked(error);
            return;
        }
        if (State != WaiterState.Pending) return;
        State = WaiterState.Failed;
        Failure = error;
        if (Hub!.IsOnHubThread) Hub.TryWake(_token, null, error);
        else Hub.PostWake(_token, null, error);
    }

    /// <summary>
    /// Task form, after the waiter was linked (outside the lock): arms the timeout (completing with the error or the
    /// value) and the cancellation token. On a hub the timer is the hub's (its clock); off any hub a system timer.
    /// </summary>
    internal void Arm(TimeSpan? timeout, CancellationToken cancellationToken, Func<Exception>? timeoutError, T timeoutValue = default!)
    {
        Debug.Assert(Kind == WaiterKind.Task, "Only Task waiters are armed.");
        if (!IsFinite(timeout) && !cancellationToken.CanBeCanceled) return; // nothing to arm (the common await)
        HubTimer? hubTimer = null;
        ITimer? threadTimer = null;
        if (IsFinite(timeout))
        {
            if (Hub != null && Hub.IsOnHubThread) hubTimer = Hub.AddTimer(timeout!.Value, static s => ((Waiter<T>)s!).TimeOut(), this);
            else threadTimer = TimeProvider.System.CreateTimer(static s => ((Waiter<T>)s!).TimeOut(), this, timeout!.Value, System.Threading.Timeout.InfiniteTimeSpan);
        }
        var registration = cancellationToken.CanBeCanceled
            ? cancellationToken.UnsafeRegister(static (s, ct) => ((Waiter<T>)s!).Cancel(ct), this)
            : default;
        Lock.Enter();
        bool pending = State == WaiterState.Pending;
        if (pending)
        {
            _timeoutError = timeoutError;
            _timeoutValue = timeoutValue;
            _hubTimer = hubTimer;
            _threadTimer = threadTimer;
            _registration = registration;
        }
        Lock.Exit();
        if (!pending)
        {
            // Served (or ended) between linking and arming: these never fire for it.
            hubTimer?.Cancel();
            threadTimer?.Dispose();
            registration.Unregister();
        }
    }

    private static bool IsFinite(TimeSpan? timeout) => Blocking.IsFinite(timeout);

    private void TimeOut()
    {
        Lock.Enter();
        try
        {
            if (State != WaiterState.Pending) return;
            State = WaiterState.TimedOut;
            List?.Remove(this);
            ReleaseTaskResources();
            if (_timeoutError != null) _completion!.TrySetException(_timeoutError());
            else _completion!.TrySetResult(_timeoutValue);
        }
        finally
        {
            Lock.Exit();
        }
    }

    private void Cancel(CancellationToken cancellationToken)
    {
        Lock.Enter();
        try
        {
            if (State != WaiterState.Pending) return;
            State = WaiterState.Failed;
            List?.Remove(this);
            ReleaseTaskResources();
            _completion!.TrySetCanceled(cancellationToken);
        }
        finally
        {
            Lock.Exit();
        }
    }

    /// <summary>Ends a pending Task wait with <paramref name="error"/> (kill or GreenTimeout of its owner).</summary>
    public void Fail(Exception error)
    {
        Lock.Enter();
        try
        {
            FailLocked(error);
        }
        finally
        {
            Lock.Exit();
        }
    }

    /// <summary><see cref="Fail"/> with the lock held.</summary>
    internal void FailLocked(Exception error)
    {
        if (State != WaiterState.Pending) return;
        State = WaiterState.Failed;
        Failure = error;
        List?.Remove(this);
        ReleaseTaskResources();
        _completion?.TrySetException(error);
    }

    /// <summary>Drops the timer, the cancellation registration and the owner's record of the wait. Under the lock.</summary>
    private void ReleaseTaskResources()
    {
        _registration.Unregister(); // never Dispose here: it waits for a running callback, which may wait for this lock
        _registration = default;
        _threadTimer?.Dispose();
        _threadTimer = null;
        if (_hubTimer == null && Owner == null) return;
        // The hub timer and the owner's list of waits belong to the hub they were made on.
        var home = Owner?.Hub ?? Hub!;
        if (home.IsOnHubThread) ReleaseOnHub(this);
        else if (!home.IsClosed) home.PostItem(RunItem.ForCallback(static s => ReleaseOnHub((Waiter<T>)s!), this));
    }

    private static void ReleaseOnHub(Waiter<T> w)
    {
        w._hubTimer?.Cancel();
        w._hubTimer = null;
        w.Owner?.UntrackAsyncWait(w);
    }

    [Conditional("DEBUG")]
    internal void AssertServable()
    {
        // Through SyncLock: made under the primitive's lock, a check that fails frees it before its exception leaves.
        if (SyncLock.Violated(State != WaiterState.Pending))
            throw SyncLock.InvariantBroken($"Invariant W broken: a {Kind} waiter in state {State} is being served again.");
    }
}
