namespace GreenRuntime.Tests.Sync;

/// <summary>Signalling primitives from foreign threads (gevent's TestAsyncResultCrossThread, TestEventCrossThread).</summary>
public class CrossThreadTests : HubTest
{
    [Test]
    public void ManyThreadsPutIntoOneQueueAndAGreenletGetsEveryItem()
    {
        var q = new GreenQueue<int>();
        const int threads = 4, each = 2000;
        var consumer = Green.Spawn(() =>
        {
            var got = new List<int>();
            for (int i = 0; i < threads * each; i++) got.Add(q.Get(TimeSpan.FromSeconds(20)));
            return got;
        });
        var producers = Enumerable.Range(0, threads).Select(t => Task.Run(() =>
        {
            for (int i = 0; i < each; i++) q.Put(t * each + i);
        })).ToArray();
        var all = consumer.Get(TimeSpan.FromSeconds(30));
        Green.Wait(Task.WhenAll(producers));
        Assert.That(all.Order(), Is.EqualTo(Enumerable.Range(0, threads * each)));
        for (int t = 0; t < threads; t++)
        {
            var mine = all.Where(x => x / each == t).ToList();
            Assert.That(mine, Is.Ordered, "one thread's puts arrive in its order");
        }
    }

    [Test]
    public void ForeignReleasesAreNeverLost()
    {
        var s = new GreenSemaphore(0);
        const int n = 2000;
        int acquired = 0;
        var gs = Enumerable.Range(0, 4).Select(i => i % 2 == 0
            ? Green.Spawn(() => { while (acquired < n && s.Acquire(TimeSpan.FromMilliseconds(200))) acquired++; })
            : Green.SpawnAsync(async () => { while (acquired < n && await s.AcquireAsync(TimeSpan.FromMilliseconds(200))) acquired++; })).ToList();
        var releasers = Enumerable.Range(0, 2).Select(_ => Task.Run(() => { for (int i = 0; i < n / 2; i++) s.Release(); })).ToArray();
        Green.Wait(Task.WhenAll(releasers));
        Green.JoinAll(gs, TimeSpan.FromSeconds(30));
        Assert.That(acquired + s.Count, Is.EqualTo(n));
    }

    [Test]
    public void AGreenletOfAnotherHubWaitsCooperativelyForAResultOfThisHub()
    {
        var r = new AsyncResult<string>();
        var otherHubResult = new TaskCompletionSource<(string, int)>();
        var thread = new Thread(() =>
        {
            using var other = new Hub();
            int ticks = 0;
            var ticker = Green.Spawn(() => { while (true) { ticks++; Green.Sleep(1); } });
            try
            {
                var value = r.Get(TimeSpan.FromSeconds(10));   // parks this hub's main greenlet, the ticker keeps running
                ticker.Kill();
                otherHubResult.SetResult((value, ticks));
            }
            catch (Exception e)
            {
                otherHubResult.SetException(e);
            }
        });
        thread.Start();
        Green.Sleep(30);
        r.Set("hello");
        var (got, ticksMeanwhile) = Green.Wait(otherHubResult.Task, TimeSpan.FromSeconds(10));
        thread.Join();
        Assert.That(got, Is.EqualTo("hello"));
        Assert.That(ticksMeanwhile, Is.GreaterThan(1), "the other hub kept running its greenlets while waiting");
    }

    [Test]
    public void JoinableQueueTaskDoneFromWorkerThreads()
    {
        var q = new JoinableQueue<int>();
        for (int i = 0; i < 100; i++) q.Put(i);
        var items = new List<int>();
        while (q.TryGet(out var x)) items.Add(x);
        var workers = Task.Run(() => Parallel.ForEach(items, _ => q.TaskDone()));
        Assert.That(q.Join(TimeSpan.FromSeconds(10)), Is.True);
        Green.Wait(workers);
        Assert.That(q.UnfinishedTasks, Is.Zero);
    }

    [Test]
    public void SignallingAPrimitiveNotYetBoundToAHubFromAForeignThreadIsAppliedWhenAHubUsesIt()
    {
        Event? e = null;
        Green.Wait(Task.Run(() => { e = new Event(); e.Set(); }));
        Assert.That(e!.Wait(TimeSpan.FromSeconds(5)), Is.True, "the set made before any hub used it is not lost");
    }

    [Test]
    public void APoolThreadWaitsOnAPrimitiveByBlockingItsThread()
    {
        Assert.That(Green.Wait(Task.Run(() => new Event().Wait(TimeSpan.FromMilliseconds(1)))), Is.False, "times out");
        var ev = new Event();
        var q = new GreenQueue<int>();
        var waiter = Task.Run(() => ev.Wait(TimeSpan.FromSeconds(10)) ? q.Get(TimeSpan.FromSeconds(10)) : -1);
        Green.Sleep(20);
        ev.Set();
        q.Put(5);
        Assert.That(Green.Wait(waiter, TimeSpan.FromSeconds(10)), Is.EqualTo(5));
    }

    [Test]
    public void AHubLeftBehindByAThreadThatEndedDoesNotHideALoopExit()
    {
        // The thread gets a hub implicitly and never disposes it; once the thread ended, that hub cannot signal anything.
        var t = new Thread(() => new Event().Wait(TimeSpan.FromMilliseconds(1)));
        t.Start();
        t.Join();
        Assert.Throws<LoopExitException>(() => new Event().Wait());
        // While another hub's thread runs, a wait on a primitive is one that hub's greenlets may end.
        var ev = new Event();
        var release = new ManualResetEventSlim();
        var running = new ManualResetEventSlim();
        var other = new Thread(() =>
        {
            using var hub = new Hub();
            running.Set();
            release.Wait();
            ev.Set();
        });
        other.Start();
        Assert.That(running.Wait(TimeSpan.FromSeconds(30)), Is.True, "the other hub exists before the wait (a busy machine may start a thread late)");
        Green.Spawn(() => { Green.Sleep(30); release.Set(); });
        Assert.That(ev.Wait(), Is.True);
        other.Join();
    }
}
