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
/// <para>Every method is safe from a foreign thread (applied on the hub; the caller waits for the hand-over).</para>
/// </remarks>
/// <typeparam name="T">The item type.</typeparam>
[DebuggerDisplay("GreenChannel Getters={_getters.Count} Putters={_putters.Count}")]
public sealed class GreenChannel<T>
{
    private readonly WaiterList<T> _getters = new();
    private readonly WaiterList<T> _putters = new();
    // Items handed to a getter that was killed before it resumed: their Put already returned, so they belong to
    // the next getters, before any waiting putter's item (hub-only, like the waiter lists).
    private readonly Queue<T> _givenBack = new();
    private Hub? _hub;

    /// <summary>Creates a channel bound to the calling thread's hub (or to the first hub that uses it).</summary>
    public GreenChannel() => _hub = Hub.CurrentOrNull;

    /// <summary>Whether a getter is waiting now (so a <see cref="TryPut"/> would succeed). Hub-only.</summary>
    public bool HasWaitingGetter => _getters.HasLive;

    /// <summary>Whether a putter is waiting now (so a <see cref="TryGet"/> would succeed). Hub-only.</summary>
    public bool HasWaitingPutter => _putters.HasLive;

    /// <summary>Hands <paramref name="item"/> to a waiting getter, if any, without blocking.</summary>
    public bool TryPut(T item)
    {
        var hub = Blocking.Bind(ref _hub, this);
        if (!hub.IsOnHubThread) return Blocking.Ask(hub, () => TryPut(item));
        return _getters.ServeFirst(item) != null;
    }

    /// <summary>Takes an item given back by a killed getter or, if none, the item of a waiting putter, without blocking.</summary>
    public bool TryGet(out T item)
    {
        var hub = Blocking.Bind(ref _hub, this);
        if (!hub.IsOnHubThread)
        {
            (bool ok, item) = Blocking.Ask(hub, () => TryGet(out var v) ? (true, v) : (false, default(T)!));
            return ok;
        }
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
        var hub = Blocking.Bind(ref _hub, this);
        if (!hub.IsOnHubThread)
        {
            Blocking.BlockOn(PutAsync(item, timeout));
            return;
        }
        if (_getters.ServeFirst(item) != null)
        {
            // gevent's order: put returns only after the getter has run with the item. The served getter is in the
            // ready queue; going behind it lets it run first (`sending, hello, sent hello, world, sent world`).
            if (hub.CanBlockHere) hub.YieldCurrent();
            return;
        }
        if (timeout == TimeSpan.Zero || Blocking.Park(hub, _putters, WaitReason.Queue, timeout, item) == null)
            throw new QueueFullException($"No greenlet took the item from {this} within {timeout}.");
    }

    /// <summary>Waits for a putter and takes its item.</summary>
    /// <exception cref="QueueEmptyException">No putter came within <paramref name="timeout"/> (zero: none was waiting).</exception>
    public T Get(TimeSpan? timeout = null)
    {
        Blocking.ValidateTimeout(timeout);
        var hub = Blocking.Bind(ref _hub, this);
        if (!hub.IsOnHubThread) return Blocking.BlockOn(GetAsync(timeout));
        if (TryGet(out var item)) return item;
        if (timeout == TimeSpan.Zero) throw Empty(timeout);
        var w = Blocking.Park(hub, _getters, WaitReason.Queue, timeout, default!, GiveBack);
        return w != null ? w.Item : throw Empty(timeout);
    }

    /// <summary>Offers <paramref name="item"/> without blocking a thread; completes when a getter took it.</summary>
    public Task PutAsync(T item, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Blocking.ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled(cancellationToken);
        var hub = Blocking.Bind(ref _hub, this);
        var owner = Blocking.TaskOwner(hub);
        if (Blocking.TakePendingException(owner) is { } pending) return Task.FromException(pending);
        var w = Waiter<T>.ForTask(hub, owner, item);
        if (hub.IsOnHubThread) StartPut(w, timeout, cancellationToken);
        else Blocking.PostStart(hub, StartPut, w, timeout, cancellationToken);
        return w.Task;
    }

    /// <summary>Waits for a putter without blocking a thread and completes with its item.</summary>
    public Task<T> GetAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        Blocking.ValidateTimeout(timeout);
        if (cancellationToken.IsCancellationRequested) return Task.FromCanceled<T>(cancellationToken);
        var hub = Blocking.Bind(ref _hub, this);
        var owner = Blocking.TaskOwner(hub);
        if (Blocking.TakePendingException(owner) is { } pending) return Task.FromException<T>(pending);
        var w = Waiter<T>.ForTask(hub, owner);
        if (hub.IsOnHubThread) StartGet(w, timeout, cancellationToken);
        else Blocking.PostStart(hub, StartGet, w, timeout, cancellationToken);
        return w.Task;
    }

    /// <summary>A getter was handed an item but was killed before resuming: its putter already returned, so the item
    /// goes to the next live getter, or waits for the next getter to come.</summary>
    private void GiveBack(Waiter<T> w)
    {
        if (_getters.ServeFirst(w.Item) == null) _givenBack.Enqueue(w.Item);
    }

    private QueueEmptyException Empty(TimeSpan? timeout) => new($"No greenlet put an item into {this} within {timeout}.");

    /// <summary>Describes the channel for logs.</summary>
    public override string ToString() => "<GreenChannel>";

    // Applies a Task-form wait on the hub (kept out of the public method so its fast path allocates no closure).
    private void StartPut(Waiter<T> w, TimeSpan? timeout, CancellationToken cancellationToken)
    {
            if (_getters.ServeFirst(w.Item) != null) w.TryServe();
            else if (timeout == TimeSpan.Zero) w.Fail(new QueueFullException($"No greenlet was waiting on {this}."));
            else w.ArmTask(_putters, timeout, cancellationToken, () => new QueueFullException($"No greenlet took the item from {this} within {timeout}."));
    }

    // Applies a Task-form wait on the hub (kept out of the public method so its fast path allocates no closure).
    private void StartGet(Waiter<T> w, TimeSpan? timeout, CancellationToken cancellationToken)
    {
            if (_givenBack.TryPeek(out var returned) && w.TryServe(returned)) _givenBack.Dequeue();
            else if (_putters.ServeFirstWithOwnItem() is { } putter) w.TryServe(putter.Item);
            else if (timeout == TimeSpan.Zero) w.Fail(Empty(timeout));
            else w.ArmTask(_getters, timeout, cancellationToken, () => Empty(timeout));
    }
}
