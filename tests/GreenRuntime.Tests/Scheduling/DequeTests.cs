using GreenRuntime.Scheduling;

namespace GreenRuntime.Tests.Scheduling;

/// <summary>The hub's ring buffer on its own: taking an item out of the middle, as a park undone after its wake takes its
/// resume out of the ready queue.</summary>
public class DequeTests
{
    [Test]
    public void RemoveAtKeepsTheOrderOfTheOthersWhereverTheRingWraps()
    {
        for (int shift = 0; shift < 8; shift++)
        {
            for (int removed = 0; removed < 6; removed++)
            {
                var deque = new Deque<int>(8);
                for (int i = 0; i < shift; i++) deque.PushBack(-1);
                for (int i = 0; i < shift; i++) deque.PopFront(); // the ring's head moves, so the items wrap around its end
                for (int i = 0; i < 6; i++) deque.PushBack(i);
                Assert.That(deque.FindIndex(static (item, wanted) => item == wanted, removed), Is.EqualTo(removed));
                deque.RemoveAt(removed);
                Assert.That(deque.Snapshot(), Is.EqualTo(Enumerable.Range(0, 6).Where(i => i != removed)), $"head moved by {shift}");
                deque.PushFront(-2);
                deque.PushBack(9);
                Assert.That(deque.Snapshot(), Is.EqualTo(new[] { -2 }.Concat(Enumerable.Range(0, 6).Where(i => i != removed)).Append(9)));
            }
        }
        Assert.That(new Deque<int>().FindIndex(static (item, _) => true, 0), Is.EqualTo(-1));
    }
}
