using System.Diagnostics;
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
        if (owner == null) return null;
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
    /// The hub a primitive belongs to: the one it was created on, or else the first hub that uses it. Safe from any thread.
    /// </summary>
    internal static Hub Bind(ref Hub? field, object primitive)
    {
        var bound = Volatile.Read(ref field);
        if (bound != null && !bound.IsDisposed) return bound;
        var current = Hub.CurrentOrNull;
        if (current == null)
        {
            if (bound != null) return bound; // disposed: Post reports it
            throw new InvalidOperationException($"{primitive} is not bound to a hub yet: use it first on a hub's thread (or create it there) before signalling it from another thread.");
        }
        if (bound != null && bound.IsDisposed)
        {
            Interlocked.CompareExchange(ref field, current, bound);
            return Volatile.Read(ref field)!;
        }
        return Interlocked.CompareExchange(ref field, current, null) ?? current;
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

    /// <summary>Runs <paramref name="action"/> on <paramref name="hub"/>: now if the caller is on it, else posted.</summary>
    internal static void OnHub(Hub hub, Action action)
    {
        if (hub.IsOnHubThread) action();
        else hub.Post(action);
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
