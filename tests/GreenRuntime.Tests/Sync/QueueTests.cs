namespace GreenRuntime.Tests.Sync;

/// <summary>
/// Behaviours of gevent's test__queue.py that belong to one queue type (its order, its own members) or that the
/// conformance tests (QueueConformanceTests, run over all four types) do not cover.
/// </summary>
public class QueueTests : HubTest
{
    [Test]
    public void FifoOrderAndCounts()
    {
        var q = new GreenQueue<int>();
        Assert.That(q.IsEmpty && !q.IsFull, Is.True);
        q.Put(1); q.Put(2); q.Put(3);
        Assert.That(q.Count, Is.EqualTo(3));
        Assert.That(q.Peek(), Is.EqualTo(1));
        Assert.That(new[] { q.Get(), q.Get(), q.Get() }, Is.EqualTo(new[] { 1, 2, 3 }));
        Assert.That(q.IsEmpty, Is.True);
    }

    [Test]
    public void AnItemThePriorityQueueCannotCompareIsRefusedAndTheQueueStaysUsable()
    {
        var q = new GreenPriorityQueue<object>();
        q.Put(new object());
        Assert.Throws<ArgumentException>(() => q.Put(new object()), "objects that are not comparable");
        // From another thread too: the queue's lock was given back (a timeout here means that thread spins on it).
        var other = Task.Run(() => q.TryGet(out _));
        Assert.That(Green.Wait(other, TimeSpan.FromSeconds(10)), Is.True, "another thread took the first item");
        Assert.That(q.Count, Is.Zero);
    }

    [Test]
    public void TwoBogusWaitersLeaveTheItemInTheQueue()
    {
        var q = new GreenQueue<string>();
        string Receive()
        {
            using var t = GreenTimeout.Start(TimeSpan.Zero, new InvalidProgramException());
            try { return q.Get(); }
            catch (InvalidProgramException) { return "timed out"; }
        }
        var e1 = Green.Spawn(Receive);
        var e2 = Green.Spawn(Receive);
        WaitUntil(() => e1.Dead && e2.Dead);
        q.Put("sent");
        Assert.That(e1.Get(), Is.EqualTo("timed out"));
        Assert.That(e2.Get(), Is.EqualTo("timed out"));
        Assert.That(q.Get(), Is.EqualTo("sent"));
    }

    [Test]
    public void AsyncGetterWhoseTimeoutExpiredNeverSwallowsAnItem()
    {
        var q = new GreenQueue<int>();
        var dying = Green.SpawnAsync(async () =>
        {
            try { return await q.GetAsync(TimeSpan.FromMilliseconds(1)); }
            catch (QueueEmptyException) { return -1; }
        });
        WaitUntil(() => dying.State == GreenletState.Awaiting || dying.Dead);
        Green.Sleep(30);   // the getter's 1 ms timer is due before this one: deadline order
        q.Put(5);
        Assert.That(dying.Get(), Is.EqualTo(-1));
        Assert.That(q.Get(), Is.EqualTo(5));
    }

    [Test]
    public void StacklessProducerAndStackfulConsumerPingPongThroughABoundedQueue()
    {
        var q = new GreenQueue<int>(1);
        var producer = Green.SpawnAsync(async () =>
        {
            for (int i = 0; i < 1000; i++) await q.PutAsync(i);
            q.Close();
        });
        var seen = new List<int>();
        var consumer = Green.Spawn(() => { foreach (var x in q) seen.Add(x); });
        Green.JoinAll([producer, consumer], TimeSpan.FromSeconds(10), raiseError: true);
        Assert.That(seen, Is.EqualTo(Enumerable.Range(0, 1000)));
    }

    [Test]
    public void CloseEndsEnumerationAndRefusesPuts()
    {
        var q = new GreenQueue<int>();
        var seen = new List<int>();
        var consumer = Green.Spawn(() => { foreach (var x in q) seen.Add(x); });
        q.Put(1); q.Put(2);
        Green.Sleep(0);
        q.Close();
        consumer.Join();
        Assert.That(seen, Is.EqualTo(new[] { 1, 2 }));
        Assert.Throws<InvalidOperationException>(() => q.Put(3));
        Assert.That(Assert.Throws<QueueEmptyException>(() => q.Get())!.IsClosed, Is.True);
    }

    [Test]
    public void ForeignThreadBlocksOnABoundedQueueUntilAGreenletTakes()
    {
        var q = new GreenQueue<int>(1);
        var t = Task.Run(() => { for (int i = 0; i < 20; i++) q.Put(i, TimeSpan.FromSeconds(10)); });
        var got = new List<int>();
        while (got.Count < 20) got.Add(Green.Wait(q.GetAsync(TimeSpan.FromSeconds(10))));
        Green.Wait(t);
        Assert.That(got, Is.EqualTo(Enumerable.Range(0, 20)));
    }

    [Test]
    public void ForeignThreadGetAndTryGet()
    {
        var q = new GreenQueue<int>();
        var t = Task.Run(() =>
        {
            var first = q.Get(TimeSpan.FromSeconds(10));
            bool more = q.TryGet(out var second);
            return (first, more, second);
        });
        q.Put(1);
        q.Put(2);
        var r = Green.Wait(t, TimeSpan.FromSeconds(10));
        Assert.That(r.first, Is.EqualTo(1));
        Assert.That(r.more && r.second == 2, Is.True);
    }

    [Test]
    public void PriorityQueueGivesTheLowestFirst()
    {
        var q = new GreenPriorityQueue<int>();
        foreach (var x in new[] { 5, 1, 4, 2, 3 }) q.Put(x);
        Assert.That(Enumerable.Range(0, 5).Select(_ => q.Get()), Is.EqualTo(new[] { 1, 2, 3, 4, 5 }));
        var desc = new GreenPriorityQueue<int>(3, Comparer<int>.Create((a, b) => b.CompareTo(a)));
        desc.Put(1); desc.Put(3); desc.Put(2);
        Assert.That(desc.TryPut(9), Is.False);
        Assert.That(desc.Get(), Is.EqualTo(3));
    }

    [Test]
    public void LifoQueueGivesTheNewestFirst()
    {
        var q = new LifoQueue<int>(3);
        q.Put(1); q.Put(2); q.Put(3);
        Assert.That(q.IsFull, Is.True);
        Assert.That(q.Peek(), Is.EqualTo(3));
        var g = Green.SpawnAsync(async () => await q.GetAsync());
        Assert.That(g.Get(), Is.EqualTo(3));
        Assert.That(q.Get(), Is.EqualTo(2));
    }

    [Test]
    public void JoinableQueueJoinWaitsForEveryTaskDone()
    {
        var q = new JoinableQueue<int>();
        var processed = new List<int>();
        Green.Spawn(() => { while (true) { var x = q.Get(); Green.Sleep(1); processed.Add(x); q.TaskDone(); } });
        Green.SpawnAsync(async () => { while (true) { var x = await q.GetAsync(); processed.Add(x); q.TaskDone(); } });
        for (int i = 0; i < 10; i++) q.Put(i);
        Assert.That(q.UnfinishedTasks, Is.EqualTo(10));
        Assert.That(q.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(processed.Order(), Is.EqualTo(Enumerable.Range(0, 10)));
        Assert.That(q.UnfinishedTasks, Is.Zero);
        Assert.Throws<InvalidOperationException>(() => q.TaskDone());
    }

    [Test]
    public void JoinableQueueJoinTimesOut()
    {
        var q = new JoinableQueue<int>();
        Assert.That(q.Join(TimeSpan.Zero), Is.True);
        q.Put(1);
        Green.Spawn(() => { });
        Assert.That(q.Join(TimeSpan.FromMilliseconds(5)), Is.False);
    }

    /// <summary>Lets other greenlets run until <paramref name="condition"/> holds (generous bound for a loaded machine).</summary>
    private static void WaitUntil(Func<bool> condition)
    {
        for (int i = 0; i < 5000 && !condition(); i++) Green.Sleep(1);
        Assert.That(condition(), Is.True, "the condition did not become true within 5 s");
    }
}
