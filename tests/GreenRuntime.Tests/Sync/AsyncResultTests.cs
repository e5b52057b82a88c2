namespace GreenRuntime.Tests.Sync;

/// <summary>Behaviours of gevent's test__event.py for AsyncResult.</summary>
public class AsyncResultTests : HubTest
{
    private sealed class MyException : Exception { }

    [Test]
    public void SetDeliversTheValueToWaitersAndLaterReaders()
    {
        var r = new AsyncResult<int>();
        Assert.That(r.Ready, Is.False);
        Assert.That(r.TryGet(out _), Is.False);
        var g = Green.Spawn(() => r.Get());
        var a = Green.SpawnAsync(async () => await r.GetAsync());
        Green.Sleep(0);
        r.Set(5);
        Assert.That(g.Get(), Is.EqualTo(5));
        Assert.That(a.Get(), Is.EqualTo(5));
        Assert.That(r.Ready && r.Successful, Is.True);
        Assert.That(r.Value, Is.EqualTo(5));
        Assert.That(r.TryGet(out var v) && v == 5, Is.True);
    }

    [Test]
    public void SetExceptionIsRethrownByGetButNotByWait()
    {
        var r = new AsyncResult<string>();
        var g = Green.Spawn(() => r.Wait());
        Green.Sleep(0);
        r.SetException(new MyException());
        Assert.That(g.Get(), Is.True);
        Assert.Throws<MyException>(() => r.Get());
        Assert.That(r.Successful, Is.False);
        Assert.That(r.Exception, Is.InstanceOf<MyException>());
        Assert.Throws<MyException>(() => r.TryGet(out _));
    }

    [Test]
    public void GetWithTimeoutThrowsTimeoutException()
    {
        var r = new AsyncResult<int>();
        var g = Green.Spawn(() => r.Get(TimeSpan.FromMilliseconds(10)));
        g.Join();
        Assert.That(g.Exception, Is.InstanceOf<TimeoutException>());
        Assert.That(r.Wait(TimeSpan.Zero), Is.False);
    }

    [Test]
    public void LastSetWins()
    {
        var r = new AsyncResult<int>();
        r.Set(1);
        r.Set(2);
        Assert.That(r.Get(), Is.EqualTo(2));
    }

    [Test]
    public void AsALinkTargetItTakesTheGreenletsValue()
    {
        var r = new AsyncResult<int>();
        var g = Green.Spawn(() => 42);
        g.Link(r.SetFrom);
        Assert.That(r.Get(), Is.EqualTo(42));
    }

    [Test]
    public void AsALinkTargetItTakesTheGreenletsException()
    {
        var r = new AsyncResult<int>();
        var g = Green.Spawn(new Func<int>(() => throw new MyException()));
        g.Link(r.SetFrom);
        Assert.Throws<MyException>(() => r.Get());
    }

    [Test]
    public void AsALinkTargetOfAKilledGreenletItHoldsGreenletExit()
    {
        var r = new AsyncResult<int>();
        var g = Green.Spawn(() => { Green.Sleep(1000); return 1; });
        g.Link(r.SetFrom);
        Green.Sleep(0);
        g.Kill();
        Assert.Throws<GreenletExit>(() => r.Get());
    }

    [Test]
    public void GetInMainWithNothingElseToRunRaisesLoopExit()
    {
        Assert.Throws<LoopExitException>(() => new AsyncResult<int>().Get());
    }

    [Test]
    public void CrossThreadSetWakesAGreenletWaitingWithATimeout()
    {
        var r = new AsyncResult<string>();
        var waiter = Green.Spawn(() => r.Get(TimeSpan.FromSeconds(10)));
        Green.Sleep(0);
        var t = new Thread(() => r.Set("from thread"));
        t.Start();
        Assert.That(waiter.Get(), Is.EqualTo("from thread"));
        t.Join();
    }

    [Test]
    public void ForeignThreadGetsAValueSetInAGreenlet()
    {
        var r = new AsyncResult<int>();
        var t = Task.Run(() => r.Get(TimeSpan.FromSeconds(10)));
        Green.Spawn(() => { Green.Sleep(5); r.Set(7); });
        Assert.That(Green.Wait(t), Is.EqualTo(7));
    }
}
