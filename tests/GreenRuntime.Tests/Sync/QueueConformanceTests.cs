namespace GreenRuntime.Tests.Sync;

/// <summary>
/// What every queue type must do, whatever order it hands items out in (gevent's test__queue.py): the same tests
/// run over <see cref="GreenQueue{T}"/>, <see cref="LifoQueue{T}"/>, <see cref="GreenPriorityQueue{T}"/> and
/// <see cref="JoinableQueue{T}"/> through the fixtures at the end of this file. Tests of one type's order or of
/// its own members are in <see cref="QueueTests"/>.
/// </summary>
public abstract class QueueConformanceTests : HubTest
{
    /// <summary>A new queue of the type under test.</summary>
    protected abstract GreenQueue<int> Create(int? maxSize = null);

    /// <summary>The order in which the type gives back items that were all put, in <paramref name="puts"/>' order, before the first get.</summary>
    protected abstract IEnumerable<int> DrainOrder(params int[] puts);

    [Test]
    public void GivesItemsBackInItsOwnOrderAndCountsThem()
    {
        var q = Create();
        Assert.That(q.IsEmpty && !q.IsFull, Is.True);
        int[] puts = [3, 1, 2];
        foreach (var x in puts) q.Put(x);
        Assert.That(q.Count, Is.EqualTo(3));
        var expected = DrainOrder(puts).ToList();
        Assert.That(q.Peek(), Is.EqualTo(expected[0]));
        Assert.That(new[] { q.Get(), q.Get(), q.Get() }, Is.EqualTo(expected));
        Assert.That(q.IsEmpty, Is.True);
    }

    [Test]
    public void NonBlockingFormsReturnFalseOrThrowWithZeroTimeout()
    {
        var q = Create(1);
        Assert.That(q.TryGet(out _), Is.False);
        Assert.Throws<QueueEmptyException>(() => q.Get(TimeSpan.Zero));
        Assert.That(q.TryPut(1), Is.True);
        Assert.That(q.IsFull, Is.True);
        Assert.That(q.TryPut(2), Is.False);
        Assert.Throws<QueueFullException>(() => q.Put(2, TimeSpan.Zero));
        Assert.That(q.TryPeek(out var head) && head == 1, Is.True);
        Assert.That(q.TryGet(out var x) && x == 1, Is.True);
    }

    [Test]
    public void TryPutFromAHubCallbackHandsTheItemToAWaitingGetter()
    {
        var q = Create();
        var p = Green.Spawn(() => q.Get());
        Green.Sleep(1);
        bool? put = null;
        Hub.Post(() => put = q.TryPut(10));
        Assert.That(p.Get(), Is.EqualTo(10));
        Assert.That(put, Is.True);
        Assert.That(q.IsEmpty, Is.True);
    }

    [Test]
    public void BoundedPutBlocksWhileFullAndProgressesAsItemsAreTaken()
    {
        var q = Create(2);
        var done = new List<int>();
        var p = Green.Spawn(() =>
        {
            for (int i = 1; i <= 3; i++) { q.Put(i); done.Add(i); }
        });
        Green.Sleep(0);
        Assert.That(done, Is.EqualTo(new[] { 1, 2 }), "the third put waits for room");
        var got = new List<int> { q.Get() };
        Green.Sleep(0);
        Assert.That(done, Is.EqualTo(new[] { 1, 2, 3 }));
        got.Add(q.Get());
        got.Add(q.Get());
        Assert.That(got.Order(), Is.EqualTo(new[] { 1, 2, 3 }));
        p.Join(TimeSpan.Zero);
        Assert.That(p.Successful, Is.True);
    }

    [Test]
    public void WaitingGettersAreServedInTheOrderTheyCame()
    {
        var q = Create();
        var results = Enumerable.Range(0, 4).Select(_ => new AsyncResult<int>()).ToList();
        for (int i = 0; i < 4; i++)
        {
            var r = results[i];
            if (i % 2 == 0) Green.Spawn(() => r.Set(q.Get()));
            else Green.SpawnAsync(async () => r.Set(await q.GetAsync()));
        }
        Green.Sleep(1);
        foreach (var x in new[] { 1, 2, 3, 4 }) q.Put(x);   // each put hands its item to the first waiter
        Assert.That(results.Select(r => r.Get()), Is.EqualTo(new[] { 1, 2, 3, 4 }));
    }

    [Test]
    public void AGetterWhoseTimeoutExpiredNeverSwallowsAnItem()
    {
        var q = Create();
        var dying = Green.Spawn(() =>
        {
            try { return q.Get(TimeSpan.FromTicks(1)); }
            catch (QueueEmptyException) { return -1; }
        });
        var waiting = Green.Spawn(() => q.Get());
        WaitUntil(() => dying.Dead);
        q.Put(7);
        Assert.That(dying.Get(), Is.EqualTo(-1));
        Assert.That(waiting.Get(), Is.EqualTo(7));
    }

    [Test]
    public void GetInMainOnAnEmptyQueueWithNoProducerRaisesLoopExit()
    {
        var q = Create();
        Assert.Throws<LoopExitException>(() => q.Get());
        Assert.That(q.TryPut(1), Is.True, "the failed getter left no waiter behind");
        Assert.That(q.Get(), Is.EqualTo(1));
    }

    [Test]
    public void PutInMainOnAFullQueueWithNoConsumerRaisesLoopExit()
    {
        var q = Create(1);
        q.Put(1);
        Assert.Throws<LoopExitException>(() => q.Put(2));
        Assert.That(q.Count, Is.EqualTo(1));
    }

    [Test]
    public void AKilledGetterDoesNotSwallowTheItemItWasHanded()
    {
        var q = Create();
        var victim = Green.Spawn(() => q.Get());
        var next = Green.Spawn(() => q.Get());
        Green.Sleep(0);
        q.Put(1);               // handed to victim, which has not resumed yet
        victim.Kill(block: false);
        Assert.That(next.Get(), Is.EqualTo(1), "the item goes to the next getter");
        Assert.That(victim.Dead, Is.True);
    }

    [Test]
    public void AKilledStacklessGetterDoesNotSwallowALaterItem()
    {
        var q = Create();
        bool unwound = false;
        var victim = Green.SpawnAsync(async () =>
        {
            try { return await q.GetAsync(); }
            finally { unwound = true; }
        });
        Green.Sleep(0);
        victim.Kill();
        q.Put(3);
        Green.Sleep(1);
        Assert.That(unwound, Is.True, "the awaited task faulted, so the finally block ran");
        Assert.That(q.TryGet(out var item) && item == 3, Is.True);
    }

    [Test]
    public void AKilledPutterWaitingOnAFullQueueAddsNothing()
    {
        var q = Create(1);
        q.Put(1);
        var putter = Green.Spawn(() => q.Put(2));
        Green.Sleep(0);
        putter.Kill();
        Assert.That(q.Get(), Is.EqualTo(1));
        Assert.That(q.TryGet(out _), Is.False);
    }

    [Test]
    public void PeekWaitsForAnItemWithoutTakingIt()
    {
        var q = Create();
        var g = Green.Spawn(() => q.Peek());
        Green.Sleep(0);
        q.Put(1);
        Assert.That(g.Get(), Is.EqualTo(1));
        Assert.That(q.Count, Is.EqualTo(1));
        Assert.Throws<QueueEmptyException>(() => Create().Peek(TimeSpan.FromMilliseconds(5)));
    }

    [Test]
    public void CloseEndsEnumerationAndRefusesPuts()
    {
        var q = Create();
        q.Put(1); q.Put(2);
        var expected = DrainOrder(1, 2).ToList();
        q.Close();
        var seen = new List<int>();
        foreach (var x in q) seen.Add(x);
        Assert.That(seen, Is.EqualTo(expected), "items put before Close are still given out");
        Assert.Throws<InvalidOperationException>(() => q.Put(3));
        Assert.That(Assert.Throws<QueueEmptyException>(() => q.Get())!.IsClosed, Is.True);
    }

    [Test]
    public void CloseFailsWaitingPutters()
    {
        var q = Create(1);
        q.Put(1);
        var putter = Green.Spawn(() => q.Put(2));
        Green.Sleep(0);
        q.Close();
        putter.Join();
        Assert.That(putter.Exception, Is.InstanceOf<InvalidOperationException>());
        Assert.That(q.Get(), Is.EqualTo(1));
    }

    [Test]
    public void PutsFromAForeignThreadReachAGreenlet()
    {
        var q = Create();
        var consumer = Green.Spawn(() => Enumerable.Range(0, 100).Select(_ => q.Get(TimeSpan.FromSeconds(10))).ToList());
        var t = Task.Run(() => { for (int i = 0; i < 100; i++) q.Put(i); });
        Assert.That(consumer.Get().Order(), Is.EqualTo(Enumerable.Range(0, 100)));
        t.Wait();
    }

    [Test]
    public void ZeroOrNegativeMaxSizeMeansUnboundedAsInGevent()
    {
        foreach (var size in new[] { 0, -1 })
        {
            var q = Create(size);
            Assert.That(q.MaxSize, Is.Null);
            for (int i = 0; i < 1000; i++) Assert.That(q.TryPut(i), Is.True);
            Assert.That(q.Count, Is.EqualTo(1000));
        }
    }

    /// <summary>Lets other greenlets run until <paramref name="condition"/> holds (generous bound for a loaded machine).</summary>
    private static void WaitUntil(Func<bool> condition)
    {
        for (int i = 0; i < 5000 && !condition(); i++) Green.Sleep(1);
        Assert.That(condition(), Is.True, "the condition did not become true within 5 s");
    }
}

[TestFixture]
public class GreenQueueConformanceTests : QueueConformanceTests
{
    protected override GreenQueue<int> Create(int? maxSize = null) => new(maxSize);
    protected override IEnumerable<int> DrainOrder(params int[] puts) => puts;
}

[TestFixture]
public class LifoQueueConformanceTests : QueueConformanceTests
{
    protected override GreenQueue<int> Create(int? maxSize = null) => new LifoQueue<int>(maxSize);
    protected override IEnumerable<int> DrainOrder(params int[] puts) => puts.Reverse();
}

[TestFixture]
public class GreenPriorityQueueConformanceTests : QueueConformanceTests
{
    protected override GreenQueue<int> Create(int? maxSize = null) => new GreenPriorityQueue<int>(maxSize);
    protected override IEnumerable<int> DrainOrder(params int[] puts) => puts.Order();
}

[TestFixture]
public class JoinableQueueConformanceTests : QueueConformanceTests
{
    protected override GreenQueue<int> Create(int? maxSize = null) => new JoinableQueue<int>(maxSize);
    protected override IEnumerable<int> DrainOrder(params int[] puts) => puts;
}
