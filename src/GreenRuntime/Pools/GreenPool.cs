using System.Diagnostics;

namespace GreenRuntime;

/// <summary>
/// A <see cref="GreenGroup"/> of at most <see cref="Size"/> greenlets, like gevent's <c>Pool</c>: <see cref="GreenGroup.Spawn(Action, string?)"/>
/// waits while the pool is full, so the pool bounds concurrency.
/// </summary>
/// <remarks>
/// <para>The (n+1)-th spawn blocks until a member dies; blocked spawners get slots in FIFO order. A slot is taken
/// before the greenlet is created and returned when it dies (its death link), or when it is discarded.</para>
/// <para>Calling <c>Spawn</c>/<c>Map</c> on a full pool from one of its own members waits for a slot that only
/// another member can free; if every member does that, they wait forever (as in gevent).</para>
/// </remarks>
/// <example>
/// <code>
/// var pool = new GreenPool(10);
/// var lengths = pool.Map(url => Fetch(url).Length, urls);   // at most 10 fetches at a time, results in input order
/// </code>
/// </example>
[DebuggerDisplay("GreenPool Count={Count} Size={Size} Free={FreeCount}")]
public sealed class GreenPool : GreenGroup
{
    private readonly GreenSemaphore? _slots; // null: unbounded

    /// <summary>Creates a pool of <paramref name="size"/> slots; null makes it unbounded (gevent's <c>Pool(None)</c>), like a <see cref="GreenGroup"/>.</summary>
    /// <remarks>As in gevent, a pool of 0 slots can never run a member: a spawn in it waits forever. It is only useful with
    /// <see cref="WaitAvailable"/> and a timeout, or <see cref="TryAdd"/>.</remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is negative.</exception>
    public GreenPool(int? size)
    {
        if (size is < 0) throw new ArgumentOutOfRangeException(nameof(size), size, "A pool size must not be negative; use null for an unbounded pool.");
        Size = size;
        if (size is { } n) _slots = new GreenSemaphore(n);
    }

    /// <summary>The most members alive at once; null when unbounded.</summary>
    public int? Size { get; }

    /// <summary>Free slots now (a spawn would not wait while this is above zero and nobody waits before it); <see cref="int.MaxValue"/> when unbounded.</summary>
    public int FreeCount => _slots?.Count ?? int.MaxValue;

    /// <summary>Whether no slot is free (never, when unbounded).</summary>
    public bool IsFull => _slots?.Locked ?? false;

    private protected override void ReserveSlot() => _slots?.Acquire();

    private protected override void ReturnSlot() => _slots?.Release();

    /// <summary>Adds a greenlet, waiting for a free slot.</summary>
    public override void Add(Greenlet greenlet) => Add(greenlet, blocking: true);

    /// <summary>Adds a greenlet, waiting up to <paramref name="timeout"/> for a free slot unless <paramref name="blocking"/> is false.</summary>
    /// <exception cref="PoolFullException">No slot was free (non-blocking) or none came within <paramref name="timeout"/>.</exception>
    public void Add(Greenlet greenlet, bool blocking, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(greenlet);
        if (Contains(greenlet)) return;
        bool got = _slots == null || (blocking ? _slots.Acquire(timeout) : _slots.TryAcquire());
        if (!got) throw new PoolFullException($"{this} has no free slot{(blocking ? $" after {timeout}" : "")}; wait with Add(greenlet) or WaitAvailable, or use a bigger pool.");
        if (!Track(greenlet)) ReturnSlot(); // added meanwhile by a greenlet of another hub
    }

    /// <summary>Adds a greenlet if a slot is free now.</summary>
    /// <returns>false (and the greenlet is not added) if the pool is full.</returns>
    public bool TryAdd(Greenlet greenlet)
    {
        ArgumentNullException.ThrowIfNull(greenlet);
        if (Contains(greenlet)) return true;
        if (_slots != null && !_slots.TryAcquire()) return false;
        if (!Track(greenlet)) ReturnSlot(); // added meanwhile by a greenlet of another hub
        return true;
    }

    /// <summary>Waits until a slot is free (without taking it).</summary>
    /// <returns>The free slots when it returns (0 if the timeout elapsed first).</returns>
    public int WaitAvailable(TimeSpan? timeout = null)
    {
        if (_slots == null) return int.MaxValue;
        if (_slots.Count > 0) return _slots.Count;
        if (_slots.Acquire(timeout)) _slots.Release();
        return _slots.Count;
    }

    /// <summary>Describes the pool for logs.</summary>
    public override string ToString() => $"<GreenPool {Count}/{(Size is { } n ? n.ToString() : "unbounded")}>";
}
