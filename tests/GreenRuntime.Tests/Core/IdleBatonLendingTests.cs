namespace GreenRuntime.Tests.Core;

/// <summary>A released call that returns while the hub idles takes the hub's baton itself, and the idle carrier gets it
/// back when the hub would idle again (src/GreenRuntime/Scheduling/Hub.IdleLending.cs).</summary>
public class IdleBatonLendingTests : HubTest
{
    [Test]
    public void AReleasedCallReturningToAnIdleHubTakesTheBatonAndItsGreenletGoesOnOnItsOwnThread()
    {
        var sameThread = 0;
        var g = Green.Spawn(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                int before = Environment.CurrentManagedThreadId;
                int during = Green.RunBlocking(() => { Thread.Sleep(2); return Environment.CurrentManagedThreadId; });
                if (before == during && during == Environment.CurrentManagedThreadId) sameThread++;
            }
        });
        g.Join(); // the main greenlet waits, so the hub idles while each call blocks
        Assert.Multiple(() =>
        {
            Assert.That(sameThread, Is.EqualTo(20), "each call and what follows it run on the greenlet's own thread");
            // Every return finds the hub idle unless the idle carrier is slow to fall asleep: most, generously.
            Assert.That(Hub.IdleBatonTakeovers, Is.GreaterThanOrEqualTo(5), "returns that took the idle hub's baton");
        });
    }

    [Test]
    public void WhileTheIdleCarrierIsLentTimersFireAndOtherGreenletsRunInOrder()
    {
        var order = new List<string>();
        int ticks = 0;
        var blocker = Green.Spawn(() =>
        {
            for (int i = 0; i < 30; i++) Green.RunBlocking(() => Thread.Sleep(1));
        });
        var ticker = Green.Spawn(() =>
        {
            for (int i = 0; i < 30; i++)
            {
                Green.Sleep(1);
                ticks++;
            }
        });
        Green.JoinAll([blocker, ticker]);
        // After the lending, starts still run in spawn order and a yield goes behind them.
        var a = Green.Spawn(() => { order.Add("a1"); Green.Sleep(0); order.Add("a2"); });
        var b = Green.Spawn(() => order.Add("b"));
        var c = Green.Spawn(() => order.Add("c"));
        Green.JoinAll([a, b, c]);
        Assert.Multiple(() =>
        {
            Assert.That(blocker.Successful && ticker.Successful, Is.True);
            Assert.That(ticks, Is.EqualTo(30), "the timers of the ticker fired whoever held the baton");
            Assert.That(order, Is.EqualTo(new[] { "a1", "b", "c", "a2" }));
            Assert.That(Hub.IdleBatonTakeovers, Is.GreaterThan(0));
        });
    }

    [Test]
    public void AMonitorWaitPulsedByAPlainThreadTakesTheBatonAndReturnsHoldingTheMonitor()
    {
        var gate = new object();
        bool done = false;
        int rounds = 0;
        using var requests = new SemaphoreSlim(0);
        var server = new Thread(() =>
        {
            for (int i = 0; i < 50; i++)
            {
                requests.Wait();
                lock (gate) { done = true; Monitor.Pulse(gate); }
            }
        }) { IsBackground = true };
        server.Start();
        var g = Green.Spawn(() =>
        {
            for (int i = 0; i < 50; i++)
            {
                lock (gate)
                {
                    done = false;
                    requests.Release();
                    // Monitor.Wait is not patched in this project: the released form, as the Locks set runs it.
                    while (!done) Hub.Current.RunReleased(static o => Monitor.Wait(o, 10_000), gate, WaitReason.Lock, raisePending: false);
                    if (Monitor.IsEntered(gate)) rounds++;
                }
            }
        });
        g.Join();
        server.Join();
        Assert.Multiple(() =>
        {
            Assert.That(rounds, Is.EqualTo(50));
            Assert.That(Hub.IdleBatonTakeovers, Is.GreaterThan(0));
        });
    }

    [Test]
    public void ALentIdleCarrierGoesBackToThePoolWhenTheHubMakesAReactorOrCloses()
    {
        int inUseAfterReactor = -1, inUseAfterClose = -1;
        long takeoversBeforeReactor = 0;
        var thread = new Thread(() =>
        {
            var hub = new Hub();
            Green.Spawn(() =>
            {
                for (int i = 0; i < 5; i++) Green.RunBlocking(() => Thread.Sleep(2));
                takeoversBeforeReactor = hub.IdleBatonTakeovers;
                _ = hub.Reactor; // from now on the idle holder sleeps in epoll: a lent carrier is retired first
                for (int i = 0; i < 5; i++) Green.RunBlocking(() => Thread.Sleep(2));
                Green.Sleep(5);
            }).Join();
            inUseAfterReactor = hub.CarriersInUse;
            Green.Spawn(() => Green.RunBlocking(() => Thread.Sleep(2))).Join();
            hub.Dispose();
            inUseAfterClose = hub.CarriersInUse;
        });
        thread.Start();
        Assert.That(Green.Wait(Task.Run(() => thread.Join(TimeSpan.FromSeconds(30)))), Is.True, "no hang");
        Assert.Multiple(() =>
        {
            Assert.That(takeoversBeforeReactor, Is.GreaterThan(0));
            Assert.That(inUseAfterReactor, Is.EqualTo(0), "no carrier left behind in the idle wait");
            Assert.That(inUseAfterClose, Is.EqualTo(0));
        });
    }

    [Test]
    public void AHubDisposedWithItsIdleCarrierLentGivesTheCarrierBack()
    {
        int inUse = -1;
        long takeovers = 0;
        var thread = new Thread(() =>
        {
            var hub = new Hub();
            // The greenlet's last call takes the baton and it ends: the main greenlet disposes the hub with the idle
            // carrier still lent.
            Green.Spawn(() => Green.RunBlocking(() => Thread.Sleep(5))).Join();
            takeovers = hub.IdleBatonTakeovers;
            hub.Dispose();
            inUse = hub.CarriersInUse;
        });
        thread.Start();
        Assert.That(Green.Wait(Task.Run(() => thread.Join(TimeSpan.FromSeconds(30)))), Is.True, "no hang");
        Assert.That(inUse, Is.EqualTo(0), $"carriers in use after Dispose ({takeovers} takeovers)");
    }
}
