namespace GreenRuntime.Tests.Core;

/// <summary>Stackless greenlets and their interplay with stackful ones.</summary>
public class StacklessTests : HubTest
{
    [Test]
    public void AsyncBodyRunsOnTheHubAndReturnsItsValue()
    {
        var hubThreadsOnly = true;
        var g = Green.SpawnAsync(async () =>
        {
            for (int i = 0; i < 3; i++)
            {
                await Task.Yield();
                hubThreadsOnly &= Hub.Current == Hub;
            }
            return 9;
        });
        Assert.That(g.Get(), Is.EqualTo(9));
        Assert.That(hubThreadsOnly, Is.True);
        Assert.That(g.IsStackless, Is.True);
    }

    [Test]
    public void ContinuationsAfterRealAsyncWorkComeBackToTheHub()
    {
        var g = Green.SpawnAsync(async () =>
        {
            await Task.Delay(20);
            Assert.That(Green.Current.IsStackless, Is.True);
            await Task.Run(() => Thread.Sleep(5));
            return Hub.Current == Hub;
        });
        Assert.That(g.Get(), Is.True);
    }

    [Test]
    public void ALambdaThatOnlyThrowsIsAFailedGreenlet()
    {
        var g = Green.SpawnAsync(() => { throw new InvalidOperationException("sync throw"); });
        g.Join();
        Assert.That(g.Successful, Is.False);
        Assert.That(g.Exception!.Message, Is.EqualTo("sync throw"));
    }

    [Test]
    public void AnAsyncExceptionFailsTheGreenlet()
    {
        var g = Green.SpawnAsync(async () => { await Task.Yield(); throw new ArgumentException("async"); });
        var e = Assert.Throws<ArgumentException>(() => g.Get());
        Assert.That(e!.Message, Is.EqualTo("async"));
    }

    [Test]
    public void StacklessAndStackfulInterleaveUnderOneBaton()
    {
        var order = new List<string>();
        var stackful = Green.Spawn(() =>
        {
            for (int i = 0; i < 3; i++) { order.Add("sf" + i); Green.Sleep(0); }
        });
        var stackless = Green.SpawnAsync(async () =>
        {
            for (int i = 0; i < 3; i++) { order.Add("sl" + i); await Task.Yield(); }
        });
        Green.JoinAll([stackful, stackless]);
        Assert.That(order, Is.EqualTo(new[] { "sf0", "sl0", "sf1", "sl1", "sf2", "sl2" }));
    }

    [Test]
    public void AwaitAGreenletFromAStacklessOneAndJoinAStacklessOneFromAStackfulOne()
    {
        var stackful = Green.Spawn(() => { Green.Sleep(10); return 4; });
        var stackless = Green.SpawnAsync(async () => await stackful + 1);
        var joiner = Green.Spawn(() => stackless.Get() * 10);
        Assert.That(joiner.Get(), Is.EqualTo(50));
    }

    [Test]
    public void ABlockingCallInsideAStacklessGreenletIsStillCooperative()
    {
        var order = new List<string>();
        var blocking = Green.SpawnAsync(async () =>
        {
            await Task.Yield();
            order.Add("before sleep");
            Green.Sleep(30);
            order.Add("after sleep");
        });
        var other = Green.Spawn(() => { Green.Sleep(5); order.Add("other ran meanwhile"); });
        Green.JoinAll([blocking, other]);
        Assert.That(order, Is.EqualTo(new[] { "before sleep", "other ran meanwhile", "after sleep" }));
    }

    [Test]
    public void StepsOfOneStacklessGreenletMayBlockAtTheSameTime()
    {
        // Continuations of one greenlet (Task.WhenAll) that each make a blocking call: each parks a step of its own.
        var woke = new List<int>();
        async Task Step(int ms)
        {
            await Task.Yield();
            Green.Sleep(ms);
            woke.Add(ms);
        }
        var g = Green.SpawnAsync(() => Task.WhenAll(Step(60), Step(20), Step(40)));
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True, "every step finishes");
        Assert.That(g.Successful, Is.True, () => g.Exception!.ToString());
        Assert.That(woke, Is.EqualTo(new[] { 20, 40, 60 }), "the sleeps overlapped");
        Assert.That(g.State, Is.EqualTo(GreenletState.Dead));
    }

    [Test]
    public void AKillEndsEveryBlockedStepOfAStacklessGreenlet()
    {
        var ended = new List<string>();
        async Task Step(string name)
        {
            await Task.Yield();
            try
            {
                Green.Sleep(TimeSpan.FromSeconds(30));
            }
            catch (GreenletExit)
            {
                ended.Add(name);
                throw;
            }
        }
        var g = Green.SpawnAsync(() => Task.WhenAll(Step("a"), Step("b")));
        Green.Sleep(20);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        g.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "not after the 30 s sleeps");
        Assert.That(ended, Is.EquivalentTo(new[] { "a", "b" }));
    }

    [Test]
    public void AnExpiredGreenTimeoutEndsABlockedStep()
    {
        var g = Green.SpawnAsync(async () =>
        {
            using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(30));
            await Task.Yield();
            Green.Sleep(TimeSpan.FromSeconds(30));
        });
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(g.Exception, Is.InstanceOf<GreenTimeoutException>());
    }

    [Test]
    public void AwaitAGreenletFromAnotherThread()
    {
        var g = Green.Spawn(() => { Green.Sleep(10); return "done"; });
        var awaited = Task.Run(async () => await g);
        g.Join();
        Assert.That(Green.Wait(awaited, TimeSpan.FromSeconds(10)), Is.EqualTo("done"));
    }

    [Test]
    public void AKilledStacklessGreenletAwaitingAForeignTaskEndsWhenTheTaskCompletes()
    {
        var gate = new TaskCompletionSource();
        bool finallyRan = false;
        var g = Green.SpawnAsync(async () =>
        {
            try { await gate.Task; }
            finally { finallyRan = true; }
        });
        Green.Sleep(0);
        Assert.That(g.State, Is.EqualTo(GreenletState.Awaiting));
        g.Kill(block: false);
        Assert.That(g.Dead, Is.False, "an await of a foreign task cannot be interrupted: it stays alive until its finally blocks ran");
        Assert.That(g.CancellationToken.IsCancellationRequested, Is.True, "but the kill is observable through its token");
        gate.SetResult();
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(finallyRan, Is.True);
    }

    [Test]
    public void AStacklessGreenletThatEndsThroughItsOwnTokenAfterAKillEndsAsAKilledGreenlet()
    {
        // docs/core.md tells async code to pass Greenlet.CancellationToken to foreign awaits; the cancellation it then
        // ends with is the kill, and reads as a stackful greenlet's kill does.
        var stackful = Green.Spawn(() => Green.Sleep(10_000));
        var stackless = Green.SpawnAsync(async () => await Task.Delay(10_000, Green.Current.CancellationToken));
        Green.Sleep(10);
        stackful.Kill();
        stackless.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(stackless.Dead, Is.True);
        Assert.That((stackless.Successful, stackless.Exception?.GetType()), Is.EqualTo((stackful.Successful, stackful.Exception?.GetType())));
    }

    [Test]
    public void AKilledStacklessGreenletAwaitingAPrimitiveEndsAtOnceWithTheKill()
    {
        var ev = new Event();
        var g = Green.SpawnAsync(async () => await ev.WaitAsync());
        Green.Sleep(0);
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(g.Successful, Is.True);
        Assert.That(((Greenlet)g).Value, Is.InstanceOf<GreenletExit>());
        Assert.Throws<LoopExitException>(() => Hub.Park(WaitReason.Event));
    }

    [Test]
    public void ManyStacklessSleepersNeedNoThreads()
    {
        var pool = GreenRuntime.Scheduling.CarrierPool.For(Hub.Options.CarrierStackSize);
        var before = pool.Created;
        int woke = 0;
        var gs = Enumerable.Range(0, 20_000).Select(i => Green.SpawnAsync(async () =>
        {
            await Green.SleepAsync(TimeSpan.FromMilliseconds(i % 50));
            woke++;
        })).ToList();
        Green.JoinAll(gs);
        Assert.That(woke, Is.EqualTo(20_000));
        Assert.That(pool.Created - before, Is.LessThanOrEqualTo(2), "stackless sleepers park no thread");
    }

    [Test]
    public void AKillEndsSleepAsyncAtOnceAndRunsTheGreenletsFinallyBlocks()
    {
        bool cleanedUp = false;
        var g = Green.SpawnAsync(async () =>
        {
            try
            {
                await Green.SleepAsync(TimeSpan.FromSeconds(30));
            }
            finally
            {
                cleanedUp = true;
            }
        });
        Green.Sleep(10);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        g.Kill(block: true, timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "the 30 s sleep was cut short");
        Assert.That(g.Successful, Is.True, "killed, not failed");
        Assert.That(cleanedUp, Is.True);
    }

    [Test]
    public void AnExpiredGreenTimeoutEndsSleepAsync()
    {
        var g = Green.SpawnAsync(async () =>
        {
            using var t = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
            await Green.SleepAsync(TimeSpan.FromSeconds(30));
        });
        g.Join(TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
        Assert.That(g.Exception, Is.InstanceOf<GreenTimeoutException>());
    }

    [Test]
    public void SleepAsyncAfterLeavingTheHubWithConfigureAwaitFalseDelaysOnThePoolInsteadOfHanging()
    {
        bool onPool = false;
        var g = Green.SpawnAsync(async () =>
        {
            await Green.SleepAsync(TimeSpan.FromMilliseconds(5)).ConfigureAwait(false); // the rest runs on a pool thread
            onPool = Thread.CurrentThread.IsThreadPoolThread;
            await Green.SleepAsync(TimeSpan.FromMilliseconds(5)); // no hub runs here: before, a timer on a new one never fired
            await Green.SleepAsync(TimeSpan.FromMilliseconds(5));
        });
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True, "the sleeps on the pool thread ended");
        Assert.That(g.Successful, Is.True);
        Assert.That(onPool, Is.True);
    }

    [Test]
    public void SleepAsyncOnAPoolThreadThatABlockingCallBoundAHubToIsADelay()
    {
        // Green.Sleep on a pool thread creates a hub for that thread; after the work item nothing runs its loop.
        var done = Task.Run(async () =>
        {
            Green.Sleep(1);
            var watch = System.Diagnostics.Stopwatch.StartNew();
            await Green.SleepAsync(TimeSpan.FromMilliseconds(20));
            return watch.Elapsed;
        });
        Assert.That(done.Wait(TimeSpan.FromSeconds(10)), Is.True, "the sleep ended");
        Assert.That(done.Result, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(15)));
    }

    [Test]
    public void ATaskFormWaitOnAPoolThreadThatABlockingCallBoundAHubToStillTimesOut()
    {
        var never = new Event();
        var done = Task.Run(async () =>
        {
            Green.Sleep(1); // binds a hub to this pool thread; nothing runs it once the work item moves on
            return await never.WaitAsync(TimeSpan.FromMilliseconds(20));
        });
        Assert.That(done.Wait(TimeSpan.FromSeconds(10)), Is.True, "the timeout fired");
        Assert.That(done.Result, Is.False);
    }

    [Test]
    public void SleepAsyncWakesInDeadlineOrder()
    {
        var order = new List<int>();
        var gs = new[] { 30, 10, 20 }.Select(ms => Green.SpawnAsync(async () => { await Green.SleepAsync(TimeSpan.FromMilliseconds(ms)); order.Add(ms); })).ToList();
        Green.JoinAll(gs);
        Assert.That(order, Is.EqualTo(new[] { 10, 20, 30 }));
    }

    [Test]
    public void AStacklessGreenletThatEndsOnTheHubFinishesWithoutAThreadPoolHop()
    {
        long before = ThreadPool.CompletedWorkItemCount;
        var gs = Enumerable.Range(0, 2000).Select(i => Green.SpawnAsync(async () => await Green.SleepAsync(TimeSpan.FromMilliseconds(i % 3)))).ToList();
        Green.JoinAll(gs);
        Assert.That(gs.All(g => g.Successful), Is.True);
        // Before: the body's completion went through the thread pool (one work item per greenlet) and the inbox.
        Assert.That(ThreadPool.CompletedWorkItemCount - before, Is.LessThan(200));
    }

    [Test]
    public void AStacklessBodyThatEndsOffTheHubStillFinishesTheGreenlet()
    {
        var hubThread = Environment.CurrentManagedThreadId;
        int endedOn = 0;
        var g = Green.SpawnAsync(async () =>
        {
            await Task.Delay(5).ConfigureAwait(false); // leaves the hub: the rest runs on a pool thread
            endedOn = Environment.CurrentManagedThreadId;
            return 42;
        });
        Assert.That(g.Get(TimeSpan.FromSeconds(10)), Is.EqualTo(42));
        Assert.That(endedOn, Is.Not.EqualTo(hubThread));
    }
}
