using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Scheduling;

/// <summary>The hub's timer heap on its own: deadline order, creation order on ties, lazy cancellation, sweeping, shrinking.</summary>
public class TimerHeapTests
{
    private static readonly Action<object?> Nothing = static _ => { };

    /// <summary>Adds <paramref name="count"/> timers with seeded random deadlines below <paramref name="maxDeadline"/>.</summary>
    private static List<(long Deadline, int Order, HubTimer Timer)> AddRandom(TimerHeap heap, int count, int maxDeadline, int seed)
    {
        var random = new Random(seed);
        var added = new List<(long Deadline, int Order, HubTimer Timer)>(count);
        for (int i = 0; i < count; i++)
        {
            long deadline = random.Next(0, maxDeadline);
            added.Add((deadline, i, heap.Add(deadline, Nothing, i)));
        }
        return added;
    }

    [Test]
    public void PopsInDeadlineOrderThenCreationOrder()
    {
        var heap = new TimerHeap();
        var added = AddRandom(heap, 5000, maxDeadline: 300, seed: 7); // many ties
        var expected = added.OrderBy(a => a.Deadline).ThenBy(a => a.Order).Select(a => a.Timer).ToList();

        var popped = new List<HubTimer>();
        while (heap.PopDue(long.MaxValue) is { } t) popped.Add(t);

        Assert.That(popped, Is.EqualTo(expected));
        Assert.That(heap.Count, Is.Zero);
    }

    [Test]
    public void OnlyDueTimersPop()
    {
        var heap = new TimerHeap();
        var late = heap.Add(200, Nothing, null);
        var early = heap.Add(100, Nothing, null);
        Assert.That(heap.PopDue(99), Is.Null);
        Assert.That(heap.PopDue(150), Is.SameAs(early));
        Assert.That(heap.PopDue(150), Is.Null);
        Assert.That(heap.TryPeekDeadline(out var next) && next == 200, Is.True);
        Assert.That(heap.PopDue(200), Is.SameAs(late));
    }

    [Test]
    public void CancelledTimersAreSkippedAndDroppedWhenTheyReachTheTop()
    {
        var heap = new TimerHeap();
        var timers = Enumerable.Range(0, 100).Select(i => heap.Add(i, Nothing, i)).ToList();
        foreach (var t in timers.Where((_, i) => i % 3 != 0)) t.Cancel();

        Assert.That(heap.Live().Count(), Is.EqualTo(34));
        Assert.That(heap.TryPeekDeadline(out var first) && first == 0, Is.True);
        var popped = new List<HubTimer>();
        while (heap.PopDue(long.MaxValue) is { } t) popped.Add(t);

        Assert.That(popped, Is.EqualTo(timers.Where((_, i) => i % 3 == 0)));
        Assert.That(heap.Count, Is.Zero, "cancelled entries are gone once the live ones before them popped");
        Assert.That(heap.TryPeekDeadline(out _), Is.False);
    }

    [Test]
    public void WhenMostOfALargeHeapIsCancelledTheCancelledEntriesAreSweptAndTheRestKeepsItsOrder()
    {
        var heap = new TimerHeap();
        var added = AddRandom(heap, 10_000, maxDeadline: 2000, seed: 11);
        foreach (var (_, order, timer) in added)
        {
            if (order % 4 == 0) continue;
            timer.Cancel();
            heap.NoteCancelled(); // what the hub does for a timer cancelled on its thread
        }

        Assert.That(heap.Count, Is.LessThan(5_000), "swept once more than half was cancelled, not left for the pops");
        var popped = new List<HubTimer>();
        while (heap.PopDue(long.MaxValue) is { } t) popped.Add(t);
        Assert.That(popped, Is.EqualTo(added.Where(a => a.Order % 4 == 0).OrderBy(a => a.Deadline).ThenBy(a => a.Order).Select(a => a.Timer)));
    }

    [Test]
    public void AHubThatCancelsLongTimersOneAfterAnotherKeepsFewInItsHeap()
    {
        // A keep-alive server's pattern: a 2-minute timer armed and cancelled for every request.
        using var hub = new Hub();
        int most = 0;
        for (int i = 0; i < 100_000; i++)
        {
            hub.AddTimer(TimeSpan.FromMinutes(2), Nothing, null).Cancel();
            most = Math.Max(most, hub.TimerCount);
        }
        Assert.That(most, Is.LessThanOrEqualTo(2 * TimerHeap.SweepMinimum));
    }

    [Test]
    public void GrowsForABurstAndKeepsOrderWhileShrinkingBack()
    {
        var heap = new TimerHeap();
        for (int i = 0; i < 100_000; i++) heap.Add(100_000 - i, Nothing, null);
        long previous = long.MinValue;
        int count = 0;
        HubTimer? inserted = null;
        while (heap.PopDue(long.MaxValue) is { } t)
        {
            Assert.That(t.Deadline, Is.GreaterThanOrEqualTo(previous));
            if (inserted != null)
            {
                Assert.That(t, Is.SameAs(inserted), "an insert into the shrunk array sorts before the later deadlines");
                inserted = null;
            }
            previous = t.Deadline;
            count++;
            if (count == 99_000) inserted = heap.Add(t.Deadline, Nothing, null);
        }
        Assert.That(count, Is.EqualTo(100_001));
    }

    [Test]
    public void ACancelledTimerStillInTheHeapNoLongerKeepsItsStateAlive()
    {
        var heap = new TimerHeap();
        var state = AddCancelled(heap);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Assert.That(state.IsAlive, Is.False, "the state of a timer cancelled long before its deadline was collected");
        Assert.That(heap.Count, Is.EqualTo(1), "the entry itself is discarded lazily, when it reaches the top");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static WeakReference AddCancelled(TimerHeap heap)
    {
        var state = new byte[1024];
        heap.Add(long.MaxValue / 2, Nothing, state).Cancel();
        return new WeakReference(state);
    }
}
