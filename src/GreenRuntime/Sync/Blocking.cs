using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Sync;

/// <summary>Steps 2-4 of the waiter protocol (Waiter.cs) and the checks every primitive shares.</summary>
internal static class Blocking
{
    /// <summary>
    /// The hub a blocking call of the calling thread parks on: its hub, created lazily for a plain thread (as
    /// <see cref="Green.Sleep(TimeSpan)"/> does, so <c>new Event().Wait(timeout)</c> works as the first statement of
    /// <c>Main</c>), or null on a thread-pool thread with no hub, which blocks its thread instead (nothing would run a
    /// hub bound to a pool thread once its work item returns).
    /// </summary>
    internal static Hub? WaitingHub() =>
        Hub.CurrentOrNull ?? (Thread.CurrentThread.IsThreadPoolThread ? null : Hub.Current);

    /// <summary>
    /// Whether a Task-form wait of the calling thread can rely on a hub to complete it: false on a thread-pool thread
    /// outside a greenlet, with no hub or with one whose loop no longer runs (<see cref="Hub.LoopMayRun"/>).
    /// </summary>
    internal static bool HasRunningHub() =>
        Hub.CurrentOrNull is { } hub ? hub.LoopMayRun : !Thread.CurrentThread.IsThreadPoolThread;

    /// <summary>
    /// Steps 2-4: with <paramref name="lk"/> held (step 1 found nothing to take), parks the caller as a waiter of
    /// <paramref name="list"/> carrying <paramref name="item"/>, and releases the lock. Returns the served waiter (its
    /// <c>Item</c> is what it was given), or null when the timeout elapsed. Throws what ended the wait otherwise
    /// (kill, GreenTimeout, LoopExit, the primitive's failure).
    /// </summary>
    /// <remarks><paramref name="onServedButInterrupted"/> is called under the lock when the waiter was served but the
    /// wait ends with an exception anyway (a kill that landed after the hand-over): the primitive takes the item back.</remarks>
    internal static Waiter<T>? Park<T>(Hub? hub, SyncLock lk, WaiterList<T> list, WaitReason reason, TimeSpan? timeout, T item = default!, Action<Waiter<T>>? onServedButInterrupted = null)
    {
        Debug.Assert(lk.IsHeld, "Park is entered with the primitive's lock held.");
        if (hub == null) return BlockThread(lk, list, timeout, item, onServedButInterrupted);
        WakeToken token;
        try
        {
            token = hub.BeginPark(reason); // throws a pending kill or an AssertMayBlock failure
        }
        catch
        {
            lk.Exit();
            throw;
        }
        var w = Waiter<T>.ForPark(lk, hub, token, item);
        list.AddLast(w);
        lk.Exit();
        // Another hub's greenlet may serve it: while another hub may run, the wait is not one that only this hub could
        // end, so it keeps LoopExit away.
        bool external = hub.OtherHubsMayRun;
        HubTimer? timer = null;
        object? woken;
        try
        {
            if (external) hub.BeginExternalWait();
            if (IsFinite(timeout)) timer = hub.AddWakeTimer(timeout!.Value, token, Hub.TimedOut);
            woken = hub.EndPark(token);
        }
        catch (Exception e)
        {
            // Served on another hub as a kill or timeout ended the park here, with nothing to give back (a putter's item
            // is the getter's now): the call took effect, as it does on one hub, where a timeout waits while its greenlet
            // holds a value it has not seen. The kill or expired scope stays, raised at the next blocking point.
            if (Interrupted(lk, list, w, onServedButInterrupted) && ReferenceEquals(e, hub.CurrentGreenlet.StickyException()))
                return w;
            throw;
        }
        finally
        {
            timer?.Cancel();
            if (external) hub.EndExternalWait();
        }
        return Resolve(lk, list, w, woken);
    }

    /// <summary>Step 4 after a park returned normally (served, or its timer fired).</summary>
    private static Waiter<T>? Resolve<T>(SyncLock lk, WaiterList<T> list, Waiter<T> w, object? woken)
    {
        lk.Enter();
        var state = w.State;
        if (state == WaiterState.Pending) Withdraw(list, w);
        lk.Exit();
        switch (state)
        {
            case WaiterState.Served:
                return w; // also when the timer won the park: the item was bound to the waiter first, so it is returned
            case WaiterState.Failed:
                throw w.Failure!;
            default:
                Debug.Assert(ReferenceEquals(woken, Hub.TimedOut) || woken == null, $"A park of a waiter was resumed by {woken ?? "null"}, neither its server nor its timer.");
                return null;
        }
    }

    /// <summary>A wait that ends with an exception: the waiter leaves the list, or, if it was served in the meantime,
    /// the primitive takes its item back.</summary>
    /// <returns>Whether it was served with nothing to take back: what it waited for has happened.</returns>
    private static bool Interrupted<T>(SyncLock lk, WaiterList<T> list, Waiter<T> w, Action<Waiter<T>>? onServedButInterrupted)
    {
        lk.Enter();
        bool done = false;
        if (w.State == WaiterState.Served)
        {
            if (onServedButInterrupted != null) onServedButInterrupted(w);
            else done = true;
        }
        else
        {
            Withdraw(list, w);
        }
        lk.Exit();
        return done;
    }

    private static void Withdraw<T>(WaiterList<T> list, Waiter<T> w)
    {
        if (w.State == WaiterState.Pending) w.State = WaiterState.TimedOut;
        list.Remove(w);
    }

    /// <summary>Steps 2-4 for a thread with no hub (a thread-pool thread): a Task waiter the thread blocks on.</summary>
    private static Waiter<T>? BlockThread<T>(SyncLock lk, WaiterList<T> list, TimeSpan? timeout, T item, Action<Waiter<T>>? onServedButInterrupted)
    {
        var w = Waiter<T>.ForTask(lk, null, null, item);
        list.AddLast(w);
        lk.Exit();
        try
        {
            ((IAsyncResult)w.Task).AsyncWaitHandle.WaitOne(timeout ?? Timeout.InfiniteTimeSpan);
        }
        catch
        {
            Interrupted(lk, list, w, onServedButInterrupted);
            throw;
        }
        return Resolve(lk, list, w, null);
    }

    /// <summary>The greenlet a Task-form wait belongs to (null off the hub, or in a hub callback).</summary>
    internal static Greenlet? TaskOwner(Hub? hub)
    {
        if (hub == null) return null;
        var g = hub.CurrentGreenlet;
        return g == hub.HubGreenlet ? null : g;
    }

    /// <summary>
    /// The Task form's equivalent of BeginPark's check: a kill or GreenTimeout pending for the calling greenlet is
    /// raised here, at this blocking point. Returns the exception to fault the Task with, or null.
    /// </summary>
    internal static Exception? TakePendingException(Greenlet? owner) => TakePendingException(owner, GreenTimeout.FlowScope);

    /// <summary><see cref="TakePendingException(Greenlet?)"/> for a wait begun in the flow whose scope was <paramref name="scope"/>.</summary>
    internal static Exception? TakePendingException(Greenlet? owner, GreenTimeout? scope)
    {
        if (owner == null || owner.ShieldDepth > 0) return null;
        if (owner.PendingException is not { } pending)
        {
            var sticky = owner.StickyException(scope); // a kill or expired scope raises every time
            return sticky != null && owner.Hub.HeldInForeignCall(owner) ? null : sticky;
        }
        if (owner.Hub.HeldInForeignCall(owner)) return null; // raised after the native call returns (Hub.Parking.cs)
        if (!owner.Dead) owner.PendingException = null;
        return pending;
    }

    internal static bool IsFinite(TimeSpan? timeout) => timeout is { } t && t != Timeout.InfiniteTimeSpan;

    /// <summary>Throws for a negative timeout other than <see cref="Timeout.InfiniteTimeSpan"/>.</summary>
    internal static void ValidateTimeout(TimeSpan? timeout, string paramName = "timeout")
    {
        if (timeout is { } t && t < TimeSpan.Zero && t != Timeout.InfiniteTimeSpan)
            ThrowNegativeTimeout(t, paramName);
    }

    private static void ThrowNegativeTimeout(TimeSpan t, string paramName) =>
        throw new ArgumentOutOfRangeException(paramName, t, "The timeout must not be negative (use null or Timeout.InfiniteTimeSpan to wait as long as it takes).");

    /// <summary>The caller's hub for a Task-form wait (its timer and owner), or null off any hub and where no hub runs
    /// (<see cref="HasRunningHub"/>). Never creates one.</summary>
    internal static Hub? CallerHub() => HasRunningHub() ? Hub.CurrentOrNull : null;

    /// <summary>
    /// <see cref="IGreenWaitable.Subscribe"/> for a flag-like primitive (Event, AsyncResult): <paramref name="onReady"/>
    /// runs at once when the flag is set (read under the lock), otherwise when a set serves the callback waiter.
    /// </summary>
    internal static IDisposable SubscribeFlag<TPrimitive>(TPrimitive primitive, SyncLock lk, WaiterList<bool> waiters, Func<TPrimitive, bool> isSet, Action onReady)
    {
        var w = Waiter<bool>.ForCallback(lk, _ => onReady());
        lk.Enter();
        bool now = isSet(primitive);
        if (!now) waiters.AddLast(w);
        lk.Exit();
        if (now) onReady();
        return new Unsubscriber(() =>
        {
            lk.Enter();
            waiters.Remove(w);
            lk.Exit();
        });
    }

    /// <summary>
    /// The Task-form wait of a flag-like primitive (Event, AsyncResult, and a semaphore's permit): true at once when
    /// <paramref name="isSet"/> says so under the lock (a semaphore's takes the permit there), otherwise a Task waiter
    /// linked into <paramref name="waiters"/> and armed. Pass a static lambda as <paramref name="isSet"/>, so the call
    /// allocates no closure.
    /// </summary>
    internal static Task<bool> WaitFlagAsync<TPrimitive>(TPrimitive primitive, SyncLock lk, WaiterList<bool> waiters, Func<TPrimitive, bool> isSet, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<bool>(cancellationToken);
        var hub = CallerHub();
        var owner = TaskOwner(hub);
        if (TakePendingException(owner) is { } pending) return Task.FromException<bool>(pending);
        lk.Enter();
        if (isSet(primitive))
        {
            lk.Exit();
            return Task.FromResult(true);
        }
        if (timeout == TimeSpan.Zero)
        {
            lk.Exit();
            return Task.FromResult(false);
        }
        var w = Waiter<bool>.ForTask(lk, hub, owner);
        waiters.AddLast(w);
        lk.Exit();
        w.Arm(timeout, cancellationToken, null, timeoutValue: false);
        return w.Task;
    }
}
