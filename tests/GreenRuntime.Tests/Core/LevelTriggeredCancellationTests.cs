using System.Diagnostics;

namespace GreenRuntime.Tests.Core;

/// <summary>
/// Cancellation is a state: once killed, every blocking point raises the kill again until the greenlet ends; an
/// expired GreenTimeout raises at every blocking point inside its scope until the scope is disposed.
/// </summary>
public class LevelTriggeredCancellationTests : HubTest
{
    [Test]
    public void TheCatchEverythingLegacyLoopEndsSoonAfterKill()
    {
        int iterations = 0, swallowed = 0;
        var g = Green.Spawn(() =>
        {
            while (true)
            {
                try
                {
                    iterations++;
                    Green.Sleep(100);
                }
                catch (Exception)
                {
                    swallowed++;
                    Green.Sleep(100); // raises the kill again, out of the catch and out of the loop
                }
            }
        });
        Green.Sleep(150);
        var watch = Stopwatch.StartNew();
        g.Kill(); // block = true: returns once it is dead
        watch.Stop();
        Assert.That(g.Dead, Is.True);
        Assert.That(g.Successful, Is.True, "a GreenletExit kill counts as success");
        Assert.That(swallowed, Is.EqualTo(1), "the first delivery was swallowed once, the second ended it");
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromMilliseconds(250)));
    }

    [Test]
    public void ALoopThatSwallowsTheKillWithoutEverParkingStillLetsTheOthersRun()
    {
        // A retry loop whose catch neither sleeps nor rethrows (a driver's exception wraps the kill: catch
        // (NpgsqlException) { continue; }) meets the kill again at once at its next blocking point, again and again,
        // without parking. It still gives the others a turn when the blocking monitor asks, as a loop of calls that
        // never wait does. On a hub of its own thread, so that a loop holding the baton cannot hang the test run; a
        // plain thread ends the loop.
        int ticksDuringSpin = -1, swallowed = 0;
        Exception? failure = null;
        var runner = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
                int ticks = 0;
                var stop = new ManualResetEventSlim(); // set by a plain thread: Wait(0) below never blocks
                var ticker = Green.Spawn(() => { while (true) { Green.Sleep(1); ticks++; } });
                var ev = new Event();
                var spinner = Green.Spawn(() =>
                {
                    while (!stop.IsSet)
                    {
                        try
                        {
                            ev.Wait();
                        }
                        catch (GreenletExit)
                        {
                            swallowed++;
                        }
                    }
                });
                Green.Sleep(20);
                int before = ticks;
                spinner.Kill(block: false);
                new Thread(() => { Thread.Sleep(1500); stop.Set(); }) { IsBackground = true }.Start();
                spinner.Join();
                ticksDuringSpin = ticks - before;
                ticker.Kill();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        runner.Start();
        Assert.That(runner.Join(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(failure, Is.Null);
        Assert.That(swallowed, Is.GreaterThan(100), "the loop met the kill again and again");
        Assert.That(ticksDuringSpin, Is.GreaterThan(5), "the ticker had turns while the loop spun");
    }

    [Test]
    public void EveryKindOfBlockingPointRaisesTheKillAgain()
    {
        var raised = new List<string>();
        var ev = new Event();
        var q = new GreenQueue<int>();
        var other = Green.Spawn(() => Green.Sleep(10_000));
        var g = Green.Spawn(() =>
        {
            void Try(string what, Action blocking)
            {
                try { blocking(); }
                catch (GreenletExit) { raised.Add(what); }
            }
            Try("first", () => Green.Sleep(10_000));
            Try("sleep", () => Green.Sleep(10));
            Try("sleep0", () => Green.Sleep(0));
            Try("yield", Green.Yield);
            Try("event", () => ev.Wait());
            Try("queue", () => q.Get());
            Try("join", () => other.Join());
            Try("task", () => Green.Wait(Task.Delay(10_000)));
            Try("timeout-wait", () => ev.Wait(TimeSpan.FromSeconds(5)));
        });
        Green.Sleep(10);
        g.Kill();
        Assert.That(raised, Is.EqualTo(new[] { "first", "sleep", "sleep0", "yield", "event", "queue", "join", "task", "timeout-wait" }));
        Assert.That(g.Dead, Is.True);
        other.Kill();
    }

    [Test]
    public void AKillWithAnotherExceptionIsRaisedAtEveryBlockingPointAndFailsTheGreenlet()
    {
        int caught = 0;
        var g = Green.Spawn(() =>
        {
            for (int i = 0; i < 3; i++)
            {
                try { Green.Sleep(1000); }
                catch (InvalidOperationException) { caught++; }
            }
            Green.Sleep(1000);
        });
        Green.Sleep(1);
        g.Kill(new InvalidOperationException("stop"));
        Assert.That(caught, Is.EqualTo(3));
        Assert.That(g.Exception, Is.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public void AKilledGreenletStillRunsCodeThatDoesNotBlock()
    {
        var after = false;
        var g = Green.Spawn(() =>
        {
            try { Green.Sleep(1000); }
            catch (GreenletExit) { after = true; } // cleanup without blocking is fine
        });
        Green.Sleep(1);
        g.Kill();
        Assert.That(after, Is.True);
        Assert.That(g.Successful, Is.True);
    }

    [Test]
    public void TheGreenletsCancellationTokenFiresOnKill()
    {
        CancellationToken token = default;
        bool cancelledInside = false;
        var g = Green.Spawn(() =>
        {
            token = Green.Current.CancellationToken;
            try { Green.Sleep(10_000); }
            finally { cancelledInside = token.IsCancellationRequested; }
        });
        Green.Sleep(1);
        Assert.That(token.IsCancellationRequested, Is.False);
        g.Kill();
        Assert.That(token.IsCancellationRequested, Is.True);
        Assert.That(cancelledInside, Is.True, "cancelled before the greenlet saw the kill");
        var unstarted = new Greenlet(() => { });
        unstarted.Kill();
        Assert.That(unstarted.CancellationToken.IsCancellationRequested, Is.True, "asked after the kill");
        var finished = Green.Spawn(() => { });
        finished.Join();
        Assert.That(finished.CancellationToken.IsCancellationRequested, Is.False);
    }

    [Test]
    public void AKilledGreenWaitLetsATaskGivenTheGreenletsTokenEndBeforeUnwinding()
    {
        // As a thread whose token is cancelled stays in its wait: a query given the token reads its connection until the
        // server confirms the cancel, and the greenlet's cleanup (the connection's Dispose) must not run beside it.
        bool operationEnded = false, endedBeforeCleanup = false;
        async Task Operation(CancellationToken token)
        {
            try
            {
                await Task.Delay(Timeout.Infinite, token);
            }
            catch (OperationCanceledException)
            {
                await Task.Delay(200); // the server's answer to the cancel
                operationEnded = true;
                throw;
            }
        }
        var g = Green.Spawn(() =>
        {
            try
            {
                Green.Wait(Operation(Green.Current.CancellationToken));
            }
            finally
            {
                endedBeforeCleanup = operationEnded;
            }
        });
        Green.Sleep(50);
        g.Kill();
        Assert.That(((Greenlet)g).Value, Is.InstanceOf<GreenletExit>());
        Assert.That(endedBeforeCleanup, Is.True, "the operation ended before the greenlet's finally ran");
    }

    [Test]
    public void AStacklessGreenletAwaitingAForeignTaskWithItsTokenEndsOnKill()
    {
        var g = Green.SpawnAsync(async () =>
        {
            await Task.Delay(30_000, Green.Current.CancellationToken);
        });
        Green.Sleep(10);
        var watch = Stopwatch.StartNew();
        g.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public void KillAndJoinOfAStacklessGreenletReturnAfterItsFinallyBlocksRan()
    {
        var log = new List<string>();
        var ev = new Event();
        var g = Green.SpawnAsync(async () =>
        {
            try
            {
                await ev.WaitAsync();
            }
            finally
            {
                log.Add("finally 1");
                await Task.Yield();
                log.Add("finally 2");
            }
        });
        Green.Sleep(1);
        g.Kill();
        log.Add("kill returned");
        Assert.That(log, Is.EqualTo(new[] { "finally 1", "finally 2", "kill returned" }));
        Assert.That(g.Successful, Is.True);
    }

    [Test]
    public void AStacklessGreenletCannotSwallowTheKill()
    {
        var ev = new Event();
        int swallowed = 0;
        var g = Green.SpawnAsync(async () =>
        {
            while (true)
            {
                try { await ev.WaitAsync(); }
                catch (Exception) { swallowed++; }
                if (swallowed > 100) return; // would spin forever if the kill were an edge
            }
        });
        Green.Sleep(1);
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(swallowed, Is.GreaterThan(100), "each await of a primitive raised the kill again");
    }

    [Test]
    public void AnExpiredTimeoutRaisesAtEveryBlockingPointUntilItsScopeIsDisposed()
    {
        var watch = Stopwatch.StartNew();
        var swallowed = false;
        GreenTimeoutException? left = null;
        TimeSpan elapsed = default;
        Green.Spawn(() =>
        {
            try
            {
                using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(100));
                try { Green.Sleep(1000); }
                catch (TimeoutException) { swallowed = true; }
                Green.Sleep(1000); // raises at once: the scope has expired
            }
            catch (GreenTimeoutException e)
            {
                left = e;
            }
            elapsed = watch.Elapsed;
            Green.Sleep(1); // outside the scope: blocks normally
        }).Join();
        Assert.That(swallowed, Is.True);
        Assert.That(left, Is.Not.Null);
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromMilliseconds(900)), "left the scope about 100 ms in, not after the second Sleep(1000)");
    }

    [Test]
    public void AnOuterExpiredScopeWinsOverAnInnerOne()
    {
        GreenTimeout? outer = null, inner = null;
        var raisedBy = new List<GreenTimeout?>();
        Green.Spawn(() =>
        {
            try
            {
                using (outer = GreenTimeout.Start(TimeSpan.FromMilliseconds(20)))
                {
                    using (inner = GreenTimeout.Start(TimeSpan.FromMilliseconds(40)))
                    {
                        try { Green.Sleep(1000); }
                        catch (GreenTimeoutException e) { raisedBy.Add(e.Scope); }
                        Green.Sleep(50); // the inner one expires meanwhile? no: the outer already has, it raises at once
                    }
                }
            }
            catch (GreenTimeoutException e)
            {
                raisedBy.Add(e.Scope);
            }
        }).Join();
        Assert.That(raisedBy, Is.EqualTo(new[] { outer, outer }));
    }

    [Test]
    public void AnExpiredInnerScopeDisposedLetsTheGreenletBlockAgain()
    {
        bool blockedAfter = false;
        Green.Spawn(() =>
        {
            using (GreenTimeout.Start(TimeSpan.FromSeconds(5)))
            {
                var inner = GreenTimeout.Start(TimeSpan.FromMilliseconds(10));
                try { Green.Sleep(1000); }
                catch (GreenTimeoutException e) when (e.Scope == inner) { }
                Assert.Throws<GreenTimeoutException>(() => Green.Sleep(1));
                inner.Dispose();
                Green.Sleep(5);
                blockedAfter = true;
            }
        }).Join();
        Assert.That(blockedAfter, Is.True);
    }

    [Test]
    public void TheTimeoutTokenFiresWhenTheTimeoutExpires()
    {
        bool cancelled = false, early = true;
        Green.Spawn(() =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(30));
            var token = t.Token;
            early = token.IsCancellationRequested;
            try { Green.Wait(Task.Delay(10_000, token)); }
            catch (GreenTimeoutException) { }
            catch (OperationCanceledException) { }
            cancelled = token.IsCancellationRequested;
        }).Join();
        Assert.That(early, Is.False);
        Assert.That(cancelled, Is.True);
    }

    [Test]
    public void GreenWaitOnAForeignTaskStopsWhenTheGreenletIsKilled()
    {
        var never = new TaskCompletionSource();
        var g = Green.Spawn(() =>
        {
            try { Green.Wait(never.Task); }
            catch (Exception) { }
            Green.Wait(never.Task); // raises the kill at once
        });
        Green.Sleep(1);
        g.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
    }

    [Test]
    public void AShieldLetsCleanupBlockAndTheKillIsRaisedAfterIt()
    {
        var log = new List<string>();
        var g = Green.Spawn(() =>
        {
            try
            {
                Green.Sleep(10_000);
            }
            catch (GreenletExit)
            {
                using (Green.Shield())
                {
                    Green.Sleep(20); // blocks normally
                    log.Add("cleaned up");
                }
                try { Green.Sleep(1); }
                catch (GreenletExit) { log.Add("raised again after the shield"); }
            }
        });
        Green.Sleep(1);
        g.Kill();
        Assert.That(log, Is.EqualTo(new[] { "cleaned up", "raised again after the shield" }));
    }

    [Test]
    public void AKillThatLandsInsideAShieldIsHeldUntilItCloses()
    {
        var log = new List<string>();
        var g = Green.Spawn(() =>
        {
            using (Green.Shield())
            {
                Green.Sleep(50); // the kill lands here and does not end the sleep
                log.Add("slept");
            }
            try { Green.Sleep(1000); }
            catch (GreenletExit) { log.Add("killed"); throw; }
        });
        Green.Sleep(5);
        g.Kill();
        Assert.That(log, Is.EqualTo(new[] { "slept", "killed" }));
    }
}
