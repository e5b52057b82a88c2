using System.Diagnostics;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Unmodified legacy code under Patch.All(): a kill or an expired GreenTimeout raises at every patched blocking call,
/// so the catch-everything loops legacy code is full of cannot make a greenlet unkillable.
/// </summary>
[TestFixture]
public class LegacyCancellationTests : PatchedHubTest
{
    private static void Work() { }

    [Test]
    public void KillEndsTheCatchEverythingLoopWithinAQuarterSecond()
    {
        int swallowed = 0;
        var g = Green.Spawn(() =>
        {
            while (true)
            {
                try
                {
                    Work();
                    Thread.Sleep(100);
                }
                catch (Exception)
                {
                    swallowed++;
                    Thread.Sleep(100);
                }
            }
        });
        Green.Sleep(150);
        var watch = Stopwatch.StartNew();
        g.Kill();
        watch.Stop();
        Assert.That(g.Dead, Is.True);
        Assert.That(swallowed, Is.EqualTo(1));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromMilliseconds(250)));
    }

    [Test]
    public void AnExpiredTimeoutLeavesItsScopeAfterAboutItsDurationDespiteACatch()
    {
        var watch = Stopwatch.StartNew();
        TimeSpan left = default;
        bool caught = false;
        Green.Spawn(() =>
        {
            try
            {
                using (GreenTimeout.Start(TimeSpan.FromMilliseconds(100)))
                {
                    try { Thread.Sleep(1000); }
                    catch (TimeoutException) { caught = true; }
                    Thread.Sleep(1000);
                }
            }
            catch (GreenTimeoutException)
            {
            }
            left = watch.Elapsed;
        }).Join();
        Assert.That(caught, Is.True);
        Assert.That(left, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(90)));
        Assert.That(left, Is.LessThan(TimeSpan.FromMilliseconds(800)), "about 100 ms, not 1 s or 2 s");
    }

    [Test]
    public void TaskWaitsStopWhenTheGreenletIsKilled()
    {
        var never = new TaskCompletionSource();
        var g = Green.Spawn(() =>
        {
            try { never.Task.Wait(); }
            catch (Exception) { }
            never.Task.Wait(); // raises the kill at once
        });
        Green.Sleep(10);
        g.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
    }
}
