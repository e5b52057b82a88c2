using GreenRuntime.Scheduling;
// Queues: GreenQueue<T> (FIFO) and its storage variants GreenPriorityQueue<T>, LifoQueue<T>, JoinableQueue<T>.
//
// Glossary: store = the items held by the queue; getter/putter = a waiter blocked in Get/Put; hand-off = a Put
// that gives its item straight to a waiting getter without storing it.
//
// Every field below is guarded by _lock (Sync/SyncLock.cs); Count and IsClosed are also readable without it.
// Invariants (checked by AssertInvariants in DEBUG after every state change):
//   Q1. A live getter waits only while the store is empty (an item never sits in the store while a getter waits).
//   Q2. A live putter waits only while the store is full (a slot is never free while a putter waits).
// Both follow from the protocol: Put hands its item to the first live getter before storing; Get refills the
// store from the first live putters (taking their items and waking them) as soon as it frees a slot. Waiters are
// served in FIFO order, and an expired waiter is never served (Waiter.cs), so it never swallows an item.

using System.Collections;
using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A FIFO queue for greenlets, like gevent's <c>Queue</c>: <see cref="Get"/> blocks while it is empty, and
/// <see cref="Put"/> blocks while a bounded queue is full.
/// </summary>
/// <remarks>
/// <para>Blocked getters and putters are served first come, first served. A getter whose timeout expired never
/// takes an item; an item handed to a getter that is killed before it resumes goes back to the head of the queue.
/// A putter blocked on a full queue has its item moved into the queue by the <see cref="Get"/> that frees the slot,
/// so its item is in the queue even if the putter is killed before it resumes.</para>
/// <para>Non-blocking forms: <see cref="TryPut"/>/<see cref="TryGet"/> return false; <see cref="Put"/>/<see cref="Get"/>
/// with a zero timeout throw <see cref="QueueFullException"/>/<see cref="QueueEmptyException"/> (gevent's
/// <c>put_nowait</c>/<c>get_nowait</c>).</para>
/// <para>Thread safety: every method may be called from any thread, and producers and consumers may be greenlets of
/// several hubs (<see cref="HubGroup"/>) and plain threads at once: each waiter is woken through its own hub, and an
/// item is never lost nor delivered twice, also when a getter's timeout or kill races a put from another hub (a
/// getter of another hub whose timeout expires just as an item is handed to it returns the item).</para>
/// <para>Enumerating the queue takes items (blocking) until it is <see cref="Close">closed</see> and empty.</para>
/// </remarks>
/// <typeparam name="T">The item type.</typeparam>
/// <example>
/// <code>
/// var q = new GreenQueue&lt;int&gt;(maxSize: 2);
/// var consumer = Green.Spawn(() => { foreach (var x in q) Console.WriteLine(x); });
/// for (int i = 0; i &lt; 5; i++) q.Put(i);   // blocks whenever two items wait
/// q.Close();
/// consumer.Join();
/// </code>
/// </example>
[DebuggerDisplay("{GetType().Name,nq} Count={Count} MaxSize={MaxSize} Getters={_getters.Count} Putters={_putters.Count} Closed={_closed}")]
public class GreenQueue<T> : IEnumerable<T>
{
    private protected readonly SyncLock QueueLock = new();
    private readonly WaiterList<T> _getters = new();
    private readonly WaiterList<T> _putters = new();
    private readonly WaiterList<bool> _peekers = new();
    private readonly Deque<T>? _fifo;
    private volatile bool _closed;
    private volatile int _count;

    /// <summary>Creates an empty queue.</summary>
    /// <param name="maxSize">The most items it holds before <see cref="Put"/> blocks; null, zero or negative for
    /// unbounded (as gevent's <c>Queue(0)</c>). Use <see cref="GreenChannel{T}"/> for a zero-capacity rendezvous.</param>
    public GreenQueue(int? maxSize = null) : this(maxSize, fifo: true) { }

    private protected GreenQueue(int? maxSize, bool fifo)
    {
        MaxSize = maxSize is < 1 ? null : maxSize; // gevent: a non-positive size means unbounded
        if (fifo) _fifo = new Deque<T>();
    }

    /// <summary>The capacity, or null when unbounded.</summary>
    public int? MaxSize { get; }

    /// <summary>How many items the queue holds.</summary>
    public int Count => _count;

    /// <summary>Whether the queue holds no item.</summary>
    public bool IsEmpty => _count == 0;

    /// <summary>Whether a bounded queue holds <see cref="MaxSize"/> items (an unbounded queue is never full).</summary>
    public bool IsFull => MaxSize is { } max && _count >= max;

    /// <summary>Whether <see cref="Close"/> has been called.</summary>
    public bool IsClosed => _closed;

    // ---- storage: FIFO here; the subclasses override all five (called under the lock) ---------------------------

    private protected virtual int StoredCount => _fifo!.Count;
    private protected virtual void StoreItem(T item) => _fifo!.PushBack(item);
    private protected virtual T TakeItem() => _fifo!.PopFront();
    private protected virtual T PeekItem() => _fifo!.PeekFront();
    /// <summary>Returns an item that a killed getter never saw, so it is the next one taken.</summary>
    private protected virtual void ReturnItem(T item) => _fifo!.PushFront(item);
    private protected virtual IEnumerable<T> Snapshot() => _fifo!.Snapshot();

    /// <summary>Called under the lock each time an item enters the queue (stored or handed to a getter).</summary>
    private protected virtual void OnItemAdded() { }

    // ---- put ---------------------------------------------------------------------------------------------------

    private enum PutResult : byte { Added, Full, Closed }

    /// <summary>Adds <paramref name="item"/> without blocking.</summary>
    /// <returns>false if the queue is full.</returns>
    /// <exception cref="InvalidOperationException">The queue is closed.</exception>
    public bool TryPut(T item)
    {
        QueueLock.Enter();
        var result = TryPutLocked(item);
        QueueLock.Exit();
        if (result == PutResult.Closed) throw ClosedForPut();
        return result == PutResult.Added;
    }

    /// <summary>Adds <paramref name="item"/>, waiting while the queue is full.</summary>
    /// <param name="item">The item.</param>
    /// <param name="timeout">How long to wait for a free slot; null waits as long as it takes; zero does not wait.</param>
    /// <exception cref="QueueFullException">Still full after <paramref name="timeout"/>.</exception>
    /// <exception cref="InvalidOperationException">The queue is closed (also when it is closed while waiting).</exception>
    /// <exception cref="LoopExitException">Called from the main greenlet on a full queue that nothing else can drain.</exception>
    public void Put(T item, TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (TryPut(item)) return;
        if (timeout == TimeSpan.Zero) throw Full(timeout);
        var hub = Blocking.WaitingHub();
        QueueLock.Enter();
        var result = TryPutLocked(item);
        if (result != PutResult.Full)
        {
            QueueLock.Exit();
            if (result == PutResult.Closed) throw ClosedForPut();
            return;
        }
        if (Blocking.Park(hub, QueueLock, _putters, WaitReason.Queue, timeout, item) == null) throw Full(timeout);
    }

    /// <summary>Adds <paramref name="item"/> without blocking a thread: the task completes once the item is in the queue.</summary>
    /// <exception cref="QueueFullException">The task faults with it when the queue is still full after <paramref name="timeout"/>.</exception>
    public Task PutAsync(T item, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Blocking.ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled(cancellationToken);
        var hub = Blocking.CallerHub();
        var owner = Blocking.TaskOwner(hub);
        if (Blocking.TakePendingException(owner) is { } pending) return Task.FromException(pending);
        QueueLock.Enter();
        var result = TryPutLocked(item);
        if (result != PutResult.Full || timeout == TimeSpan.Zero)
        {
            QueueLock.Exit();
            return result switch
            {
                PutResult.Added => Task.CompletedTask,
                PutResult.Closed => Task.FromException(ClosedForPut()),
                _ => Task.FromException(Full(timeout)),
            };
        }
        var w = Waiter<T>.ForTask(QueueLock, hub, owner, item);
        _putters.AddLast(w);
        QueueLock.Exit();
        w.Arm(timeout, cancellationToken, () => Full(timeout));
        return w.Task;
    }

    private PutResult TryPutLocked(T item)
    {
        if (_closed) return PutResult.Closed;
        if (StoredCount == 0 && _getters.ServeFirst(item) != null)
        {
            OnItemAdded();
            AssertInvariants();
            return PutResult.Added;
        }
        if (MaxSize is { } max && StoredCount >= max) return PutResult.Full;
        try
        {
            StoreItem(item);
        }
        catch
        {
            // The store refused the item (a priority queue's comparer threw): the caller's exception, and the queue
            // stays usable: every caller holds the lock once and leaves at once when this throws.
            QueueLock.Exit();
            throw;
        }
        _count = StoredCount;
        OnItemAdded();
        _peekers.ServeAll(true);
        AssertInvariants();
        return PutResult.Added;
    }

    // ---- get ---------------------------------------------------------------------------------------------------

    /// <summary>Takes the next item without blocking.</summary>
    /// <returns>false if the queue is empty.</returns>
    public bool TryGet(out T item)
    {
        QueueLock.Enter();
        bool ok = TryGetLocked(out item);
        QueueLock.Exit();
        return ok;
    }

    /// <summary>Takes the next item, waiting while the queue is empty.</summary>
    /// <param name="timeout">How long to wait for an item; null waits as long as it takes; zero does not wait.</param>
    /// <exception cref="QueueEmptyException">Still empty after <paramref name="timeout"/>, or closed and empty.</exception>
    /// <exception cref="LoopExitException">Called from the main greenlet on an empty queue that nothing else can fill.</exception>
    public T Get(TimeSpan? timeout = null)
    {
        if (!TakeOrClosed(timeout, out var item)) throw ClosedAndEmpty();
        return item;
    }

    /// <summary>Blocking take; false only when the queue is closed and empty. Throws QueueEmpty on timeout.</summary>
    private bool TakeOrClosed(TimeSpan? timeout, out T item)
    {
        Blocking.ValidateTimeout(timeout);
        if (TryGet(out item)) return true;
        // Closed since the look: an item put before the close (on another hub or thread) may be there now. Once closed,
        // nothing more can come, so this second look decides.
        if (_closed) return TryGet(out item);
        if (timeout == TimeSpan.Zero) throw Empty(timeout);
        var hub = Blocking.WaitingHub();
        QueueLock.Enter();
        if (TryGetLocked(out item))
        {
            QueueLock.Exit();
            return true;
        }
        if (_closed)
        {
            QueueLock.Exit();
            return false;
        }
        Waiter<T>? w;
        try
        {
            w = Blocking.Park(hub, QueueLock, _getters, WaitReason.Queue, timeout, default!, GiveBack);
        }
        catch (QueueEmptyException e) when (e.IsClosed)
        {
            item = default!;
            return false; // woken by Close
        }
        if (w == null) throw Empty(timeout);
        item = w.Item;
        return true;
    }

    /// <summary>Takes the next item without blocking a thread.</summary>
    /// <exception cref="QueueEmptyException">The task faults with it when the queue is still empty after <paramref name="timeout"/>, or closed and empty.</exception>
    public Task<T> GetAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Blocking.ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<T>(cancellationToken);
        var hub = Blocking.CallerHub();
        var owner = Blocking.TaskOwner(hub);
        if (Blocking.TakePendingException(owner) is { } pending) return Task.FromException<T>(pending);
        QueueLock.Enter();
        if (TryGetLocked(out var ready))
        {
            QueueLock.Exit();
            return Task.FromResult(ready);
        }
        if (_closed || timeout == TimeSpan.Zero)
        {
            QueueLock.Exit();
            return Task.FromException<T>(_closed ? ClosedAndEmpty() : Empty(timeout));
        }
        var w = Waiter<T>.ForTask(QueueLock, hub, owner);
        _getters.AddLast(w);
        QueueLock.Exit();
        w.Arm(timeout, cancellationToken, () => Empty(timeout));
        return w.Task;
    }

    private bool TryGetLocked(out T item)
    {
        if (StoredCount == 0)
        {
            item = default!;
            return false;
        }
        item = TakeItem();
        // Q2: a slot is free, so the first live putters move their items in (and are woken).
        while ((MaxSize == null || StoredCount < MaxSize) && _putters.ServeFirstWithOwnItem() is { } putter)
        {
            StoreItem(putter.Item);
            OnItemAdded();
        }
        _count = StoredCount;
        AssertInvariants();
        return true;
    }

    /// <summary>A getter was handed an item but its wait ended with an exception (killed): the item goes back to the
    /// head. Under the lock.</summary>
    private void GiveBack(Waiter<T> w)
    {
        var item = w.Item;
        if (_getters.ServeFirst(item) != null) return;
        ReturnItem(item);
        _count = StoredCount;
        _peekers.ServeAll(true);
        AssertInvariants();
    }

    // ---- peek --------------------------------------------------------------------------------------------------

    /// <summary>Returns the next item without removing it or blocking.</summary>
    /// <returns>false if the queue is empty.</returns>
    public bool TryPeek(out T item)
    {
        QueueLock.Enter();
        bool ok = StoredCount > 0;
        item = ok ? PeekItem() : default!;
        QueueLock.Exit();
        return ok;
    }

    /// <summary>Returns the next item without removing it, waiting while the queue is empty.</summary>
    /// <remarks>An item handed directly to a waiting <see cref="Get"/> never sits in the queue, so a peeker does not see it.</remarks>
    /// <exception cref="QueueEmptyException">Still empty after <paramref name="timeout"/>, or closed and empty.</exception>
    public T Peek(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (TryPeek(out var first)) return first;
        if (_closed) return TryPeek(out first) ? first : throw ClosedAndEmpty(); // as in TakeOrClosed
        if (timeout == TimeSpan.Zero) throw Empty(timeout);
        var hub = Blocking.WaitingHub();
        var time = hub?.Options.TimeProvider ?? TimeProvider.System;
        long start = time.GetTimestamp();
        while (true)
        {
            TimeSpan? left = timeout;
            if (Blocking.IsFinite(timeout))
            {
                left = timeout!.Value - time.GetElapsedTime(start);
                if (left <= TimeSpan.Zero) throw Empty(timeout);
            }
            QueueLock.Enter();
            if (StoredCount > 0)
            {
                var item = PeekItem();
                QueueLock.Exit();
                return item;
            }
            if (_closed)
            {
                QueueLock.Exit();
                throw ClosedAndEmpty();
            }
            if (Blocking.Park(hub, QueueLock, _peekers, WaitReason.Queue, left) == null) throw Empty(timeout);
        }
    }

    // ---- close -------------------------------------------------------------------------------------------------

    /// <summary>
    /// Marks the queue complete: later puts throw <see cref="InvalidOperationException"/>, blocked putters fail
    /// with it, and once the items left are taken, getters (and enumerators) see the end. Idempotent; safe from any thread.
    /// </summary>
    public void Close()
    {
        QueueLock.Enter();
        _closed = true;
        _putters.FailAll(() => new InvalidOperationException($"{this} was closed while the put waited; its item was not added."));
        // Q1: getters wait only while the store is empty, so each of them sees the end now.
        _getters.FailAll(ClosedAndEmpty);
        _peekers.FailAll(ClosedAndEmpty);
        QueueLock.Exit();
    }

    private InvalidOperationException ClosedForPut() =>
        new($"{this} is closed; no item can be added. Create a new queue, or do not close it while producers still put.");

    // ---- enumeration -------------------------------------------------------------------------------------------

    /// <summary>Takes items (blocking while empty) until the queue is closed and empty.</summary>
    public IEnumerator<T> GetEnumerator()
    {
        while (TakeOrClosed(null, out var item)) yield return item;
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>A copy of the items, in the order they would be taken.</summary>
    public IReadOnlyList<T> ToList()
    {
        QueueLock.Enter();
        try
        {
            return Snapshot().ToList();
        }
        finally
        {
            QueueLock.Exit();
        }
    }

    /// <summary>Describes the queue for logs.</summary>
    public override string ToString() => $"<{GetType().Name.Split('`')[0]} count={Count}{(MaxSize is { } m ? "/" + m : "")}{(_closed ? " closed" : "")}>";

    private QueueFullException Full(TimeSpan? timeout) => new($"{this} stayed full for {timeout}.");
    private QueueEmptyException Empty(TimeSpan? timeout) => new($"{this} stayed empty for {timeout}.");
    private QueueEmptyException ClosedAndEmpty() => new($"{this} is closed and empty.") { IsClosed = true };

    [Conditional("DEBUG")]
    private void AssertInvariants()
    {
        // Through SyncLock: a check that fails frees the queue's lock before its exception leaves.
        if (SyncLock.Violated(StoredCount > 0 && _getters.HasCertainlyLive))
            throw SyncLock.InvariantBroken($"Invariant Q1 broken: {this} stores {StoredCount} item(s) while a getter waits.");
        if (SyncLock.Violated(_putters.HasCertainlyLive && MaxSize is { } max && StoredCount < max))
            throw SyncLock.InvariantBroken($"Invariant Q2 broken: {this} has a free slot while a putter waits.");
    }
}
