using System.Diagnostics;

namespace GreenRuntime.Sync;

/// <summary>
/// The FIFO of waiters of one primitive: an intrusive doubly linked list, so a waiter whose wait ended
/// (timeout, kill, cancellation) unlinks itself in O(1). Touched only under its primitive's <see cref="SyncLock"/>.
/// </summary>
/// <remarks>The list may hold stale waiters (see Waiter.cs); <see cref="ServeFirst"/> and <see cref="HasLive"/>
/// drop them from the head as they meet them, so they are never served and never counted as waiting.</remarks>
[DebuggerDisplay("Count = {Count}")]
internal sealed class WaiterList<T>
{
    private Waiter<T>? _head, _tail;

    /// <summary>Linked waiters, stale ones included.</summary>
    internal int Count { get; private set; }

    internal void AddLast(Waiter<T> w)
    {
        AssertUnlinked(w);
        w.List = this;
        w.Prev = _tail;
        w.Next = null;
        if (_tail != null) _tail.Next = w;
        else _head = w;
        _tail = w;
        Count++;
    }

    [Conditional("DEBUG")]
    private static void AssertUnlinked(Waiter<T> w)
    {
        // Not Debug.Assert: under the primitive's lock, a failure goes through SyncLock, which frees the lock first.
        if (w.List != null)
            throw SyncLock.InvariantBroken("Invariant broken: a waiter is linked in at most one list.");
    }

    /// <summary>Unlinks <paramref name="w"/> if it is in this list; idempotent.</summary>
    internal void Remove(Waiter<T> w)
    {
        if (w.List != this) return;
        if (w.Prev != null) w.Prev.Next = w.Next;
        else _head = w.Next;
        if (w.Next != null) w.Next.Prev = w.Prev;
        else _tail = w.Prev;
        w.Prev = w.Next = null;
        w.List = null;
        Count--;
    }

    /// <summary>The first live waiter (stale ones before it are dropped), or null. A waiter whose park a kill or timeout
    /// woke, not yet seen by its greenlet, is passed over but kept: inside a native callback that greenlet parks again for
    /// it (Waiter.AwaitsCancellationVerdict).</summary>
    internal Waiter<T>? FirstLive()
    {
        for (var w = _head; w != null;)
        {
            if (w.IsLive) return w;
            var next = w.Next;
            if (!w.AwaitsCancellationVerdict)
            {
                Remove(w);
                if (w.Kind == WaiterKind.Task) w.FailLocked(new GreenletExit()); // owner died: let its continuation unwind
            }
            w = next;
        }
        return null;
    }

    /// <summary>Whether some waiter can still be served.</summary>
    internal bool HasLive => FirstLive() != null;

    /// <summary>
    /// For the primitives' invariant checks (an item stored, or a permit counted, while a waiter waits): whether a waiter
    /// is live as far as this thread can tell, touching nothing. A park of a greenlet of another hub counts as live for
    /// serving (<see cref="Waiter{T}.IsLive"/>: only its own hub may read its token), but a kill or timeout may have ended
    /// it there already, and its hub then stored what it would have been handed, the waiter to withdraw when its greenlet
    /// runs. Such a waiter is left out here: counted, a put or a take made on a plain thread or another hub in that
    /// window failed the check, inside the primitive's lock, which stayed held for good (a stress of one queue shared by
    /// four hubs and plain threads, with getters killed across hubs, hung 1 run in 4 in Debug).
    /// </summary>
    internal bool HasCertainlyLive
    {
        get
        {
            for (var w = _head; w != null; w = w.Next)
            {
                if (w.IsLive && (w.Kind != WaiterKind.Park || w.Hub!.IsOnHubThread)) return true;
            }
            return false;
        }
    }

    /// <summary>Unlinks and serves the first live waiter with <paramref name="item"/>; returns it, or null if none was live.</summary>
    internal Waiter<T>? ServeFirst(T item)
    {
        while (FirstLive() is { } w)
        {
            Remove(w);
            w.AssertServable();
            if (w.TryServe(item)) return w;
        }
        return null;
    }

    /// <summary>Unlinks and serves the first live waiter with the item it carries (a putter); returns it, or null.</summary>
    internal Waiter<T>? ServeFirstWithOwnItem()
    {
        while (FirstLive() is { } w)
        {
            Remove(w);
            w.AssertServable();
            if (w.TryServe()) return w;
        }
        return null;
    }

    /// <summary>Unlinks every waiter and serves the live ones with <paramref name="item"/>, in FIFO order.</summary>
    internal int ServeAll(T item)
    {
        int served = 0;
        while (ServeFirst(item) != null) served++;
        return served;
    }

    /// <summary>Unlinks every waiter, failing each live one with an exception from <paramref name="error"/>.</summary>
    internal void FailAll(Func<Exception> error)
    {
        while (FirstLive() is { } w)
        {
            Remove(w);
            w.FailWith(error());
        }
    }
}
