// Groups and pools: GreenGroup tracks a set of greenlets (each leaves the set when it dies); GreenPool is a group
// with a size, whose Spawn waits for a free slot. The slots are a FIFO-fair GreenSemaphore: a slot is taken before
// the greenlet is created and given back by the greenlet's death link, so at most Size members are ever alive and
// blocked spawners are served in arrival order. Map/IMap/IMapUnordered (GreenGroup.Mapping.cs) run a feeder greenlet
// that spawns one member per input item (waiting for slots) and collect completions through a GreenQueue.
//
// A group or pool may be shared by greenlets of several hubs (a HubGroup's: one limit on the jobs of every hub): a
// member runs on the hub of the greenlet that spawned it, and its death link runs on that hub, so the member set is
// changed from several threads. It is guarded by a lock held only for the set's own bookkeeping, never across a wait;
// the slots are a GreenSemaphore, which is thread-safe already. Unguarded, six spawners on three hubs left a pool
// counting -4 members and failed with the collections' own exceptions in 3 runs of 5.

using System.Collections;
using System.Diagnostics;
using GreenRuntime.Sync;

namespace GreenRuntime;

/// <summary>
/// A set of greenlets that can be joined and killed together, like gevent's <c>Group</c>. A greenlet leaves the
/// group when it dies. A group may be shared by greenlets of several hubs; each member runs on its spawner's hub.
/// </summary>
/// <example>
/// <code>
/// var group = new GreenGroup();
/// foreach (var url in urls) group.Spawn(() => Fetch(url));
/// group.Join();
/// </code>
/// </example>
[DebuggerDisplay("{GetType().Name,nq} Count={Count}")]
public partial class GreenGroup : IEnumerable<Greenlet>
{
    // Guarded by _lock (see the top of this file).
    private readonly Dictionary<Greenlet, LinkedListNode<Greenlet>> _index = new();
    private readonly LinkedList<Greenlet> _members = new();
    private readonly Lock _lock = new();
    private readonly Action<Greenlet> _onDead;

    /// <summary>Creates an empty group.</summary>
    public GreenGroup() => _onDead = g => Discard(g);

    /// <summary>How many greenlets are in the group (alive, or dead with their removal still queued).</summary>
    public int Count
    {
        get
        {
            lock (_lock) return _members.Count;
        }
    }

    /// <summary>Whether <paramref name="greenlet"/> is in the group.</summary>
    public bool Contains(Greenlet greenlet)
    {
        if (greenlet is null) return false;
        lock (_lock) return _index.ContainsKey(greenlet);
    }

    /// <summary>The members, oldest first, at this moment.</summary>
    private List<Greenlet> Snapshot()
    {
        lock (_lock) return _members.ToList();
    }

    /// <summary>Spawns a stackful greenlet in the group.</summary>
    public Greenlet Spawn(Action body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return SpawnCore(() => new Greenlet(body, name));
    }

    /// <summary>Spawns a stackful greenlet with a result in the group.</summary>
    /// <exception cref="ArgumentException"><paramref name="body"/> returns a task (an async lambda): use <see cref="SpawnAsync{T}(Func{Task{T}}, string?)"/>.</exception>
    public Greenlet<T> Spawn<T>(Func<T> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return SpawnCore(() => new Greenlet<T>(body, name));
    }

    /// <summary>Spawns a stackless greenlet in the group (see <see cref="Green.SpawnAsync(Func{Task}, string?)"/>).</summary>
    public Greenlet SpawnAsync(Func<Task> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return SpawnCore(() => Greenlet.CreateStackless(body, name));
    }

    /// <summary>Spawns a stackless greenlet with a result in the group.</summary>
    public Greenlet<T> SpawnAsync<T>(Func<Task<T>> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return SpawnCore(() => Greenlet<T>.CreateStackless(body, name));
    }

    private TGreenlet SpawnCore<TGreenlet>(Func<TGreenlet> create) where TGreenlet : Greenlet
    {
        ReserveSlot();
        TGreenlet g;
        try
        {
            g = create();
        }
        catch
        {
            ReturnSlot();
            throw;
        }
        Track(g);
        try
        {
            g.Start();
        }
        catch
        {
            Discard(g); // never started: its death link would never return the slot
            throw;
        }
        return g;
    }

    /// <summary>Waits for room for one more member (a pool's slot). The group has no limit.</summary>
    private protected virtual void ReserveSlot() { }

    /// <summary>Gives back what <see cref="ReserveSlot"/> took.</summary>
    private protected virtual void ReturnSlot() { }

    /// <summary>Adds a greenlet (started or not) to the group; it leaves when it dies. No-op if already a member.</summary>
    public virtual void Add(Greenlet greenlet)
    {
        ArgumentNullException.ThrowIfNull(greenlet);
        if (Contains(greenlet)) return;
        ReserveSlot();
        if (!Track(greenlet)) ReturnSlot(); // added meanwhile by a greenlet of another hub
    }

    /// <summary>Makes <paramref name="greenlet"/> a member; false, doing nothing, when it is one already.</summary>
    private protected bool Track(Greenlet greenlet)
    {
        Hub.Current.AssertOnHub();
        lock (_lock)
        {
            if (_index.ContainsKey(greenlet)) return false;
            _index[greenlet] = _members.AddLast(greenlet);
        }
        greenlet.AddLink(_onDead, LinkKind.All); // outside the lock: on a dead greenlet it runs Discard now
        return true;
    }

    /// <summary>Removes a greenlet from the group without touching it. No-op if it is not a member.</summary>
    public void Discard(Greenlet greenlet)
    {
        ArgumentNullException.ThrowIfNull(greenlet);
        lock (_lock)
        {
            if (!_index.Remove(greenlet, out var node)) return;
            _members.Remove(node);
        }
        greenlet.Unlink(_onDead);
        ReturnSlot();
    }

    /// <summary>Waits until every member has died (including members added meanwhile) and has left the group: on return
    /// the group is empty unless members were added meanwhile, and a pool's slots are free.</summary>
    /// <param name="timeout">How long to wait; null waits as long as it takes.</param>
    /// <param name="raiseError">Rethrow the first failure of a member seen while joining.</param>
    /// <returns>false if some member was still alive after <paramref name="timeout"/>.</returns>
    public bool Join(TimeSpan? timeout = null, bool raiseError = false)
    {
        Blocking.ValidateTimeout(timeout);
        var hub = Hub.Current;
        var clock = hub.Options.TimeProvider;
        long start = clock.GetTimestamp();
        while (true)
        {
            var members = Snapshot();
            var alive = members.FindAll(g => !g.Dead);
            if (alive.Count == 0)
            {
                // A dead member leaves through its death link, which its hub runs a little later; gevent's join waits
                // for the group to be empty, so that a pool's slots are free when it returns. Removing those members
                // here gives that at once (Discard is idempotent: the link finds them gone).
                foreach (var dead in members) Discard(dead);
                return true;
            }
            TimeSpan? left = null;
            if (Blocking.IsFinite(timeout))
            {
                left = timeout!.Value - clock.GetElapsedTime(start);
                if (left < TimeSpan.Zero) return false;
            }
            Green.JoinAll(alive, left, raiseError);
        }
    }

    /// <summary>Kills every member (see <see cref="Greenlet.Kill"/>) and, when <paramref name="block"/>, waits up to <paramref name="timeout"/> for them to die.</summary>
    /// <remarks>Unlike <see cref="Green.KillAll"/>, an elapsed timeout is not an error here (gevent's <c>Group.kill</c>
    /// swallows its own timeout): the members still alive stay in the group, with the kill in force.</remarks>
    public void Kill(Exception? exception = null, bool block = true, TimeSpan? timeout = null)
    {
        try
        {
            Green.KillAll(Snapshot(), exception, block, timeout);
        }
        catch (TimeoutException) when (timeout != null)
        {
        }
    }

    /// <summary>Kills one member.</summary>
    /// <exception cref="ArgumentException">It is not a member.</exception>
    public void KillOne(Greenlet greenlet, Exception? exception = null, bool block = true, TimeSpan? timeout = null)
    {
        if (!Contains(greenlet)) throw new ArgumentException($"{greenlet} is not in this group.", nameof(greenlet));
        greenlet.Kill(exception, block, timeout);
    }

    /// <summary>The members, oldest first (a snapshot).</summary>
    public IEnumerator<Greenlet> GetEnumerator() => Snapshot().GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Describes the group for logs.</summary>
    public override string ToString() => $"<{GetType().Name} count={Count}>";
}
