namespace GreenRuntime.Tests.Timeouts;

/// <summary>Behaviours of gevent's test__timeout.py and test__api_timeout.py.</summary>
public class GreenTimeoutTests : HubTest
{
    private sealed class MyException : Exception { }

    [Test]
    public void RaisesGreenTimeoutExceptionInABlockingCall()
    {
        var g = Green.Spawn(() =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(5));
            try
            {
                Green.Sleep(10_000);
                return null;
            }
            catch (GreenTimeoutException e)
            {
                return e.Scope == t ? "mine" : "other";
            }
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo("mine"));
    }

    [Test]
    public void RaisesTheGivenException()
    {
        var q = new GreenQueue<int>();
        var g = Green.Spawn(() =>
        {
            using (GreenTimeout.Start(TimeSpan.FromMilliseconds(1), new MyException())) q.Get();
        });
        g.Join();
        Assert.That(g.Exception, Is.InstanceOf<MyException>());
        Assert.That(q.TryPut(1), Is.True);
        Assert.That(q.Get(), Is.EqualTo(1), "the interrupted getter left nothing behind");
    }

    [Test]
    public void ZeroTimeoutFiresAtTheFirstBlockingPoint()
    {
        var e = new Event();
        var g = Green.Spawn(() =>
        {
            using var t = GreenTimeout.Start(TimeSpan.Zero);
            int before = 0;
            for (int i = 0; i < 1000; i++) before++;   // no blocking point: not interrupted
            e.Wait();
            return before;
        });
        g.Join();
        Assert.That(g.Exception, Is.InstanceOf<GreenTimeoutException>());
    }

    [Test]
    public void CancelledTimeoutNeverFires()
    {
        var g = Green.Spawn(() =>
        {
            var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(2));
            t.Cancel();
            Green.Sleep(10);
            return t.Pending || t.Expired;
        });
        Assert.That(g.Get(), Is.False);
    }

    [Test]
    public void DisposingBeforeTheDeadlineCancels()
    {
        var g = Green.Spawn(() =>
        {
            using (GreenTimeout.Start(TimeSpan.FromMilliseconds(10))) Green.Sleep(0);
            Green.Sleep(30);
            return "finished";
        });
        Assert.That(g.Get(), Is.EqualTo("finished"));
    }

    [Test]
    public void CancelWithdrawsAnExceptionThatFiredButWasNotRaisedYet()
    {
        var g = Green.SpawnAsync(async () =>
        {
            var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(1));
            await Task.Delay(20);          // not one of ours: the timeout becomes pending
            bool expired = t.Expired;
            t.Cancel();
            Green.Sleep(0);                // would throw if it were still pending
            return expired;
        });
        Assert.That(g.Get(), Is.True);
    }

    [Test]
    public void NestedTimeoutsTheOuterThatFiresIsRaised()
    {
        var g = Green.Spawn(() =>
        {
            using var outer = GreenTimeout.Start(TimeSpan.FromMilliseconds(5));
            try
            {
                using var inner = GreenTimeout.Start(TimeSpan.FromSeconds(10));
                Green.Sleep(10_000);
                return "slept";
            }
            catch (GreenTimeoutException e) when (e.Scope == outer)
            {
                return "outer";
            }
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo("outer"));
    }

    [Test]
    public void NestedTimeoutsTheInnerThatFiresIsRaisedAndTheOuterStaysArmed()
    {
        var g = Green.Spawn(() =>
        {
            using var outer = GreenTimeout.Start(TimeSpan.FromMilliseconds(40));
            var results = new List<string>();
            try
            {
                using var inner = GreenTimeout.Start(TimeSpan.FromMilliseconds(2));
                Green.Sleep(10_000);
            }
            catch (GreenTimeoutException e) when (e.Scope != outer)
            {
                results.Add("inner");
            }
            try
            {
                Green.Sleep(10_000);
            }
            catch (GreenTimeoutException e) when (e.Scope == outer)
            {
                results.Add("outer");
            }
            return results;
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo(new[] { "inner", "outer" }));
    }

    [Test]
    public void SilentFormEndsTheScopeButLetsAnOuterTimeoutThrough()
    {
        var g = Green.Spawn(() =>
        {
            bool finished = GreenTimeout.RunSilently(TimeSpan.FromMilliseconds(2), () => Green.Sleep(10_000));
            bool quick = GreenTimeout.RunSilently(TimeSpan.FromSeconds(10), () => Green.Sleep(0));
            using var outer = GreenTimeout.Start(TimeSpan.FromMilliseconds(2));
            try
            {
                GreenTimeout.RunSilently(TimeSpan.FromSeconds(10), () => Green.Sleep(10_000));
                return (finished, quick, "swallowed the outer one");
            }
            catch (GreenTimeoutException e) when (e.Scope == outer)
            {
                return (finished, quick, "outer propagated");
            }
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo((false, true, "outer propagated")));
    }

    [Test]
    public void WithTimeoutReturnsTheValueOrTheTimeoutValue()
    {
        var g = Green.Spawn(() => (
            Green.WithTimeout(TimeSpan.FromSeconds(10), () => 1, -1),
            Green.WithTimeout(TimeSpan.FromMilliseconds(2), () => { Green.Sleep(10_000); return 1; }, -1)));
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo((1, -1)));
        var throwing = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(2), () => { Green.Sleep(10_000); return 1; }));
        throwing.Join();
        Assert.That(throwing.Exception, Is.InstanceOf<GreenTimeoutException>());
    }

    [Test]
    public void WorksInTheMainGreenlet()
    {
        var e = new Event();
        Green.Spawn(() => Green.Sleep(10_000));
        Assert.Throws<GreenTimeoutException>(() =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(2));
            e.Wait();
        });
    }

    [Test]
    public void InterruptsAStacklessGreenletAwaitingAPrimitive()
    {
        var q = new GreenQueue<int>();
        var g = Green.SpawnAsync(async () =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(2));
            try
            {
                await q.GetAsync();
                return "got";
            }
            catch (GreenTimeoutException e) when (e.Scope == t)
            {
                return "timed out";
            }
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(5)), Is.EqualTo("timed out"));
        q.Put(1);
        Assert.That(q.Get(), Is.EqualTo(1), "the interrupted async getter did not swallow the item");
        var silent = Green.SpawnAsync(async () => await GreenTimeout.RunSilentlyAsync(TimeSpan.FromMilliseconds(2), async () => await new Event().WaitAsync()));
        Assert.That(silent.Get(TimeSpan.FromSeconds(5)), Is.False);
        var valued = Green.SpawnAsync(async () => await Green.WithTimeoutAsync(TimeSpan.FromMilliseconds(2), async () => await new AsyncResult<int>().GetAsync(), -1));
        Assert.That(valued.Get(TimeSpan.FromSeconds(5)), Is.EqualTo(-1));
    }

    [Test]
    public void CancelsAParkInGreenWaitForATask()
    {
        var never = new TaskCompletionSource();
        var g = Green.Spawn(() =>
        {
            using (GreenTimeout.Start(TimeSpan.FromMilliseconds(2))) Green.Wait(never.Task);
        });
        g.Join(TimeSpan.FromSeconds(5));
        Assert.That(g.Exception, Is.InstanceOf<GreenTimeoutException>());
        never.SetResult();   // the late completion is ignored
        Green.Sleep(1);
    }

    [Test]
    public void StartFromAHubCallbackIsRefused()
    {
        Exception? error = null;
        Hub.Post(() => { try { GreenTimeout.Start(TimeSpan.FromSeconds(1)); } catch (Exception e) { error = e; } });
        Green.Sleep(1);
        Assert.That(error, Is.InstanceOf<InvalidOperationException>());
        Assert.That(error!.Message, Does.Contain("Spawn a greenlet"));
    }
}

/// <summary>GreenTimeout races decided by hub time that only moves when the test says so.</summary>
public class GreenTimeoutManualTimeTests : HubTest
{
    private readonly ManualTime _time = new();

    protected override HubOptions CreateOptions(Microsoft.Extensions.Logging.ILoggerFactory loggerFactory) =>
        new() { LoggerFactory = loggerFactory, TimeProvider = _time };

    private sealed class ManualTime : TimeProvider
    {
        private long _now = 1_000_000_000;
        public override long TimestampFrequency => 1_000_000_000;
        public override long GetTimestamp() => Interlocked.Read(ref _now);
        public void Advance(TimeSpan by) => Interlocked.Add(ref _now, by.Ticks * 100);
    }

    [Test]
    public void DoesNotLoseAnItemHandedOverJustBeforeTheDeadline()
    {
        // The item is bound to the getter in the same step that wakes it. Here the deadline passes while the main
        // greenlet holds the baton, the item is handed over, and only then does the timer fire (at the next
        // scheduling step): the getter must see the item and get the timeout at its next blocking point.
        var q = new GreenQueue<int>();
        var log = new List<string>();
        var g = Green.Spawn(() =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(10));
            try
            {
                log.Add("got " + q.Get());
                Green.Sleep(10_000);
                log.Add("slept");
            }
            catch (GreenTimeoutException e) when (e.Scope == t)
            {
                log.Add("timed out");
            }
        });
        Green.Sleep(0);                 // g parks in Get; hub time stands still
        q.Put(42);                      // handed to g, which is now ready with the item
        _time.Advance(TimeSpan.FromSeconds(1));   // the deadline passes before g runs
        g.Join(TimeSpan.FromSeconds(5));
        Assert.That(log, Is.EqualTo(new[] { "got 42", "timed out" }));
    }
}
