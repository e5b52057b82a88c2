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
        var consumer = Green.SpawnAsync(async () => { await Task.Yield(); return Green.IWait(gs).ToList(); });
        Assert.That(consumer.Get(), Is.EqualTo(new[] { gs[1], gs[0] }));
    }
}

/// <summary>Green.IWait accepts any IGreenWaitable a user writes (gevent's iwait takes anything with rawlink).</summary>
public class IWaitUserWaitableTests : HubTest
{
    /// <summary>A waitable of the user's own, signalled from a foreign thread.</summary>
    private sealed class Flag : IGreenWaitable
    {
        private readonly object _gate = new();
        private Action? _subscriber;
        private bool _ready;

        public bool Ready { get { lock (_gate) return _ready; } }

        public void Raise()
        {
            Action? notify;
            lock (_gate)
            {
                _ready = true;
                notify = _subscriber;
                _subscriber = null;
            }
            notify?.Invoke();
        }

        public IDisposable Subscribe(Action onReady)
        {
            lock (_gate) _subscriber = onReady;
            return new Undo(() => { lock (_gate) _subscriber = null; });
        }

        private sealed class Undo(Action undo) : IDisposable
        {
            public void Dispose() => undo();
        }
    }

    [Test]
    public void AUserWaitableSignalledFromAnotherThreadIsYieldedInOrder()
    {
        var mine = new Flag();
        var ev = new Event();
        Green.Spawn(() => { Green.Sleep(5); ev.Set(); });
        _ = Task.Run(async () => { await Task.Delay(100); mine.Raise(); });
        var order = Green.IWait(new IGreenWaitable[] { mine, ev }, TimeSpan.FromSeconds(10)).ToList();
        Assert.That(order, Is.EqualTo(new IGreenWaitable[] { ev, mine }));
    }
}
