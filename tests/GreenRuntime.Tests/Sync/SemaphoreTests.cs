namespace GreenRuntime.Tests.Sync;

/// <summary>Behaviours of gevent's test__semaphore.py: GreenSemaphore, BoundedSemaphore, RLock.</summary>
public class SemaphoreTests : HubTest
{
    [Test]
    public void CountsPermitsAndLocksAtZero()
    {
        var s = new GreenSemaphore(2);
        Assert.That(s.Acquire(), Is.True);
        Assert.That(s.Count, Is.EqualTo(1));
        Assert.That(s.TryAcquire(), Is.True);
        Assert.That(s.Locked, Is.True);
        Assert.That(s.TryAcquire(), Is.False);
        Assert.That(s.Acquire(TimeSpan.Zero), Is.False);
        s.Release();
        Assert.That(s.Locked, Is.False);
    }

    [Test]
    public void WaitersAreServedFifoAndLateComersCannotBarge()
    {
        var s = new GreenSemaphore(0);
        var order = new List<int>();
        var gs = new List<Greenlet>();
        for (int i = 0; i < 6; i++)
        {
            int id = i;
            gs.Add(i % 2 == 0
                ? Green.Spawn(() => { s.Acquire(); order.Add(id); })
                : Green.SpawnAsync(async () => { await s.AcquireAsync(); order.Add(id); }));
        }
        Green.Sleep(1);
        for (int i = 0; i < 6; i++)
        {
            s.Release();
            Assert.That(s.TryAcquire(), Is.False, "a released permit belongs to the first waiter");
        }
        Green.JoinAll(gs);
        Assert.That(order, Is.EqualTo(Enumerable.Range(0, 6)));
        Assert.That(s.Count, Is.Zero);
    }

    [Test]
    public void AcquireTimesOutAndTheExpiredWaiterNeverConsumesAPermit()
    {
        var s = new GreenSemaphore(0);
        var g = Green.Spawn(() => s.Acquire(TimeSpan.FromMilliseconds(5)));
        var a = Green.SpawnAsync(async () => await s.AcquireAsync(TimeSpan.FromMilliseconds(5)));
        Assert.That(g.Get(), Is.False);
        Assert.That(a.Get(), Is.False);
        s.Release();
        Assert.That(s.Count, Is.EqualTo(1));
    }

    [Test]
    public void KilledWaiterDoesNotKeepThePermitItWasHanded()
    {
        var s = new GreenSemaphore(0);
        var victim = Green.Spawn(() => s.Acquire());
        var next = Green.Spawn(() => s.Acquire());
        Green.Sleep(0);
        s.Release();               // handed to victim, which has not resumed
        victim.Kill(block: false);
        Assert.That(next.Get(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public void AcquireInMainWithNothingToReleaseRaisesLoopExit()
    {
        var s = new GreenSemaphore(0);
        Assert.Throws<LoopExitException>(() => s.Acquire());
    }

    [Test]
    public void EnterScopeBoundsConcurrency()
    {
        var s = new GreenSemaphore(2);
        int inside = 0, maxInside = 0;
        var gs = Enumerable.Range(0, 10).Select(i => i % 2 == 0
            ? Green.Spawn(() => { using (s.Enter()) { inside++; maxInside = Math.Max(maxInside, inside); Green.Sleep(20); inside--; } })
            : Green.SpawnAsync(async () => { using (await s.EnterAsync()) { inside++; maxInside = Math.Max(maxInside, inside); await Task.Delay(20); inside--; } })).ToList();
        Green.JoinAll(gs, raiseError: true);
        Assert.That(maxInside, Is.EqualTo(2));
        Assert.That(s.Count, Is.EqualTo(2));
    }

    [Test]
    public void ReleaseFromAForeignThreadWakesAWaiter()
    {
        var s = new GreenSemaphore(0);
        var g = Green.Spawn(() => s.Acquire(TimeSpan.FromSeconds(10)));
        Green.Sleep(0);
        var t = Task.Run(() => s.Release());
        Assert.That(g.Get(), Is.True);
        t.Wait();
    }

    [Test]
    public void ForeignThreadCanAcquire()
    {
        var s = new GreenSemaphore(0);
        var t = Task.Run(() => s.Acquire(TimeSpan.FromSeconds(10)));
        Green.Spawn(() => { Green.Sleep(2); s.Release(); });
        Assert.That(Green.Wait(t), Is.True);
    }

    [Test]
    public void BoundedSemaphoreRefusesOverRelease()
    {
        var s = new BoundedSemaphore(1);
        s.Acquire();
        s.Release();
        var e = Assert.Throws<InvalidOperationException>(() => s.Release());
        Assert.That(e!.Message, Does.Contain("released more times"));
        Assert.That(s.Count, Is.EqualTo(1));
    }

    [Test]
    public void RLockIsReentrantForItsOwnerOnly()
    {
        var l = new RLock();
        Assert.That(l.Acquire(), Is.True);
        Assert.That(l.Acquire(), Is.True);
        Assert.That(l.Owner, Is.EqualTo(Hub.MainGreenlet));
        var other = Green.Spawn(() => l.Acquire(TimeSpan.FromMilliseconds(5)));
        Assert.That(other.Get(), Is.False);
        var badRelease = Green.Spawn(() => l.Release());
        badRelease.Join();
        Assert.That(badRelease.Exception, Is.InstanceOf<InvalidOperationException>());
        l.Release();
        Assert.That(l.Locked, Is.True, "still held once");
        var waiter = Green.Spawn(() => { using (l.Enter()) return Green.Current == l.Owner; });
        Green.Sleep(0);
        l.Release();
        Assert.That(waiter.Get(), Is.True);
        Assert.That(l.Locked, Is.False);
    }

    [Test]
    public void RLockHeldAcrossAwaitsByAStacklessGreenlet()
    {
        var l = new RLock();
        var order = new List<string>();
        var a = Green.SpawnAsync(async () =>
        {
            await l.AcquireAsync();
            order.Add("a in");
            await Task.Delay(5);
            await l.AcquireAsync();   // re-entrant after an await: same greenlet
            l.Release();
            order.Add("a out");
            l.Release();
        });
        var b = Green.Spawn(() => { using (l.Enter()) order.Add("b"); });
        Green.JoinAll([a, b], raiseError: true);
        Assert.That(order, Is.EqualTo(new[] { "a in", "a out", "b" }));
    }

    [Test]
    public void BoundedSemaphoreFromAStacklessGreenlet()
    {
        var s = new BoundedSemaphore(1);
        var g = Green.SpawnAsync(async () =>
        {
            using (await s.EnterAsync()) await Task.Yield();
            try { s.Release(); return "released twice"; }
            catch (InvalidOperationException) { return "refused"; }
        });
        Assert.That(g.Get(), Is.EqualTo("refused"));
    }
}
