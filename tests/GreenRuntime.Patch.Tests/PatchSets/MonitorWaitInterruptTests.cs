using System.Diagnostics;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A kill or timeout interrupts a greenlet's <c>Monitor.Wait</c> (run with the baton released) at once, raised
/// inside its <c>lock</c> block with the monitor held, and never leaves a stray interrupt on the carrier thread.
/// This is the wait of client libraries' sync calls (StackExchange.Redis), so a timeout around such a call
/// must not wait for the server's reply.
/// </summary>
public class MonitorWaitInterruptTests : PatchedHubTest
{
    [Test]
    public void AKillInterruptsAnUnboundedWaitAndTheLocksFinallyReleasesTheMonitor() =>
        KillInterruptsAnUnboundedWait(body => Green.Spawn(body));

    [Test]
    public void AKillInterruptsTheWaitOfAStepOfAStacklessGreenlet() =>
        KillInterruptsAnUnboundedWait(body => Green.SpawnAsync(async () =>
        {
            await Task.Yield(); // the wait runs in a step posted to the greenlet
            body();
        }));

    /// <summary>A greenlet made by <paramref name="spawn"/> waits in Monitor.Wait with nobody to pulse it; a kill ends the
    /// wait at once, raised with the monitor held, and the lock's finally releases it.</summary>
    private static void KillInterruptsAnUnboundedWait(Func<Action, Greenlet> spawn)
    {
        var gate = new object();
        bool heldWhenRaised = false;
        var victim = spawn(() =>
        {
            lock (gate)
            {
                try
                {
                    Monitor.Wait(gate);
                }
                catch (GreenletExit)
                {
                    heldWhenRaised = Monitor.IsEntered(gate);
                    throw;
                }
            }
        });
        Green.Sleep(50);
        var watch = Stopwatch.StartNew();
        victim.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.Multiple(() =>
        {
            Assert.That(victim.Dead, Is.True);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)));
            Assert.That(victim.Value, Is.InstanceOf<GreenletExit>());
            Assert.That(heldWhenRaised, Is.True, "raised after the wait re-acquired the monitor");
        });
        Assert.That(Monitor.TryEnter(gate), Is.True, "the lock statement's finally released the monitor");
        Monitor.Exit(gate);
    }

    [Test]
    public void AKilledWaitWhoseMonitorAThreadTookMeanwhileRaisesTheKillOnceItHoldsTheMonitorAgain()
    {
        // The interrupted wait re-acquires the monitor on the greenlet's thread and gives it back there; a plain thread takes
        // it before the greenlet has the baton. The greenlet waits for it (a second kill does not end that wait) and the
        // kill is raised inside the lock block, with the monitor held, after the thread let go.
        var gate = new object();
        var order = new List<string>();
        using var killed = new ManualResetEventSlim();
        var victim = Green.Spawn(() =>
        {
            lock (gate)
            {
                try
                {
                    Monitor.Wait(gate);
                }
                catch (GreenletExit)
                {
                    lock (order) order.Add($"raised, held {Monitor.IsEntered(gate)}");
                    throw;
                }
            }
        });
        var taker = new Thread(() =>
        {
            killed.Wait();
            Thread.Sleep(20); // the victim's thread has taken the monitor back and given it away by now
            lock (gate)
            {
                lock (order) order.Add("thread holds");
                Thread.Sleep(200);
                lock (order) order.Add("thread lets go");
            }
        });
        taker.Start();
        Green.Sleep(50); // the victim waits
        victim.Kill(block: false);
        killed.Set();
        var spin = Stopwatch.StartNew();
        while (spin.ElapsedMilliseconds < 100) { } // keeps the baton while the thread takes the monitor
        Green.Sleep(50); // the victim waits for the monitor now
        victim.Kill(block: false);
        victim.Join(TimeSpan.FromSeconds(10));
        taker.Join();
        Assert.Multiple(() =>
        {
            Assert.That(victim.Value, Is.InstanceOf<GreenletExit>());
            Assert.That(order, Is.EqualTo(new[] { "thread holds", "thread lets go", "raised, held True" }));
        });
        Assert.That(Monitor.TryEnter(gate), Is.True, "the lock statement's finally released the monitor");
        Monitor.Exit(gate);
    }

    [Test]
    public void ATimeoutInterruptsAWaitWithATimeout()
    {
        var gate = new object();
        var watch = Stopwatch.StartNew();
        var result = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(100), () =>
        {
            lock (gate) return Monitor.Wait(gate, 10_000) ? "pulsed" : "wait timed out";
        }, "greenlet timed out")).Get();
        Assert.That(result, Is.EqualTo("greenlet timed out"));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "the 10 s wait was not interrupted");
    }

    [Test]
    public void AWaitThatIsPulsedBeforeAnyKillReturnsNormally()
    {
        var gate = new object();
        var waiter = Green.Spawn(() =>
        {
            lock (gate) return Monitor.Wait(gate, 10_000);
        });
        Green.Sleep(50);
        var pulser = new Thread(() => { lock (gate) Monitor.PulseAll(gate); });
        pulser.Start();
        pulser.Join();
        Assert.That(waiter.Get(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public void KillsRacingWithReturningWaitsLeaveNoInterruptPendingOnCarriers()
    {
        // Waits of 0–2 ms, killed 0–3 ms after they start: many kills land just as a wait returns by itself.
        // An interrupt left pending on the carrier would surface as a ThreadInterruptedException in a later
        // greenlet's released wait on that thread (here: a Monitor.Wait that times out, a contended lock).
        var random = new Random(13);
        var gate = new object();
        int stray = 0, killed = 0;
        for (int round = 0; round < 300; round++)
        {
            var victim = Green.Spawn(() =>
            {
                lock (gate)
                {
                    while (true) Monitor.Wait(gate, random.Next(0, 3));
                }
            });
            Green.Sleep(random.Next(0, 4));
            victim.Kill();
            if (victim.Value is GreenletExit) killed++;
            else if (victim.Exception is ThreadInterruptedException) stray++;

            var after = Green.Spawn(() =>
            {
                try
                {
                    lock (gate) Monitor.Wait(gate, 1);
                    return 0;
                }
                catch (ThreadInterruptedException)
                {
                    return 1;
                }
            });
            stray += after.Get(TimeSpan.FromSeconds(5));
        }
        Assert.That(stray, Is.Zero, "an interrupt leaked to a later wait");
        Assert.That(killed, Is.EqualTo(300));
    }

    [Test]
    public void AnInterruptFromSomeoneElseStillReachesTheWaiter()
    {
        // Thread.Interrupt of the waiting thread by user code keeps its meaning: a ThreadInterruptedException.
        var gate = new object();
        Thread? carrier = null;
        var waiter = Green.Spawn(() =>
        {
            carrier = Thread.CurrentThread;
            lock (gate) Monitor.Wait(gate, 10_000);
        });
        Green.Sleep(50);
        carrier!.Interrupt();
        waiter.Join(TimeSpan.FromSeconds(5));
        Assert.That(waiter.Exception, Is.InstanceOf<ThreadInterruptedException>());
    }
}
