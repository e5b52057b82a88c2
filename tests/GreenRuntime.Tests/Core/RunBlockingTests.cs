using GreenRuntime.Scheduling;
using System.Diagnostics;

namespace GreenRuntime.Tests.Core;

public class RunBlockingTests : HubTest
{
    [Test]
    public void OnAPinnedHubTheCallRunsOnTheProcesssCpusAndTheGreenletGoesBackToTheHubsCpu()
    {
        if (!OperatingSystem.IsLinux() || Environment.ProcessorCount < 2) Assert.Ignore("needs sched_getaffinity and two CPUs.");
        ulong[]? before = null, during = null, after = null;
        var thread = new Thread(() =>
        {
            using var pinned = new Hub(new HubOptions { PinCarriersToOneCpu = true });
            Green.Spawn(() =>
            {
                before = Affinity.Save();
                during = Green.RunBlocking(Affinity.Save);
                after = Affinity.Save();
            }).Join();
        });
        thread.Start();
        Green.Wait(Task.Run(thread.Join));
        Assert.Multiple(() =>
        {
            Assert.That(before!.Sum(word => System.Numerics.BitOperations.PopCount(word)), Is.EqualTo(1), "a pinned hub's greenlet runs on one CPU");
            Assert.That(during, Is.EqualTo(Affinity.ProcessMask), "the blocking call runs on every CPU of the process");
            Assert.That(after, Is.EqualTo(before), "back on the hub's CPU");
        });
    }

    [Test]
    public void OtherGreenletsRunWhileTheCallBlocksItsOwnThread()
    {
        int callThread = 0, greenletThread = 0;
        var ticks = 0;
        var blocker = Green.Spawn(() =>
        {
            greenletThread = Environment.CurrentManagedThreadId;
            return Green.RunBlocking(() =>
            {
                callThread = Environment.CurrentManagedThreadId;
                Thread.Sleep(300); // a real block: the test project does not patch
                return 42;
            });
        });
        var ticker = Green.Spawn(() =>
        {
            for (int i = 0; i < 10; i++)
            {
                Green.Sleep(10);
                ticks++;
            }
        });
        Green.JoinAll([blocker, ticker]);
        Assert.Multiple(() =>
        {
            Assert.That(blocker.Get(), Is.EqualTo(42));
            Assert.That(ticks, Is.EqualTo(10), "the ticker ran while the call blocked");
            Assert.That(callThread, Is.EqualTo(greenletThread), "the call runs on the greenlet's own carrier");
        });
        Assert.That(ticker.Value, Is.Null);
    }

    [Test]
    public void TwentyBlockingCallsOverlap()
    {
        var sw = Stopwatch.StartNew();
        var all = Enumerable.Range(0, 20).Select(_ => Green.Spawn(() => Green.RunBlocking(() => Thread.Sleep(200)))).ToList();
        Green.JoinAll(all);
        Assert.That(all.All(g => g.Successful), Is.True);
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)), "20 × 200 ms one after another would take 4 s");
    }

    [Test]
    public void TheCallsExceptionPropagatesWithItsStack()
    {
        var g = Green.Spawn(() => Green.RunBlocking<int>(() => throw new FormatException("bad")));
        g.Join();
        Assert.That(g.Exception, Is.TypeOf<FormatException>());
        Assert.That(g.Exception!.StackTrace, Does.Contain(nameof(TheCallsExceptionPropagatesWithItsStack)));
    }

    private sealed class Connection : IDisposable
    {
        public bool Disposed;
        public void Dispose() => Disposed = true;
    }

    [Test]
    public void AKillArrivingMeanwhileLeavesTheReturnedValueToTheCallerAndIsRaisedAtTheNextBlockingPoint()
    {
        // `using var c = Green.RunBlocking(Open)`: a kill raised as the call returned lost the connection it opened (20 of
        // 20 left open on the server under KillAll). A thread's interrupt during a native call is raised at its next wait,
        // inside the using; so is the kill.
        using var entered = new ManualResetEventSlim();
        Connection? opened = null;
        var afterCall = false;
        var g = Green.Spawn(() =>
        {
            using var c = Green.RunBlocking(() =>
            {
                entered.Set();
                Thread.Sleep(200); // a real block: the test project does not patch
                return opened = new Connection();
            });
            afterCall = true;
            Green.Sleep(10_000); // the next blocking point
            Assert.Fail("the kill must be raised at the next blocking point");
        });
        Green.Wait(Task.Run(() => entered.Wait()));
        g.Kill(block: true);
        Assert.Multiple(() =>
        {
            Assert.That(afterCall, Is.True, "the call's value reached the caller");
            Assert.That(opened?.Disposed, Is.True, "the using disposed it as the kill unwound");
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>(), "killed, at the next blocking point");
        });
    }

    [Test]
    public void AnActionFollowsTheSameRuleAsAFunc()
    {
        // An Action has no value, but may store what it made; a kill meanwhile waits for the next blocking point too.
        using var entered = new ManualResetEventSlim();
        Connection? opened = null;
        var sawIt = false;
        var g = Green.Spawn(() =>
        {
            Green.RunBlocking(() =>
            {
                entered.Set();
                Thread.Sleep(200);
                opened = new Connection();
            });
            using var c = opened!;
            sawIt = true;
            Green.Sleep(10_000);
        });
        Green.Wait(Task.Run(() => entered.Wait()));
        g.Kill(block: true);
        Assert.Multiple(() =>
        {
            Assert.That(sawIt, Is.True);
            Assert.That(opened!.Disposed, Is.True);
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        });
    }

    [Test]
    public void AKillPendingBeforeTheCallIsRaisedBeforeItStarts()
    {
        var ran = false;
        var g = Green.Spawn(() =>
        {
            try
            {
                Green.Sleep(10_000);
            }
            catch (GreenletExit)
            {
            }
            Green.RunBlocking(() => ran = true); // a killed greenlet: a cancellation point raises the kill again
        });
        Green.Sleep(0);
        g.Kill(block: true);
        Assert.Multiple(() =>
        {
            Assert.That(ran, Is.False, "nothing started");
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        });
    }

    [Test]
    public void ACallThatThrowsWhileAKillArrivesThrowsItsOwnException()
    {
        using var entered = new ManualResetEventSlim();
        Exception? caught = null;
        var g = Green.Spawn(() =>
        {
            try
            {
                Green.RunBlocking<int>(() =>
                {
                    entered.Set();
                    Thread.Sleep(200);
                    throw new FormatException("bad");
                });
            }
            catch (Exception e)
            {
                caught = e;
            }
            Green.Sleep(10_000);
        });
        Green.Wait(Task.Run(() => entered.Wait()));
        g.Kill(block: true);
        Assert.Multiple(() =>
        {
            Assert.That(caught, Is.TypeOf<FormatException>());
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>(), "the kill is raised at the next blocking point");
        });
    }

    [Test]
    public void ALoopOfCallsEndsOnAKill()
    {
        var calls = 0;
        var g = Green.Spawn(() =>
        {
            while (true) Green.RunBlocking(() => { Interlocked.Increment(ref calls); Thread.Sleep(20); });
        });
        Green.Sleep(100);
        g.Kill(block: true, timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True, "the next call raises the kill before it starts");
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(Volatile.Read(ref calls), Is.GreaterThan(0));
    }

    [Test]
    public void ATimeoutThatExpiresDuringTheCallIsRaisedAtTheNextBlockingPointOfItsScope()
    {
        // gevent's Timeout interrupts only a blocking point: a body that returns before it blocks again returns its
        // value, and the expired timeout ends with its scope. One that blocks again raises it there.
        var returned = Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => Green.RunBlocking(() =>
        {
            Thread.Sleep(200);
            return 42;
        }));
        Assert.That(returned, Is.EqualTo(42), "the body returned before its next blocking point");

        Connection? opened = null;
        Assert.Throws<GreenTimeoutException>(() => Green.WithTimeout(TimeSpan.FromMilliseconds(20), () =>
        {
            using var c = Green.RunBlocking(() =>
            {
                Thread.Sleep(200);
                return opened = new Connection();
            });
            Green.RunBlocking(() => Assert.Fail("the expired timeout is raised before the next call starts"));
        }));
        Assert.That(opened!.Disposed, Is.True, "the connection reached the using");

        Assert.That(Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => Green.RunBlocking(() =>
        {
            Thread.Sleep(200);
            return 1;
        }), timeoutValue: -1), Is.EqualTo(1));
        Green.Sleep(1); // nothing stays pending once the scope is over
    }

    [Test]
    public void GreenletOperationsInsideTheCallThrowAClearError()
    {
        var g = Green.Spawn(() => Green.RunBlocking(() => Green.Sleep(1)));
        g.Join();
        Assert.That(g.Exception, Is.TypeOf<InvalidOperationException>());
        Assert.That(g.Exception!.Message, Does.Contain("RunBlocking"));
    }

    [Test]
    public void OffAHubTheCallSimplyRuns()
    {
        var value = Task.Run(() => Green.RunBlocking(() => Environment.CurrentManagedThreadId)).Result;
        Assert.That(value, Is.Not.Zero);
    }

    [Test]
    public void TheMainGreenletMayReleaseTheBatonToo()
    {
        var ran = false;
        Green.Spawn(() => ran = true);
        Green.RunBlocking(() => Thread.Sleep(100));
        Assert.That(ran, Is.True, "the spawned greenlet ran while main blocked");
    }

    [Test]
    public void AStacklessGreenletRunsTheCallOnThePool()
    {
        var g = Green.SpawnAsync(async () =>
        {
            await Task.Yield();
            return Green.RunBlocking(() => Thread.CurrentThread.IsThreadPoolThread);
        });
        Assert.That(g.Get(), Is.True);
    }

    [Test]
    public void ManyReleasesInARowKeepOrderAndLoseNothing()
    {
        var log = new List<int>();
        var all = Enumerable.Range(0, 50).Select(i => Green.Spawn(() =>
        {
            for (int k = 0; k < 20; k++) Green.RunBlocking(() => Thread.SpinWait(100));
            log.Add(i);
        })).ToList();
        Green.JoinAll(all);
        Assert.That(log.Order(), Is.EqualTo(Enumerable.Range(0, 50)));
        Assert.That(Hub.AliveCount, Is.Zero);
    }
}

/// <summary><see cref="Green.RunBlocking(Action)"/> when every carrier the hub may use is taken (two here: the main
/// greenlet's thread counts against no cap).</summary>
public class RunBlockingAtTheCarrierCapTests : HubTest
{
    protected override HubOptions CreateOptions(Microsoft.Extensions.Logging.ILoggerFactory loggerFactory) =>
        new() { LoggerFactory = loggerFactory, MaxCarriers = 2 };

    [Test]
    public void AParkedGreenletsThreadRunsTheHubMeanwhile()
    {
        // A keeps a carrier parked in a sleep while it holds a "row lock"; B keeps the other and waits for that lock in a
        // released call. Run with the baton held, B's call kept A's sleep from ever ending: the hub stopped until B's
        // own timeout (an ODBC UPDATE's 5 s CommandTimeout).
        using var rowFree = new ManualResetEventSlim();
        var a = Green.Spawn(() =>
        {
            Green.Sleep(300);
            rowFree.Set();
        }, "holder");
        var b = Green.Spawn(() => Green.RunBlocking(() => rowFree.Wait(TimeSpan.FromSeconds(10))), "waiter");
        Green.JoinAll([a, b]);
        Assert.That(b.Get(), Is.True, "the holder ran while the call waited, and freed the lock");
    }

    /// <summary>Two greenlets each keep a carrier inside a released call waiting for its event; the main greenlet is
    /// left with no carrier and no parked greenlet to stand in.</summary>
    private static List<Greenlet> TwoCallsTakingEveryCarrier(ManualResetEventSlim first, ManualResetEventSlim second, Action? afterFirst = null)
    {
        using var entered = new CountdownEvent(2);
        var all = new List<Greenlet>
        {
            Green.Spawn(() =>
            {
                Green.RunBlocking(() => { entered.Signal(); first.Wait(TimeSpan.FromSeconds(10)); });
                afterFirst?.Invoke();
            }, "first"),
            Green.Spawn(() => Green.RunBlocking(() => { entered.Signal(); second.Wait(TimeSpan.FromSeconds(10)); }), "second"),
        };
        Green.Wait(Task.Run(() => entered.Wait(TimeSpan.FromSeconds(10))));
        return all;
    }

    [Test]
    public void WithNoThreadToRunTheHubTheCallWaitsForOneAsACancellationPoint()
    {
        using var first = new ManualResetEventSlim();
        using var second = new ManualResetEventSlim();
        var others = TwoCallsTakingEveryCarrier(first, second);
        var ran = false;
        Assert.Throws<GreenTimeoutException>(() => Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => Green.RunBlocking(() => ran = true)),
            "it waited for a carrier, and the timeout ended the wait");
        Assert.That(ran, Is.False, "nothing started");
        first.Set();
        second.Set();
        Assert.That(Green.JoinAll(others, TimeSpan.FromSeconds(10)), Has.Count.EqualTo(2));
        Assert.That(Green.RunBlocking(() => 42), Is.EqualTo(42), "carriers are back");
    }

    /// <summary>While a call waits for a carrier, every scheduler step asks whether a parked greenlet's thread can now stand
    /// in. The answer walked every greenlet alive: 20 000 callbacks with 20 000 stackless greenlets alive took 4.6 s (230 µs a
    /// step), against milliseconds with nobody waiting. The walk that found none now holds until a greenlet parks on
    /// its carrier. The bound is far above what the steps cost now and far below what they cost before.</summary>
    [Test]
    public void SchedulerStepsStayCheapWhileACallWaitsForACarrierAmongManyGreenlets()
    {
        const int Alive = 20_000, Posts = 20_000;
        var release = new TaskCompletionSource();
        var alive = new List<Greenlet>();
        for (int i = 0; i < Alive; i++) alive.Add(Green.SpawnAsync(() => release.Task));
        Green.Sleep(50); // all started, awaiting: alive, and no stand-in (stackless)
        using var first = new ManualResetEventSlim();
        using var second = new ManualResetEventSlim();
        var others = TwoCallsTakingEveryCarrier(first, second);
        TimeSpan elapsed = TimeSpan.MaxValue;
        bool waited = false;
        var poster = Task.Run(() =>
        {
            Thread.Sleep(200); // the main greenlet waits for a carrier by now
            using var done = new ManualResetEventSlim();
            int count = 0;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < Posts; i++) Hub.Post(() => { if (++count == Posts) done.Set(); });
            if (done.Wait(TimeSpan.FromSeconds(60))) elapsed = clock.Elapsed;
            first.Set();
            second.Set();
        });
        Green.RunBlocking(() => waited = first.IsSet);
        Green.Wait(poster);
        Assert.That(Green.JoinAll(others, TimeSpan.FromSeconds(10)), Has.Count.EqualTo(2));
        release.SetResult();
        Assert.That(Green.JoinAll(alive, TimeSpan.FromSeconds(30)), Has.Count.EqualTo(Alive));
        Assert.Multiple(() =>
        {
            Assert.That(waited, Is.True, "the call waited for a carrier while the callbacks ran");
            Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(1.5)), "each step walked every greenlet alive");
        });
    }

    [Test]
    public void WaitersReleaseInArrivalOrderOnceAThreadCanRunTheHub()
    {
        using var first = new ManualResetEventSlim();
        using var second = new ManualResetEventSlim();
        var order = new System.Collections.Concurrent.ConcurrentQueue<string>();
        // "first" calls again once its call returned: the main greenlet waits for a carrier since before, so it goes
        // first, with first's parked thread to run the hub.
        var others = TwoCallsTakingEveryCarrier(first, second, () => Green.RunBlocking(() => order.Enqueue("first, again")));
        var setter = Task.Run(async () =>
        {
            await Task.Delay(100);
            first.Set();
        });
        bool waited = false;
        Green.RunBlocking(() =>
        {
            waited = first.IsSet;
            order.Enqueue("main");
            Thread.Sleep(50);
        });
        second.Set();
        Assert.That(Green.JoinAll(others, TimeSpan.FromSeconds(10)), Has.Count.EqualTo(2));
        Green.Wait(setter);
        Assert.Multiple(() =>
        {
            Assert.That(waited, Is.True, "the call waited for a carrier (with the baton held it ran at once)");
            Assert.That(order, Is.EqualTo(new[] { "main", "first, again" }), "the one that waited longest went first");
        });
    }
}
