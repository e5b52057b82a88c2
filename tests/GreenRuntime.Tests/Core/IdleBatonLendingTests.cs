using System.Diagnostics;
using System.Net.Sockets;
using GreenRuntime.Io;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Tests.Core;

/// <summary>A released call that returns while the hub idles takes the hub's baton itself, and the idle carrier gets it
/// back when the hub would idle again (src/GreenRuntime/Scheduling/Hub.IdleLending.cs).</summary>
public class IdleBatonLendingTests : HubTest
{
    /// <summary>Gives a hub what the fixture runs its tests on (here nothing: a hub whose idle carrier sleeps on the
    /// futex). Called on the hub's thread, before the test's greenlets start.</summary>
    protected virtual void Prepare(Hub hub) { }

    [SetUp]
    public void PrepareTestHub() => Prepare(Hub);

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
            // A return finds the hub idle only when the ticker's timer is not about to fire: on until a few did.
            for (int i = 0; i < 30 || (Hub.IdleBatonTakeovers < 3 && i < 1000); i++) Green.RunBlocking(() => Thread.Sleep(1));
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
            Prepare(hub);
            Green.Spawn(() =>
            {
                for (int i = 0; i < 5; i++) Green.RunBlocking(() => Thread.Sleep(2));
                takeoversBeforeReactor = hub.IdleBatonTakeovers;
                _ = hub.Reactor; // from now on the idle holder sleeps in epoll: a carrier lent on the futex is retired first
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
            Prepare(hub);
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

/// <summary>The same on a hub with a reactor, whose idle carrier sleeps in epoll_wait, lent or not; and socket readiness
/// that only the lent carrier hears reaches the greenlets that wait for it.</summary>
public class IdleBatonLendingOnAReactorHubTests : IdleBatonLendingTests
{
    private readonly List<Socket> _sockets = new();

    protected override void Prepare(Hub hub)
    {
        if (!Epoll.IsSupported) Assert.Ignore("The reactor exists on Linux x64 only.");
        // A socket wait, as a hub's first patched socket call makes: it creates the reactor and registers the socket.
        var (_, b) = Pair();
        Assert.That(SocketIo.TryReceive(hub, b, new byte[1], SocketFlags.None, TimeSpan.FromMilliseconds(5), out _, out var error), Is.True);
        Assert.That(error, Is.EqualTo(SocketError.TimedOut));
        Assert.That(hub.Reactor, Is.Not.Null);
    }

    [TearDown]
    public void CloseSockets()
    {
        lock (_sockets)
        {
            foreach (var s in _sockets) s.Dispose();
            _sockets.Clear();
        }
    }

    private (Socket A, Socket B) Pair()
    {
        var (a, b) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        a.NoDelay = b.NoDelay = true;
        lock (_sockets)
        {
            _sockets.Add(a);
            _sockets.Add(b);
        }
        return (a, b);
    }

    /// <summary>A greenlet returns from a released call and takes the idle baton, then runs on without a scheduling
    /// step while a plain send makes the peer of <paramref name="writer"/> readable: the edge goes to the lent carrier,
    /// asleep in epoll_wait, and nobody else. Repeated, since a return finds the hub idle only most of the time.</summary>
    private static Greenlet LendWhileDataArrives(Socket writer, int rounds)
    {
        return Green.Spawn(() =>
        {
            for (int i = 0; i < rounds; i++)
            {
                Green.RunBlocking(() => Thread.Sleep(2));
                writer.Send([(byte)i]); // the writer is not on the reactor: a plain send, not a scheduling step
                var until = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 20;
                while (Stopwatch.GetTimestamp() < until) Thread.SpinWait(100); // 50 ms busy, holding the baton
                Green.Sleep(1);
            }
        });
    }

    [Test]
    public void ReadinessThatOnlyTheLentCarrierHearsWakesTheParkedGreenlet()
    {
        var (a, b) = Pair();
        int received = 0;
        var reader = Green.Spawn(() =>
        {
            var buffer = new byte[64];
            while (received < 10)
            {
                Assert.That(SocketIo.TryReceive(Hub, b, buffer, SocketFlags.None, TimeSpan.FromSeconds(20), out int n, out var error), Is.True);
                Assert.That(error, Is.EqualTo(SocketError.Success), "woken by the data, not by the 20 s timeout");
                received += n;
            }
        });
        var writer = LendWhileDataArrives(a, 10);
        Green.JoinAll([writer, reader]);
        Assert.Multiple(() =>
        {
            Assert.That(writer.Successful && reader.Successful, Is.True, reader.Exception?.ToString());
            Assert.That(received, Is.EqualTo(10));
            Assert.That(Hub.IdleBatonTakeovers, Is.GreaterThan(0));
            Assert.That(Hub.IdleEventsForwarded, Is.GreaterThan(0), "edges heard by the lent carrier went to the holder");
        });
    }

    [Test]
    public void AStacklessSocketWaitEndsWhenItsReadinessArrivesWhileTheBatonIsLent()
    {
        var (a, b) = Pair();
        int completed = 0;
        var waiter = Green.SpawnAsync(async () =>
        {
            var buffer = new byte[64];
            for (int i = 0; i < 10; i++)
            {
                var result = await CooperativeSocket.WaitReadableAsync(b, TimeSpan.FromSeconds(20));
                Assert.That(result, Is.EqualTo(SocketError.Success), "woken by the data, not by the 20 s timeout");
                b.Receive(buffer); // readable: returns at once
                completed++;
            }
        });
        var writer = LendWhileDataArrives(a, 10);
        Green.JoinAll([writer, waiter]);
        Assert.Multiple(() =>
        {
            Assert.That(writer.Successful && waiter.Successful, Is.True, waiter.Exception?.ToString());
            Assert.That(completed, Is.EqualTo(10));
            Assert.That(Hub.IdleEventsForwarded, Is.GreaterThan(0), "edges heard by the lent carrier went to the holder");
        });
    }

    [Test]
    public void AHubClosingWithItsCarrierLentInEpollLetsItGoAndEndsTheSocketWaits()
    {
        int inUse = -1;
        long takeovers = 0;
        bool waitEnded = false;
        var thread = new Thread(() =>
        {
            var hub = new Hub();
            Prepare(hub);
            var (_, b) = Pair();
            // A stackless wait that only the closing ends, and a released call whose return takes the baton as the
            // greenlet ends: the main greenlet disposes the hub with the idle carrier lent, asleep in epoll_wait.
            var wait = CooperativeSocket.WaitReadableAsync(b, null);
            Green.Spawn(() => Green.RunBlocking(() => Thread.Sleep(5))).Join();
            takeovers = hub.IdleBatonTakeovers;
            hub.Dispose();
            inUse = hub.CarriersInUse;
            waitEnded = wait.IsCompleted;
        });
        thread.Start();
        Assert.That(Green.Wait(Task.Run(() => thread.Join(TimeSpan.FromSeconds(30)))), Is.True, "no hang");
        Assert.Multiple(() =>
        {
            Assert.That(takeovers, Is.GreaterThan(0));
            Assert.That(inUse, Is.EqualTo(0), "no carrier left behind in epoll_wait");
            Assert.That(waitEnded, Is.True, "the stackless wait ended with the reactor");
        });
    }
}
