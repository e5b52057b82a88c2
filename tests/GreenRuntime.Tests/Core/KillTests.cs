namespace GreenRuntime.Tests.Core;

/// <summary>Kill variants (gevent's test__greenlet.py kill cases).</summary>
public class KillTests : HubTest
{
    [Test]
    public void KillBeforeStartNeverRunsTheBodyAndFiresLinksOnce()
    {
        var ran = false;
        var links = 0;
        var g = new Greenlet(() => ran = true);
        g.Link(_ => links++);
        g.Kill();
        g.Kill();
        Green.Sleep(10);
        Assert.Multiple(() =>
        {
            Assert.That(ran, Is.False);
            Assert.That(links, Is.EqualTo(1));
            Assert.That(g.Dead, Is.True);
            Assert.That(g.Successful, Is.True);
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        });
    }

    [Test]
    public void AnotherGreenletsKillThatEndsAGreenletIsItsFailureButItsOwnOrOneItThrowsIsSuccess()
    {
        // A single-flight factory runs on the first caller's greenlet and every waiter rethrows its outcome: when that
        // greenlet is killed, the waiters end with its GreenletExit. They were not killed; they failed. Counted as a
        // quiet, successful end, the failure was hidden from Get, links and JoinAll(raiseError).
        GreenletExit? othersKill = null;
        var runner = Green.Spawn(() =>
        {
            try
            {
                Green.Sleep(10_000);
            }
            catch (GreenletExit e)
            {
                othersKill = e;
                throw;
            }
        });
        Green.Sleep(10);
        runner.Kill();
        var waiter = Green.Spawn(() => throw othersKill!);
        var quitter = Green.Spawn(() => throw new GreenletExit("done here")); // gevent's raise GreenletExit: a quiet end
        Green.JoinAll([waiter, quitter]);
        Assert.Multiple(() =>
        {
            Assert.That(runner.Successful, Is.True, "the killed greenlet's own kill");
            Assert.That(waiter.Successful, Is.False, "another greenlet's kill is a failure");
            Assert.That(waiter.Exception, Is.SameAs(othersKill));
            Assert.That(() => waiter.Get(), Throws.TypeOf<GreenletExit>());
            Assert.That(quitter.Successful, Is.True, "a GreenletExit the greenlet throws itself");
            Assert.That(quitter.Value, Is.InstanceOf<GreenletExit>());
        });
    }

    [Test]
    public void KillAfterSpawnBeforeItRanNeverRunsTheBody()
    {
        var ran = false;
        var g = Green.Spawn(() => ran = true);
        g.Kill();
        Green.Sleep(0);
        Assert.That(ran, Is.False);
        Assert.That(g.Dead, Is.True);
    }

    [Test]
    public void KillWhileSleepingRaisesGreenletExitAndCountsAsSuccess()
    {
        var reachedFinally = false;
        var g = Green.Spawn(() =>
        {
            try { Green.Sleep(10_000); }
            finally { reachedFinally = true; }
        });
        Green.Sleep(0);
        Assert.That(g.State, Is.EqualTo(GreenletState.Parked));
        Assert.That(g.WaitReason, Is.EqualTo(WaitReason.Sleep));
        g.Kill();
        Assert.Multiple(() =>
        {
            Assert.That(g.Dead, Is.True, "Kill(block: true) returns once the target is dead");
            Assert.That(reachedFinally, Is.True);
            Assert.That(g.Successful, Is.True);
            Assert.That(g.Exception, Is.Null);
        });
    }

    [Test]
    public void KillWithAnotherExceptionMakesItAFailure()
    {
        var g = Green.Spawn(() => Green.Sleep(10_000));
        Green.Sleep(0);
        var error = new ApplicationException("stop");
        g.Kill(error);
        Assert.That(g.Successful, Is.False);
        Assert.That(g.Exception, Is.SameAs(error));
        Assert.Throws<ApplicationException>(() => g.Get());
    }

    [Test]
    public void NonBlockingKillReturnsBeforeTheTargetDies()
    {
        var g = Green.Spawn(() => Green.Sleep(10_000));
        Green.Sleep(0);
        g.Kill(block: false);
        Assert.That(g.Dead, Is.False);
        g.Join();
        Assert.That(g.Dead, Is.True);
    }

    [Test]
    public void AGreenletMayCatchTheKillAndFinishItsWorkWithoutBlocking()
    {
        var cleanupDone = new Event();
        var g = Green.Spawn(() =>
        {
            try { Green.Sleep(10_000); }
            catch (GreenletExit)
            {
                // Blocking here would raise the kill again: blocking cleanup goes to a greenlet of its own.
                Assert.Throws<GreenletExit>(() => Green.Sleep(5));
                Green.Spawn(() => { Green.Sleep(5); cleanupDone.Set(); });
                return 5;
            }
            return 0;
        });
        Green.Sleep(0);
        g.Kill();
        Assert.That(g.Get(), Is.EqualTo(5));
        Assert.That(cleanupDone.Wait(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public void KillWakesAGreenletBlockedInJoinAndInWait()
    {
        var other = Green.Spawn(() => Green.Sleep(10_000));
        var joiner = Green.Spawn(() => other.Join());
        var waiter = Green.Spawn(() => Green.Wait(new TaskCompletionSource().Task));
        Green.Sleep(0);
        Green.KillAll([joiner, waiter]);
        Assert.That(joiner.Dead && waiter.Dead, Is.True);
        Assert.That(other.Dead, Is.False);
        other.Kill();
    }

    [Test]
    public void KillingADeadGreenletIsHarmless()
    {
        var g = Green.Spawn(() => 3);
        g.Join();
        g.Kill();
        Assert.That(g.Get(), Is.EqualTo(3));
    }

    [Test]
    public void KillFromAnotherThreadIsSafe()
    {
        var g = Green.Spawn(() => Green.Sleep(10_000));
        Green.Sleep(0);
        var killer = new Thread(() => g.Kill());
        killer.Start();
        g.Join(TimeSpan.FromSeconds(10));
        killer.Join();
        Assert.That(g.Dead, Is.True);
    }

    [Test]
    public void KillingItselfThrowsAtOnce()
    {
        var after = false;
        var g = Green.Spawn(() =>
        {
            Green.Current.Kill();
            after = true;
        });
        g.Join();
        Assert.That(after, Is.False);
        Assert.That(g.Successful, Is.True);
    }

    [Test]
    public void KillAllWithTimeoutRaisesIfOneIsNotDeadInTime()
    {
        // A stackless greenlet awaiting a foreign task stays alive until that task completes (its finally blocks run then).
        var release = new TaskCompletionSource();
        var stubborn = Green.SpawnAsync(async () =>
        {
            try { await release.Task; }
            catch (Exception) { }
        });
        var meek = Green.Spawn(() => Green.Sleep(10_000));
        Green.Sleep(0);
        var e = Assert.Throws<TimeoutException>(() => Green.KillAll([stubborn, meek], timeout: TimeSpan.FromMilliseconds(50)));
        Assert.That(e!.Message, Does.Contain(stubborn.ToString()));
        Assert.That(meek.Dead, Is.True);
        Assert.That(stubborn.Dead, Is.False);
        release.SetResult();
        stubborn.Join();
        Assert.That(stubborn.Dead, Is.True);
    }
}
