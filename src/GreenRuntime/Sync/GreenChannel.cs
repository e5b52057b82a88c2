using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A zero-capacity rendezvous, like gevent's <c>Channel</c>: <see cref="Put"/> blocks until a <see cref="Get"/> takes
/// the item, and <see cref="Get"/> blocks until a <see cref="Put"/> offers one.
/// </summary>
/// <remarks>
/// <para>A <see cref="Put"/> that finds a getter waiting hands the item over and returns at once (the getter resumes
/// with it later); otherwise it waits as a putter until a getter takes its item. Both sides are served FIFO, and a
/// side whose timeout expired never gives or takes an item.</para>
/// <para>An item whose <see cref="Put"/> returned is never lost: if its getter is killed (or interrupted by a
/// <see cref="GreenTimeout"/>) between the hand-over and its resume, the item goes to the next getter, ahead of
/// the waiting putters. Only then does the channel hold items, and only until a getter comes.</para>
/// <para>Every method is safe from any thread; getters and putters may be greenlets of several hubs and plain
/// threads at once (each waiter is woken through its own hub).</para>
/// </remarks>
/// <typeparam name="T">The item type.</typeparam>
[DebuggerDisplay("GreenChannel Getters={_getters.Count} Putters={_putters.Count}")]
public sealed class GreenChannel<T>
{
    private readonly SyncLock _lock = new();
    private readonly WaiterList<T> _getters = new();
    private readonly WaiterList<T> _putters = new();
    // Items handed to a getter that was killed before it resumed: their Put already returned, so they belong to
    // the next getters, before any waiting putter's item (guarded by _lock, like the waiter lists).
    private readonly Queue<T> _givenBack = new();

    /// <summary>Creates a channel. It may be used from any thread and any hub.</summary>
    public GreenChannel() { }

    /// <summary>Whether a getter is waiting now (so a <see cref="TryPut"/> would succeed).</summary>
    public bool HasWaitingGetter
    {
        get
        {
            _lock.Enter();
            bool any = _getters.HasLive;
            _lock.Exit();
            return any;
        }
    }

    /// <summary>Whether a putter is waiting now (so a <see cref="TryGet"/> would succeed).</summary>
    public bool HasWaitingPutter
    {
        get
        {
            _lock.Enter();
            bool any = _putters.HasLive;
            _lock.Exit();
            return any;
        }
    }

    /// <summary>Hands <paramref name="item"/> to a waiting getter, if any, without blocking.</summary>
    public bool TryPut(T item)
    {
        _lock.Enter();
        bool served = _getters.ServeFirst(item) != null;
        _lock.Exit();
        return served;
    }

    /// <summary>Takes an item given back by a killed getter or, if none, the item of a waiting putter, without blocking.</summary>
    public bool TryGet(out T item)
    {
        _lock.Enter();
        bool ok = TryGetLocked(out item);
        _lock.Exit();
        return ok;
    }

    private bool TryGetLocked(out T item)
    {
        if (_givenBack.TryDequeue(out item!)) return true;
        if (_putters.ServeFirstWithOwnItem() is { } putter)
        {
            item = putter.Item;
            return true;
        }
        item = default!;
        return false;
    }

    /// <summary>Offers <paramref name="item"/> and waits until a getter takes it.</summary>
    /// <exception cref="QueueFullException">No getter took it within <paramref name="timeout"/> (zero: none was waiting).</exception>
    public void Put(T item, TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (TryPut(item))
        {
            // gevent's order: put returns only after the getter has run with the item. A served getter of this hub is
            // in the ready queue; going behind it lets it run first (`sending, hello, sent hello, world, sent world`).
            if (Hub.CurrentOrNull is { CanBlockHere: true } here) here.YieldCurrent();
            return;
        }
        if (timeout == TimeSpan.Zero) throw NotTaken(timeout);
        var hub = Blocking.WaitingHub();
        _lock.Enter();
        if (_getters.ServeFirst(item) != null)
        {
            _lock.Exit();
            if (hub is { CanBlockHere: true }) hub.YieldCurrent();
            return;
        }
        if (Blocking.Park(hub, _lock, _putters, WaitReason.Queue, timeout, item) == null) throw NotTaken(timeout);
    }

    /// <summary>Waits for a putter and takes its item.</summary>
    /// <exception cref="QueueEmptyException">No putter came within <paramref name="timeout"/> (zero: none was waiting).</exception>
    public T Get(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        if (TryGet(out var item)) return item;
        if (timeout == TimeSpan.Zero) throw Empty(timeout);
        var hub = Blocking.WaitingHub();
        _lock.Enter();
        if (TryGetLocked(out item))
        {
            _lock.Exit();
            return item;
        }
        var w = Blocking.Park(hub, _lock, _getters, WaitReason.Queue, timeout, default!, GiveBack);
        return w != null ? w.Item : throw Empty(timeout);
    }

    /// <summary>Offers <paramref name="item"/> without blocking a thread; completes when a getter took it.</summary>
    public Task PutAsync(T item, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Blocking.ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled(cancellationToken);
        var hub = Blocking.CallerHub();
        var owner = Blocking.TaskOwner(hub);
        if (Blocking.TakePendingException(owner) is { } pending) return Task.FromException(pending);
        _lock.Enter();
        if (_getters.ServeFirst(item) != null)
        {
            _lock.Exit();
            return Task.CompletedTask;
        }
        if (timeout == TimeSpan.Zero)
        {
            _lock.Exit();
            return Task.FromException(new QueueFullException($"No greenlet was waiting on {this}."));
        }
        var w = Waiter<T>.ForTask(_lock, hub, owner, item);
        _putters.AddLast(w);
        _lock.Exit();
        w.Arm(timeout, cancellationToken, () => NotTaken(timeout));
        return w.Task;
    }

    /// <summary>Waits for a putter without blocking a thread and completes with its item.</summary>
    public Task<T> GetAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Blocking.ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<T>(cancellationToken);
        var hub = Blocking.CallerHub();
        var owner = Blocking.TaskOwner(hub);
        if (Blocking.TakePendingException(owner) is { } pending) return Task.FromException<T>(pending);
        _lock.Enter();
        if (TryGetLocked(out var ready))
        {
            _lock.Exit();
            return Task.FromResult(ready);
        }
        if (timeout == TimeSpan.Zero)
        {
            _lock.Exit();
            return Task.FromException<T>(Empty(timeout));
        }
        var w = Waiter<T>.ForTask(_lock, hub, owner);
        _getters.AddLast(w);
        _lock.Exit();
        w.Arm(timeout, cancellationToken, () => Empty(timeout));
        return w.Task;
    }

    /// <summary>A getter was handed an item but was killed before resuming: its putter already returned, so the item
    /// goes to the next live getter, or waits for the next getter to come. Under the lock.</summary>
    private void GiveBack(Waiter<T> w)
    {
        if (_getters.ServeFirst(w.Item) == null) _givenBack.Enqueue(w.Item);
    }

    private QueueFullException NotTaken(TimeSpan? timeout) => new($"No greenlet took the item from {this} within {timeout}.");

    private QueueEmptyException Empty(TimeSpan? timeout) => new($"No greenlet put an item into {this} within {timeout}.");

    /// <summary>Describes the channel for logs.</summary>
    public override string ToString() => "<GreenChannel>";
}
