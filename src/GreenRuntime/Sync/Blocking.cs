using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Sync;

/// <summary>Steps 2-4 of the waiter protocol (Waiter.cs) and the checks every primitive shares.</summary>
internal static class Blocking
{
    /// <summary>
    /// Parks the current greenlet as a waiter of <paramref name="list"/> carrying <paramref name="item"/>.
    /// Returns the served waiter (its <c>Item</c> is what it was given), or null when the timeout elapsed.
    /// </summary>
    /// <remarks><c>onServedButInterrupted</c> is called when the waiter was served but the greenlet resumes with an
    /// exception anyway (a kill that landed after the hand-over): the primitive takes the item back.</remarks>
    internal static Waiter<T>? Park<T>(Hub hub, WaiterList<T> list, WaitReason reason, TimeSpan? timeout, T item = default!, Action<Waiter<T>>? onServedButInterrupted = null)
    {
        var token = hub.BeginPark(reason);
        var w = Waiter<T>.ForPark(hub, token, item);
        HubTimer? timer = null;
        try
        {
            list.AddLast(w);
            if (IsFinite(timeout)) timer = hub.AddWakeTimer(timeout!.Value, token, Hub.TimedOut);
        }
        catch
        {
            list.Remove(w);
            hub.CancelPark(token);
            throw;
        }
        object? woken;
        try
        {
            woken = hub.EndPark(token);
        }
        catch
        {
            list.Remove(w);
            if (w.State == WaiterState.Served) onServedButInterrupted?.Invoke(w);
            throw;
        }
        finally
        {
            timer?.Cancel();
        }
        if (ReferenceEquals(woken, w)) return w;
        Debug.Assert(ReferenceEquals(woken, Hub.TimedOut), $"A park of a waiter was resumed by {woken ?? "null"}, neither its server nor its timer (every park has exactly one wake).");
        list.Remove(w);
        return null;
    }

    /// <summary>The greenlet a Task-form wait belongs to (null off the hub, or in a hub callback).</summary>
    internal static Greenlet? TaskOwner(Hub hub)
    {
        if (!hub.IsOnHubThread) return null;
        var g = hub.CurrentGreenlet;
        return g == hub.HubGreenlet ? null : g;
    }

    /// <summary>
    /// The Task form's equivalent of BeginPark's check: a kill or GreenTimeout pending for the calling greenlet is
    /// raised here, at this blocking point. Returns the exception to fault the Task with, or null.
    /// </summary>
    internal static Exception? TakePendingException(Greenlet? owner)
    {
        if (owner == null || owner.ShieldDepth > 0) return null;
        if (owner.PendingException is not { } pending) return owner.StickyException(); // a kill or expired scope raises every time
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

    /// <summary>
    /// The hub a primitive belongs to: the one it was created on, or else the first hub that uses it. A thread with no
    /// hub gets one here, lazily, as <see cref="Green.Sleep(TimeSpan)"/> does, so a primitive works as the first thing a
    /// thread does (<c>new Event().Wait(timeout)</c> as the first statement of <c>Main</c>). Safe from any thread.
    /// </summary>
    /// <remarks>A thread-pool thread is never given a hub implicitly: nothing would run that hub's scheduler once the
    /// work item returns, so a primitive bound to it would strand its waiters. Signals from such threads are queued
    /// instead (<see cref="BindForSignal"/>); a wait or query there on a primitive no hub has used is refused.</remarks>
    internal static Hub Bind(ref Hub? field, object primitive)
    {
        var bound = Volatile.Read(ref field);
        if (bound != null && !bound.IsDisposed) return bound;
        var current = Hub.CurrentOrNull;
        if (current == null)
        {
            if (bound != null) return bound; // disposed: Post reports it
            if (Thread.CurrentThread.IsThreadPoolThread) ThrowUnboundOnPoolThread(primitive);
            current = Hub.Current; // this thread gets its hub, as Green.Sleep does
        }
        if (bound != null && bound.IsDisposed)
        {
            Interlocked.CompareExchange(ref field, current, bound);
            return Volatile.Read(ref field)!;
        }
        var winner = Interlocked.CompareExchange(ref field, current, null);
        if (winner != null) return winner;
        ReplayEarlySignals(primitive); // bound just now, on current's thread: apply what foreign threads signalled before
        return current;
    }

    private static void ThrowUnboundOnPoolThread(object primitive) =>
        throw new InvalidOperationException($"{primitive} has not been used on any hub yet, and a thread-pool thread gets no hub of its own (nothing would run it once the work item returns). Create or first use it on the thread (or greenlet) that waits on it; signals (Set, Release, Close) from pool threads are fine at any time.");

    /// <summary>
    /// Signals (Set, Clear, Release, Close, TaskDone) sent by threads without a hub before any hub used the primitive:
    /// they are replayed, in order, on the hub that binds it. Kept out of the primitives (a rare path): keyed weakly
    /// by primitive.
    /// </summary>
    private static readonly ConditionalWeakTable<object, ConcurrentQueue<Action>> s_earlySignals = new();

    /// <summary>
    /// The hub to apply a fire-and-forget signal on, like <see cref="Bind"/>; or null when the caller has no hub and no
    /// hub has used the primitive yet: then <paramref name="signal"/> is queued and runs on the hub that binds it (no
    /// greenlet can be waiting on an unbound primitive, so nothing is woken late).
    /// </summary>
    internal static Hub? BindForSignal(ref Hub? field, object primitive, Action signal)
    {
        var bound = Volatile.Read(ref field);
        if (bound != null) return bound;
        if (Hub.CurrentOrNull != null) return Bind(ref field, primitive);
        s_earlySignals.GetOrCreateValue(primitive).Enqueue(signal);
        // Dekker with Bind: it publishes the hub (a full fence) and then replays; we enqueue, fence, and look again.
        // Either it sees our signal, or we see its hub and have the signal replayed there.
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref field) is { } now) now.Post(() => ReplayEarlySignals(primitive));
        return null;
    }

    private static void ReplayEarlySignals(object primitive)
    {
        if (!s_earlySignals.TryGetValue(primitive, out var queue)) return;
        while (queue.TryDequeue(out var signal)) signal();
    }

    /// <summary>
    /// Blocks a caller that is not on the primitive's hub until <paramref name="task"/> completes: cooperatively if
    /// the caller is on another hub, otherwise by blocking its thread. Rethrows the task's exception unwrapped.
    /// </summary>
    internal static T BlockOn<T>(Task<T> task)
    {
        var here = Hub.CurrentOrNull;
        if (here != null && here.CanBlockHere) return Green.Wait(task);
        return task.GetAwaiter().GetResult();
    }

    /// <summary>The <see cref="BlockOn{T}"/> of a task without a result.</summary>
    internal static void BlockOn(Task task)
    {
        var here = Hub.CurrentOrNull;
        if (here != null && here.CanBlockHere) Green.Wait(task);
        else task.GetAwaiter().GetResult();
    }

    /// <summary>Runs <paramref name="query"/> on <paramref name="hub"/> and returns its answer to a caller on another thread (which waits for it).</summary>
    internal static TResult Ask<TResult>(Hub hub, Func<TResult> query)
    {
        var answer = new TaskCompletionSource<TResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        hub.Post(() =>
        {
            try
            {
                answer.SetResult(query());
            }
            catch (Exception e)
            {
                answer.SetException(e);
            }
        });
        return BlockOn(answer.Task);
    }

    /// <summary>Posts a Task-form wait's start to the hub from a foreign thread (the closure lives here, off the fast path).</summary>
    internal static void PostStart<TWaiter>(Hub hub, Action<TWaiter, TimeSpan?, CancellationToken> start, TWaiter w, TimeSpan? timeout, CancellationToken cancellationToken) =>
        hub.Post(() => start(w, timeout, cancellationToken));

    /// <summary>
    /// The Task-form wait of a flag-like primitive (Event, AsyncResult): true at once when <paramref name="isSet"/>
    /// (read by the caller; it counts only on the hub's thread), otherwise a waiter started on the hub by
    /// <paramref name="start"/>. Pass a static lambda as <paramref name="start"/> so the on-hub path allocates no closure.
    /// </summary>
    internal static Task<bool> WaitFlagAsync<TPrimitive>(ref Hub? hubSlot, TPrimitive primitive, bool isSet,
        Action<TPrimitive, Waiter<bool>, TimeSpan?, CancellationToken> start, TimeSpan? timeout, CancellationToken cancellationToken)
        where TPrimitive : class
    {
        ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<bool>(cancellationToken);
        var hub = Bind(ref hubSlot, primitive);
        var owner = TaskOwner(hub);
        if (TakePendingException(owner) is { } pending) return Task.FromException<bool>(pending);
        if (hub.IsOnHubThread && isSet) return Task.FromResult(true);
        var w = Waiter<bool>.ForTask(hub, owner);
        if (hub.IsOnHubThread) start(primitive, w, timeout, cancellationToken);
        else hub.Post(() => start(primitive, w, timeout, cancellationToken));
        return w.Task;
    }
}
