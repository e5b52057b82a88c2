namespace GreenRuntime.Tests.Sync;

/// <summary>Behaviours of gevent's test__event.py for Event.</summary>
public class EventTests : HubTest
{
    [Test]
    public void StartsClearAndSetIsVisible()
    {
        var e = new Event();
        Assert.That(e.IsSet, Is.False);
        Assert.That(e.Wait(TimeSpan.Zero), Is.False);
        e.Set();
        Assert.That(e.IsSet, Is.True);
        Assert.That(e.Wait(TimeSpan.Zero), Is.True);
        Assert.That(e.Wait(), Is.True, "waiting on a set event returns at once");
        e.Clear();
        Assert.That(e.IsSet, Is.False);
    }

    [Test]
    public void SetWakesEveryWaiterInFifoOrder()
    {
        var e = new Event();
        var order = new List<int>();
        var gs = Enumerable.Range(0, 5).Select(i => Green.Spawn(() => { Assert.That(e.Wait(), Is.True); order.Add(i); })).ToList();
        Green.Sleep(0);
        Assert.That(order, Is.Empty);
        e.Set();
        Green.JoinAll(gs);
        Assert.That(order, Is.EqualTo(new[] { 0, 1, 2, 3, 4 }));
    }

    [TestCase(1)]
    [TestCase(100)]
    [TestCase(1000)]
    public void SetThenClearStillWakesEveryoneWaitingAtThatMoment(int n)
    {
        var e = new Event();
        var results = new List<bool>();
        var gs = Enumerable.Range(0, n).Select(_ => Green.SpawnAsync(async () => results.Add(await e.WaitAsync()))).ToList();
        var stackful = Enumerable.Range(0, Math.Min(n, 100)).Select(_ => Green.Spawn(() => results.Add(e.Wait()))).ToList();
        // A yield, not a short sleep: it runs after every start queued before it, however long starting takes,
        // whereas a 1 ms timer may fire and go first once a slow start phase outruns its slice (as in gevent).
        Green.Sleep(0);
        e.Set();
        e.Clear();
        Assert.That(Green.JoinAll(gs.Concat(stackful), TimeSpan.FromSeconds(10)), Has.Count.EqualTo(n + Math.Min(n, 100)));
        Assert.That(results, Has.Count.EqualTo(n + Math.Min(n, 100)).And.All.True);
    }

    [Test]
    public void NoStaleNotificationAfterClear()
    {
        var e = new Event();
        e.Set();
        e.Clear();
        var g = Green.Spawn(() => e.Wait(TimeSpan.FromMilliseconds(30)));
        Assert.That(g.Get(), Is.False, "a cleared event blocks until the next Set");
    }

    [Test]
    public void WaitTimesOutWithFalseAndLeavesNoWaiterBehind()
    {
        var e = new Event();
        var g = Green.Spawn(() => e.Wait(TimeSpan.FromMilliseconds(10)));
        Assert.That(g.Get(), Is.False);
        var later = Green.Spawn(() => e.Wait());
        Green.Sleep(0);
        e.Set();
        Assert.That(later.Get(), Is.True);
    }

    [Test]
    public void WaitAsyncFromAStacklessGreenletDoesNotNeedACarrier()
    {
        var e = new Event();
        var g = Green.SpawnAsync(async () =>
        {
            var ok = await e.WaitAsync();
            return ok && Green.Current.IsStackless;
        });
        Green.Sleep(0);
        Assert.That(g.State, Is.EqualTo(GreenletState.Awaiting));
        e.Set();
        Assert.That(g.Get(), Is.True);
        Assert.That(Green.Wait(new Event().WaitAsync(TimeSpan.FromMilliseconds(1))), Is.False, "main may await the task cooperatively too");
    }

    [Test]
    public void WaitAsyncTimesOutWithFalse()
    {
        var e = new Event();
        var g = Green.SpawnAsync(async () => await e.WaitAsync(TimeSpan.FromMilliseconds(10)));
        Assert.That(g.Get(), Is.False);
    }

    [Test]
    public void WaitInMainWithNothingElseToRunRaisesLoopExit()
    {
        var e = new Event();
        Assert.Throws<LoopExitException>(() => e.Wait());
    }

    [Test]
    public void KillWhileWaitingEndsTheWaitAndTheEventStillWorks()
    {
        var e = new Event();
        var victim = Green.Spawn(() => e.Wait());
        var survivor = Green.Spawn(() => e.Wait());
        Green.Sleep(0);
        victim.Kill();
        Assert.That(victim.Dead && victim.Successful, Is.True);
        e.Set();
        Assert.That(survivor.Get(), Is.True);
    }

    [Test]
    public void KillWhileAwaitingFaultsTheTaskSoFinallyRuns()
    {
        var e = new Event();
        bool cleaned = false;
        var victim = Green.SpawnAsync(async () =>
        {
            try { await e.WaitAsync(); }
            finally { cleaned = true; }
        });
        Green.Sleep(0);
        victim.Kill();
        Green.Sleep(1);
        Assert.That(cleaned, Is.True);
    }

    [Test]
    public void SetFromAForeignThreadWakesTheWaiter()
    {
        var e = new Event();
        var waiter = Green.Spawn(() => e.Wait(TimeSpan.FromSeconds(10)));
        Green.Sleep(0);
        var t = Task.Run(() => e.Set());
        Assert.That(waiter.Get(), Is.True);
        t.Wait();
    }

    [Test]
    public void ForeignThreadCanWaitForAnEventSetByAGreenlet()
    {
        var e = new Event();
        var t = Task.Run(() => e.Wait(TimeSpan.FromSeconds(10)));
        Green.Spawn(() => { Green.Sleep(5); e.Set(); });
        Green.Wait(t);
        Assert.That(t.Result, Is.True);
    }

    [Test]
    public void CancellationTokenCancelsWaitAsync()
    {
        var e = new Event();
        using var cts = new CancellationTokenSource();
        var g = Green.SpawnAsync(async () => { await e.WaitAsync(cancellationToken: cts.Token); });
        Green.Sleep(0);
        cts.Cancel();
        g.Join(TimeSpan.FromSeconds(5));
        Assert.That(g.Exception, Is.InstanceOf<OperationCanceledException>());
    }
}
