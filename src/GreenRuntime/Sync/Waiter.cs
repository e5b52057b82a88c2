// Waiters: how every primitive in Sync/ and Pools/ parks greenlets and hands them what they waited for.
//
// Glossary
//   waiter       one pending wait on one primitive: a parked greenlet (Park), a Task a caller awaits (Task), or an
//                internal callback (Callback, used by Green.IWait). It carries an item in (a putter's item) or
//                out (what a getter was given).
//   waiter list  the FIFO of waiters of one primitive (getters, putters, acquirers...). Intrusive, O(1) removal.
//   serve        hand a waiter what it waits for: wake its park with the waiter itself as the value, or complete
//                its Task. Serving can fail: the park already ended (timeout, kill) or the owner died.
//   stale        a waiter still linked in a list that can no longer be served. Servers drop stale waiters as they
//                meet them; a waiter also unlinks itself when its wait ends.
//
// Design chosen: all waiter state lives on the hub and is touched only by the baton holder. A signal from a
// foreign thread (Event.Set, GreenQueue.Put, GreenSemaphore.Release...) is posted to the hub with Hub.Post and
// applied there, and a blocking call from a foreign thread registers a Task waiter through the same route and
// blocks on its Task. So there are no locks, and the "every park has exactly one wake" rule of the core decides
// every race (a timeout against an item, a kill against a release).
//
// Rejected designs
//   * Locks around each primitive (System.Threading style): greenlet code runs under the baton already, locks
//     would only add cost and a second source of truth; foreign threads are rare and can pay one Post.
//   * Deferred notification as in gevent (the setter schedules a callback that later switches to waiters): two
//     steps per wake and a window in which a waiter can time out while its item is in flight. Here the item is
//     bound to the waiter in the same step that wins its wake token.
//
// The protocol of a blocking call X(timeout) on a primitive:
//   1. TryX: if the primitive can satisfy the call now (and no earlier waiter is queued), do it and return.
//   2. token = hub.BeginPark(reason); append a Park waiter to the list; arm a timeout timer on the token.
//   3. hub.EndPark(token). The value tells who won: the waiter itself = served (the item is in waiter.Item);
//      Hub.TimedOut = the timer; an exception (kill, GreenTimeout, LoopExit) is thrown.
//   4. Whatever happened, unlink the waiter and cancel the timer. If it was served but an exception wins the
//      resume anyway (a kill that lands after the item was handed over), the primitive takes the item back
//      (GreenQueue returns it to the head), so a waiter that did not return normally never swallows an item.
// The Task form does steps 1-2 with a Task waiter whose timer and CancellationToken complete the Task instead.
//
// Invariant W: a waiter is served at most once, and only while it is live (Park: its token is current; Task and
// Callback: still pending and its owner greenlet, if any, is not dead). Checked by Waiter.AssertServable.

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

/// <summary>One pending wait on a primitive; see the header of this file. Hub-only once linked.</summary>
internal sealed class Waiter<T> : IAsyncWait
{
    internal Waiter<T>? Prev, Next;
    internal WaiterList<T>? List;

    internal readonly Hub Hub;
    internal readonly WaiterKind Kind;
    internal readonly Greenlet? Owner;
    private readonly WakeToken _token;
    private readonly TaskCompletionSource<T>? _completion;
    private readonly Action<Waiter<T>>? _callback;
    internal T Item;
    internal WaiterState State;

    // Task form only.
    private HubTimer? _timer;
    private CancellationTokenRegistration _registration;
    private Func<Exception>? _timeoutError;
    private T _timeoutValue = default!;

    private Waiter(Hub hub, WaiterKind kind, Greenlet? owner, WakeToken token, T item, Action<Waiter<T>>? callback)
    {
        Hub = hub;
        Kind = kind;
        Owner = owner;
        _token = token;
        Item = item;
        _callback = callback;
        // Continuations run asynchronously: an awaiting stackless greenlet gets its continuation posted through
        // its SynchronizationContext either way, and an awaiter without a context (a foreign thread) must not
        // run its code inline on the hub inside the primitive that serves it.
        if (kind == WaiterKind.Task) _completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>A waiter for the park named by <paramref name="token"/> (step 2 of the protocol).</summary>
    internal static Waiter<T> ForPark(Hub hub, in WakeToken token, T item = default!) =>
        new(hub, WaiterKind.Park, token.Greenlet, token, item, null);

    /// <summary>A waiter that completes a Task. <paramref name="owner"/> is the awaiting greenlet, or null for a foreign thread.</summary>
    internal static Waiter<T> ForTask(Hub hub, Greenlet? owner, T item = default!) =>
        new(hub, WaiterKind.Task, owner, default, item, null);

    /// <summary>A waiter that runs an internal, non-blocking callback on the hub when served.</summary>
    internal static Waiter<T> ForCallback(Hub hub, Action<Waiter<T>> callback) =>
        new(hub, WaiterKind.Callback, null, default, default!, callback);

    internal Task<T> Task => _completion!.Task;

    internal WakeToken ParkToken => _token;

    /// <summary>Whether serving this waiter can still succeed (Invariant W).</summary>
    internal bool IsLive => Kind switch
    {
        WaiterKind.Park => _token.IsCurrent,
        _ => State == WaiterState.Pending && Owner is not { Dead: true },
    };

    /// <summary>Hands <paramref name="item"/> to the waiter. False (nothing done) if it is stale.</summary>
    internal bool TryServe(T item)
    {
        switch (Kind)
        {
            case WaiterKind.Park:
                if (!Hub.TryWake(_token, this)) return false;
                Item = item;
                State = WaiterState.Served;
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

    /// <summary>Task form: arms the timeout (completing with the error or the value) and the cancellation token, and links it.</summary>
    internal void ArmTask(WaiterList<T> list, TimeSpan? timeout, CancellationToken cancellationToken, Func<Exception>? timeoutError, T timeoutValue = default!)
    {
        Debug.Assert(Kind == WaiterKind.Task, "Only Task waiters are armed.");
        Hub.AssertOnHub();
        _timeoutError = timeoutError;
        _timeoutValue = timeoutValue;
        list.AddLast(this);
        if (timeout is { } t && t != System.Threading.Timeout.InfiniteTimeSpan)
            _timer = Hub.AddTimer(t, static s => ((Waiter<T>)s!).TimeOut(), this);
        if (cancellationToken.CanBeCanceled)
        {
            var hub = Hub;
            _registration = cancellationToken.UnsafeRegister(static (s, ct) =>
            {
                var w = (Waiter<T>)s!;
                try
                {
                    w.Hub.Post(() => w.Cancel(ct));
                }
                catch (ObjectDisposedException)
                {
                    // The hub is gone; nothing can serve the waiter any more, so cancelling here is safe.
                    w._completion!.TrySetCanceled(ct);
                }
            }, this);
        }
        if (Owner is { IsStackless: true } owner) owner.TrackAsyncWait(this);
    }

    private void TimeOut()
    {
        if (State != WaiterState.Pending) return;
        State = WaiterState.TimedOut;
        List?.Remove(this);
        ReleaseTaskResources();
        if (_timeoutError != null) _completion!.TrySetException(_timeoutError());
        else _completion!.TrySetResult(_timeoutValue);
    }

    private void Cancel(CancellationToken cancellationToken)
    {
        if (State != WaiterState.Pending) return;
        State = WaiterState.Failed;
        List?.Remove(this);
        ReleaseTaskResources();
        _completion!.TrySetCanceled(cancellationToken);
    }

    /// <summary>Ends a pending Task wait with <paramref name="error"/> (kill or GreenTimeout of its owner). Hub-only.</summary>
    public void Fail(Exception error)
    {
        if (State != WaiterState.Pending) return;
        State = WaiterState.Failed;
        List?.Remove(this);
        ReleaseTaskResources();
        _completion?.TrySetException(error);
    }

    private void ReleaseTaskResources()
    {
        _timer?.Cancel();
        _timer = null;
        _registration.Dispose();
        Owner?.UntrackAsyncWait(this);
    }

    [Conditional("DEBUG")]
    internal void AssertServable()
    {
        if (State != WaiterState.Pending && Kind != WaiterKind.Park)
            throw new InvalidOperationException($"Invariant W broken: a {Kind} waiter in state {State} is being served again.");
    }
}
