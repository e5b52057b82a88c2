using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Scheduling;

/// <summary>The ring buffer under the ready queue: the reorderings the scheduler relies on, across the wrap-around.</summary>
public class DequeTests
{
    /// <summary>A deque of capacity 8 holding <paramref name="items"/>, its head moved by <paramref name="offset"/> so that
    /// the items wrap around the end of the array.</summary>
    private static Deque<int> Wrapped(int offset, params int[] items)
    {
        var deque = new Deque<int>(8);
        for (int i = 0; i < offset; i++) deque.PushBack(-1);
        for (int i = 0; i < offset; i++) deque.PopFront();
        foreach (var item in items) deque.PushBack(item);
        return deque;
    }

    [TestCase(0)]
    [TestCase(5)]
    [TestCase(7)]
    public void MoveToFrontKeepsTheOrderWithinTheMovedAndWithinTheRest(int offset)
    {
        var deque = Wrapped(offset, 1, 12, 3, 14, 15, 6, 17);
        deque.MoveToFront(i => i > 10);
        Assert.That(deque.Snapshot(), Is.EqualTo(new[] { 12, 14, 15, 17, 1, 3, 6 }));
        deque.MoveToFront(i => i > 100);
        Assert.That(deque.Snapshot(), Is.EqualTo(new[] { 12, 14, 15, 17, 1, 3, 6 }), "nothing matches: nothing moves");
        deque.PushBack(8);
        Assert.That(deque.Snapshot(), Is.EqualTo(new[] { 12, 14, 15, 17, 1, 3, 6, 8 }));
    }

    [TestCase(0)]
    [TestCase(6)]
    public void TryRemoveFirstTakesTheFirstMatchAndKeepsTheRestInOrder(int offset)
    {
        var deque = Wrapped(offset, 1, 2, 13, 4, 15);
        Assert.That(deque.TryRemoveFirst(i => i > 10, out var item), Is.True);
        Assert.That(item, Is.EqualTo(13));
        Assert.That(deque.Snapshot(), Is.EqualTo(new[] { 1, 2, 4, 15 }));
        Assert.That(deque.TryRemoveFirst(i => i > 100, out _), Is.False);
        Assert.That(deque.Count, Is.EqualTo(4));
        deque.PushFront(0);
        deque.PushBack(16);
        Assert.That(deque.Snapshot(), Is.EqualTo(new[] { 0, 1, 2, 4, 15, 16 }));
    }
}
