namespace GreenRuntime.Tests.Sync;

/// <summary>Behaviours of gevent's test__event.py TestWait and iwait.</summary>
public class IWaitTests : HubTest
{
    [Test]
    public void YieldsInCompletionOrder()
    {
        var e = new Event();
        var r = new AsyncResult<int>();
        var gate = new Event();
        var g = Green.Spawn(() => gate.Wait());
        Green.Spawn(() => { Green.Sleep(1); r.Set(1); Green.Sleep(1); e.Set(); Green.Sleep(1); gate.Set(); });
        var order = Green.IWait(new IGreenWaitable[] { g, e, r }).ToList();
        Assert.That(order, Is.EqualTo(new IGreenWaitable[] { r, e, g }));
    }

    [Test]
    public void ReadyOnesComeFirstAndTwiceIsFine()
    {
        var e = new Event();
        e.Set();
        Assert.That(Green.IWait([e]).ToList(), Is.EqualTo(new[] { e }));
        Assert.That(Green.IWait([e]).ToList(), Is.EqualTo(new[] { e }));
    }

    [Test]
    public void CountAndTimeoutEndTheEnumeration()
    {
        var events = Enumerable.Range(0, 5).Select(_ => new Event()).ToList();
        var sender = Green.Spawn(() => { foreach (var e in events) { Green.Sleep(2); e.Set(); } });
        Assert.That(Green.IWait(events, count: 2).ToList(), Is.EqualTo(events.Take(2)));
        Assert.That(sender.Ready, Is.False);
        sender.Kill();
        var never = new Event();
        Green.Spawn(() => Green.Sleep(50));
        Assert.That(Green.IWait([never], TimeSpan.FromMilliseconds(5)).ToList(), Is.Empty);
    }

    [Test]
    public void WorksWithGreenletsFromAStacklessConsumer()
    {
        var gates = new[] { new Event(), new Event() };
        var gs = new[] { Green.Spawn(() => gates[0].Wait()), Green.Spawn(() => gates[1].Wait()) };
        Green.Spawn(() => { Green.Sleep(2); gates[1].Set(); Green.Sleep(2); gates[0].Set(); });
        var consumer = Green.Spawn(async () => { await Task.Yield(); return Green.IWait(gs).ToList(); });
        Assert.That(consumer.Get(), Is.EqualTo(new[] { gs[1], gs[0] }));
    }
}
