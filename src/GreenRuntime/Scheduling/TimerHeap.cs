// The hub's timer heap: every Sleep, timeout and SpawnLater of a hub is one entry here.
//
// Glossary
//   deadline  a monotonic timestamp of the hub's TimeProvider at (or after) which a timer fires.
//   sequence  the creation number of a timer; it orders timers with equal deadlines (first created fires first).
//   entry     one slot of the heap array: the deadline, copied inline, and the timer it belongs to.
//
// Design chosen: a binary min-heap over an array of 16-byte entries (deadline + timer reference). The deadline
// is kept inline so that sifting compares longs in one contiguous array and touches a timer object only on a
// tie (then its sequence decides). Cancelling a timer only clears its callback; the entry stays until it
// reaches the top, where it is dropped (O(1) cancel; a cancelled timer costs one pop later). The heap counts
// its cancelled entries, and once they are more than half of a heap of at least SweepMinimum entries, it drops
// them all and rebuilds itself in O(n): a server that cancels a 2-minute keep-alive timer on every request
// (20 k/s) would otherwise hold 2.4 million dead timers, 64 bytes each.
//
// Rejected designs
//   * PriorityQueue<HubTimer, (long, long)>: 32 bytes per entry (element + tuple priority + padding), twice
//     this array; with 100k sleepers the array and its growth copies were ~64 bytes per sleeper, and its
//     growth copies land on the large object heap, which triggers gen-2 collections.
//   * Removing a cancelled timer from the heap: needs an index kept in every timer and updated on every
//     swap; timeouts are almost always cancelled long before their deadline, so lazy removal is cheaper.
//   * A hashed timer wheel: O(1) insert, but its precision is its tick, and the hub sleeps until the exact
//     next deadline (gevent's libev and Go's runtime also use heaps).
//
// Invariant (heap order): for every i > 0, entry (i-1)/2 is not later than entry i, comparing (deadline,
// sequence). Checked in DEBUG builds around the slot each change writes last (CheckAround: O(1), so tests
// with many timers stay fast), and over the whole heap after a sweep (which is O(n) itself).

using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace GreenRuntime.Scheduling;

/// <summary>The hub's timer heap, ordered by (deadline, sequence). Hub-only.</summary>
internal sealed class TimerHeap
{
    private struct Entry
    {
        public long Deadline;
        public HubTimer Timer;
    }

    /// <summary>The smallest heap worth sweeping: below it, cancelled entries are only dropped at the top.</summary>
    public const int SweepMinimum = 1024;

    private Entry[] _entries = new Entry[16];
    private int _count;
    private int _cancelled; // entries whose timer was cancelled, still in the heap (an estimate: see NoteCancelled)
    private long _sequence;

    public int Count => _count;

    /// <summary>
    /// A timer of this heap was cancelled (by <see cref="HubTimer.Cancel"/> on the hub): when cancelled entries are more
    /// than half of a large heap, they are dropped now. The count only steers the sweep; the sweep itself reads each
    /// timer, so a miscount never drops a live timer.
    /// </summary>
    public void NoteCancelled()
    {
        if (++_cancelled > _count / 2 && _count >= SweepMinimum) Sweep();
    }

    /// <summary>Drops every cancelled entry and restores heap order bottom-up (Floyd): O(n).</summary>
    private void Sweep()
    {
        int live = 0;
        for (int i = 0; i < _count; i++)
            if (!_entries[i].Timer.IsCancelled) _entries[live++] = _entries[i];
        Array.Clear(_entries, live, _count - live);
        _count = live;
        _cancelled = 0;
        for (int i = (live >> 1) - 1; i >= 0; i--) SiftDown(i, _entries[i]); // parents above are not in order yet
        CheckAll(); // O(n), like the sweep
        Shrink();
    }

    public HubTimer Add(long deadline, Action<object?> callback, object? state)
    {
        var timer = new HubTimer(deadline, _sequence++, callback, state);
        if (_count == _entries.Length) Array.Resize(ref _entries, _entries.Length * 2);
        int landed = SiftUp(_count++, new Entry { Deadline = deadline, Timer = timer });
        CheckAround(landed); // a separate statement: a [Conditional] call's arguments vanish with it in Release
        return timer;
    }

    /// <summary>The earliest live deadline, dropping cancelled timers on the way.</summary>
    public bool TryPeekDeadline(out long deadline)
    {
        while (_count > 0)
        {
            ref var top = ref _entries[0];
            if (!top.Timer.IsCancelled)
            {
                deadline = top.Deadline;
                return true;
            }
            RemoveTop();
            if (_cancelled > 0) _cancelled--;
        }
        deadline = 0;
        return false;
    }

    /// <summary>Removes and returns the next live timer due at <paramref name="now"/>, if any.</summary>
    public HubTimer? PopDue(long now)
    {
        if (!TryPeekDeadline(out var deadline) || deadline > now) return null;
        var timer = _entries[0].Timer;
        RemoveTop();
        return timer;
    }

    /// <summary>The timers not yet fired nor cancelled, in no particular order (for run-info).</summary>
    public IEnumerable<HubTimer> Live()
    {
        var live = new List<HubTimer>(_count);
        for (int i = 0; i < _count; i++)
            if (!_entries[i].Timer.IsCancelled) live.Add(_entries[i].Timer);
        return live;
    }

    private void RemoveTop()
    {
        int last = --_count;
        var moved = _entries[last];
        _entries[last] = default; // let the timer (and its state) be collected
        if (last > 0)
        {
            int landed = SiftDown(0, moved);
            CheckAround(landed);
        }
        Shrink();
    }

    /// <summary>Gives memory back after a burst (100k sleepers), but not on every small oscillation.</summary>
    private void Shrink()
    {
        while (_entries.Length > 1024 && _count < _entries.Length / 8) Array.Resize(ref _entries, _entries.Length / 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Earlier(in Entry a, in Entry b) =>
        a.Deadline < b.Deadline || (a.Deadline == b.Deadline && a.Timer.Sequence < b.Timer.Sequence);

    /// <summary>Moves <paramref name="entry"/> from the free slot <paramref name="index"/> towards the root; returns where it landed.</summary>
    private int SiftUp(int index, Entry entry)
    {
        var entries = _entries;
        while (index > 0)
        {
            int parent = (index - 1) >> 1;
            if (!Earlier(entry, entries[parent])) break;
            entries[index] = entries[parent];
            index = parent;
        }
        entries[index] = entry;
        return index;
    }

    /// <summary>Moves <paramref name="entry"/> from the free slot <paramref name="index"/> towards the leaves; returns where it landed.</summary>
    private int SiftDown(int index, Entry entry)
    {
        var entries = _entries;
        int count = _count;
        while (true)
        {
            int child = 2 * index + 1;
            if (child >= count) break;
            if (child + 1 < count && Earlier(entries[child + 1], entries[child])) child++;
            if (!Earlier(entries[child], entry)) break;
            entries[index] = entries[child];
            index = child;
        }
        entries[index] = entry;
        return index;
    }

    [Conditional("DEBUG")]
    private void CheckAll()
    {
        for (int i = 0; i < _count; i++) CheckAround(i);
    }

    // Fails through SyncLock: a hub timer is cancelled under a primitive's lock when a Task waiter is served there.
    [Conditional("DEBUG")]
    private void CheckAround(int index)
    {
        if (index > 0 && Earlier(_entries[index], _entries[(index - 1) >> 1]))
            throw Sync.SyncLock.InvariantBroken($"Invariant broken: timer heap entry {index} (deadline {_entries[index].Deadline}) is earlier than its parent.");
        for (int child = 2 * index + 1; child <= 2 * index + 2 && child < _count; child++)
            if (Earlier(_entries[child], _entries[index]))
                throw Sync.SyncLock.InvariantBroken($"Invariant broken: timer heap entry {child} (deadline {_entries[child].Deadline}) is earlier than its parent {index}.");
    }
}
