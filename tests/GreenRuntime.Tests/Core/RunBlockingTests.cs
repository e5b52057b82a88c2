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

    [Test]
    public void AKillArrivingMeanwhileIsRaisedWhenTheCallReturns()
    {
        using var entered = new ManualResetEventSlim();
        var finishedCall = false;
        var g = Green.Spawn(() =>
        {
            Green.RunBlocking(() =>
            {
                entered.Set();
                Thread.Sleep(200);
                finishedCall = true;
            });
            Assert.Fail("the kill must be raised when the call returns");
        });
        Green.Wait(Task.Run(() => entered.Wait()));
        g.Kill(block: true);
        Assert.Multiple(() =>
        {
            Assert.That(finishedCall, Is.True, "the call is not interrupted");
            Assert.That(g.Value, Is.InstanceOf<GreenletExit>(), "killed: the kill was raised after the call");
        });
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
