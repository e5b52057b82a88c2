namespace GreenRuntime.Tests.Core;

/// <summary>Many greenlets, carrier pool and its cap.</summary>
public class StressTests : HubTest
{
    [Test]
    public void TenThousandRandomSleepersAllCompleteAndCarriersReturnToThePool()
    {
        var random = new Random(1234);
        int finished = 0;
        var gs = Enumerable.Range(0, 10_000).Select(_ =>
        {
            var ms = random.Next(0, 51);
            return Green.Spawn(() => { Green.Sleep(ms); finished++; });
        }).ToList();
        var done = Green.JoinAll(gs, timeout: TimeSpan.FromMinutes(2));
        Assert.That(done, Has.Count.EqualTo(10_000));
        Assert.That(finished, Is.EqualTo(10_000));
        Assert.That(Hub.AliveCount, Is.Zero);
        var pool = GreenRuntime.Scheduling.CarrierPool.For(Hub.Options.CarrierStackSize);
        // Every carrier of this hub is back in the pool once the last one parks there (it hands the baton to main
        // first). The pool is the process's: a hub that an earlier test left behind, its main thread waiting, keeps the
        // carrier that idles for it (seen: one such hub, one carrier). So every carrier the pool made is either idle or
        // in use by a hub not yet disposed; one that is neither has leaked.
        int InUseByOtherHubs() => Hub.Live.Where(h => h != Hub && h.Options.CarrierStackSize == Hub.Options.CarrierStackSize).Sum(h => h.CarriersInUse);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while ((Hub.CarriersInUse > 0 || pool.Idle + InUseByOtherHubs() < pool.Created) && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.That(Hub.CarriersInUse, Is.Zero, "this hub's carriers went back");
        Assert.That(pool.Idle + InUseByOtherHubs(), Is.EqualTo(pool.Created), () =>
            "other hubs not disposed: " + string.Join(", ", Hub.Live.Where(h => h != Hub).Select(h => Describe(h))));
    }

    /// <summary>Another hub's carriers and greenlets, read from this thread (a failure message: may be stale).</summary>
    private static string Describe(Hub other)
    {
        try
        {
            return $"{other} ({other.CarriersInUse} carriers, alive: {string.Join(" ", other.AliveGreenlets())})";
        }
        catch (InvalidOperationException)
        {
            return $"{other} ({other.CarriersInUse} carriers)";
        }
    }

    [Test]
    public void GreenletsBeyondMaxCarriersWaitForACarrierInOrder()
    {
        Hub.Dispose();
        Hub = new Hub(new HubOptions { MaxCarriers = 10 });
        var started = new List<int>();
        var gs = Enumerable.Range(0, 30).Select(i => Green.Spawn(() =>
        {
            started.Add(i);
            Green.Sleep(20);
            return i;
        })).ToList();
        Green.JoinAll(gs, raiseError: true);
        Assert.That(gs.Select(g => g.Get()), Is.EqualTo(Enumerable.Range(0, 30)), "nobody failed for lack of a carrier");
        Assert.That(started, Is.EqualTo(Enumerable.Range(0, 30)), "those that waited started in spawn order");
        Assert.That(Hub.CarrierWaiters, Is.Zero);
    }

    [Test]
    public void CarriersThatCanNeverFreeUpAreReportedAsLoopExitNamingTheCap()
    {
        Hub.Dispose();
        Hub = new Hub(new HubOptions { MaxCarriers = 4 });
        var signal = new Event();
        // Four greenlets keep the four carriers waiting for an event that only the fifth, which needs a carrier, sets.
        var waiting = Enumerable.Range(0, 4).Select(_ => Green.Spawn(() => signal.Wait())).ToList();
        var setter = Green.Spawn(signal.Set);
        var error = Assert.Throws<LoopExitException>(() => Green.JoinAll([.. waiting, setter]));
        Assert.That(error!.Message, Does.Contain("MaxCarriers = 4").And.Contain("wait for a carrier"));
        foreach (var g in waiting) g.Kill();
        setter.Join();
        Assert.That(setter.Successful, Is.True, "once carriers free up the waiter runs");
    }

    [Test]
    public void TheDefaultCarrierCapComesFromTheMachineAndRunInfoSaysWhy()
    {
        var info = Hub.GetRunInfo().Carriers;
        Assert.Multiple(() =>
        {
            Assert.That(info.Limit, Is.GreaterThan(1_000), "a machine with default kernel limits allows thousands of threads");
            Assert.That(info.Limit, Is.LessThan(int.MaxValue));
            Assert.That(info.LimitSource, Does.Contain("machine's limit"));
            Assert.That(Hub.FormatRunInfo(), Does.Contain("at most " + info.Limit.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)));
        });
        var tooMany = Assert.Throws<ArgumentOutOfRangeException>(() => new HubOptions { MaxCarriers = info.Limit + 1 }.Validate());
        Assert.That(tooMany!.Message, Does.Contain("at most"));
    }

    [Test]
    public void SleepersWhoseTimersFiredFreeTheirCarriersForLaterStartsInsteadOfNewThreads()
    {
        Hub.Dispose();
        // A pool of its own (odd stack size): it starts with no idle threads, as in a cold process.
        Hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 3 * 4096 });
        var pool = GreenRuntime.Scheduling.CarrierPool.For(Hub.Options.CarrierStackSize);
        int before = pool.Created;
        var random = new Random(7);
        var started = new List<int>();
        var gs = Enumerable.Range(0, 3000).Select(i =>
        {
            int ms = random.Next(20);
            return Green.Spawn(() =>
            {
                started.Add(i);
                Green.Sleep(ms);
            });
        }).ToList();
        Green.JoinAll(gs, raiseError: true);
        Assert.That(started, Is.EqualTo(Enumerable.Range(0, 3000)), "starts keep spawn order");
        Assert.That(pool.Created - before, Is.LessThan(2000), "finished sleepers' carriers ran later starts: far fewer threads than greenlets");
    }

    [Test]
    public void PrestartedCarriersServeABurstWithoutNewThreadsAndAreKeptWhileTheHubLives()
    {
        Hub.Dispose();
        // A pool of its own (odd stack size): it holds only what this hub asks for. Few threads: the blocking-monitor tests
        // need a process with few (they wait for idle carriers to retire).
        Hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 9 * 4096, PrestartCarriers = 24 });
        var pool = GreenRuntime.Scheduling.CarrierPool.For(Hub.Options.CarrierStackSize);
        Assert.That(pool.Created, Is.EqualTo(24), "made before the constructor returned");
        // 20 suspended at once, and a carrier that runs the hub while main waits: within what was prestarted.
        var gs = Enumerable.Range(0, 20).Select(i => Green.Spawn(() => { Green.Sleep(30); return i; })).ToList();
        Green.JoinAll(gs, raiseError: true);
        Assert.That(gs.Select(g => g.Get()), Is.EqualTo(Enumerable.Range(0, 20)));
        Assert.That(pool.Created, Is.EqualTo(24), "the burst created no thread");
        // An idle carrier whose wait timed out asks to retire; the pool keeps the prestarted ones while the hub lives.
        var carrier = pool.Rent();
        pool.Return(carrier);
        Assert.That(pool.TryRetire(carrier), Is.False, "a prestarted carrier is kept however long it idles");
        Assert.That(pool.Created, Is.EqualTo(24));
        Assert.That(pool.Kept, Is.EqualTo(24));
        Assert.That(Hub.GetRunInfo().Carriers.Kept, Is.EqualTo(24));
        Assert.That(Hub.FormatRunInfo(), Does.Contain("24 kept (PrestartCarriers)"));
        Hub.Dispose();
        Assert.That(pool.Kept, Is.Zero, "once the hub is closed its carriers retire when idle, as any other");
        Hub = new Hub();
    }

    [Test]
    public void PrestartCarriersOutsideItsRangeIsRefusedNamingTheLimit()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new HubOptions { PrestartCarriers = -1 }.Validate());
        var overCap = Assert.Throws<ArgumentOutOfRangeException>(() => new HubOptions { MaxCarriers = 10, PrestartCarriers = 11 }.Validate());
        Assert.That(overCap!.Message, Does.Contain("PrestartCarriers").And.Contain("MaxCarriers"));
        var machine = GreenRuntime.Scheduling.CarrierLimit.Machine.Value;
        var overMachine = Assert.Throws<ArgumentOutOfRangeException>(() => new HubOptions { PrestartCarriers = machine + 1 }.Validate());
        Assert.That(overMachine!.Message, Does.Contain($"{machine:N0}"));
        Assert.DoesNotThrow(() => new HubOptions { MaxCarriers = 10, PrestartCarriers = 10 }.Validate());
    }

    [Test]
    public void AThreadTheKernelRefusesWhilePrestartingFailsTheConstructorNamingTheOptionAndLeavesTheThreadFree()
    {
        Hub.Dispose();
        int stackSize = 256 * 1024 + 11 * 4096;
        var pool = GreenRuntime.Scheduling.CarrierPool.For(stackSize);
        pool.Prestart(3); // a pool of its own that already has some
        pool.RefuseStartsForTesting = 1;
        var error = Assert.Throws<OutOfMemoryException>(() => new Hub(new HubOptions { CarrierStackSize = stackSize, PrestartCarriers = 8 }));
        Assert.That(error!.Message, Does.Contain("PrestartCarriers = 8").And.Contain("keeps the 3 carriers"));
        Assert.That(Hub.CurrentOrNull, Is.Null, "no half-made hub on this thread");
        Hub = new Hub(new HubOptions { CarrierStackSize = stackSize, PrestartCarriers = 8 });
        Assert.That(pool.Created, Is.EqualTo(8), "asked again, it makes the rest");
        Assert.That(Green.Spawn(() => { Green.Sleep(1); return 7; }).Get(), Is.EqualTo(7));
    }

    [Test]
    public void AYieldNeverRunsBeforeGreenletsSpawnedEarlierHaveStartedEvenWhenEachNeedsANewThread()
    {
        Hub.Dispose();
        Hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 5 * 4096 });
        var ticker = Green.Spawn(() => { while (true) Green.Sleep(1); }); // keeps loop wakes coming
        int started = 0;
        var gs = Enumerable.Range(0, 400).Select(_ => Green.Spawn(() => { started++; Green.Sleep(50); })).ToList();
        Green.Sleep(0);
        Assert.That(started, Is.EqualTo(400), "a yield goes behind every start queued before it");
        ticker.Kill();
        Green.JoinAll(gs, raiseError: true);
    }

    [Test]
    public void WhenTheKernelRefusesCarrierThreadsGreenletsWaitForOneAndBlockingCallsHoldTheBaton()
    {
        Hub.Dispose();
        // A pool of its own (odd stack size), which the hub prestarts with two idle carriers; every later thread is refused.
        Hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 7 * 4096 });
        var pool = GreenRuntime.Scheduling.CarrierPool.For(Hub.Options.CarrierStackSize);
        pool.Prestart(2);
        int created = pool.Created;
        pool.RefuseStartsForTesting = int.MaxValue;
        try
        {
            var started = new List<int>();
            var sources = new List<string>();
            var sleepers = Enumerable.Range(0, 30).Select(i => Green.Spawn(() =>
            {
                started.Add(i);
                sources.Add(Hub.GetRunInfo().Carriers.LimitSource);
                Green.Sleep(5);
                return i;
            })).ToList();
            Assert.That(Green.JoinAll(sleepers, TimeSpan.FromSeconds(30)), Has.Count.EqualTo(30), "every sleeper ended");
            Assert.That(sleepers.Select(g => g.Get()), Is.EqualTo(Enumerable.Range(0, 30)), "none failed for lack of a thread");
            Assert.That(started, Is.EqualTo(Enumerable.Range(0, 30)), "those that waited started in spawn order");
            Assert.That(sources, Has.Some.Contain("the kernel refused"), "run info says what capped the carriers");

            // Both pooled carriers kept by parked greenlets: a call that would release the baton finds no thread to run
            // the hub and runs with it held, as the original would.
            var release = new Event();
            var keepers = Enumerable.Range(0, 2).Select(_ => Green.Spawn(() => release.Wait())).ToList();
            Green.Sleep(0);
            int thread = Green.RunBlocking(() => Environment.CurrentManagedThreadId);
            Assert.That(thread, Is.EqualTo(Environment.CurrentManagedThreadId));
            release.Set();
            Assert.That(Green.JoinAll(keepers, TimeSpan.FromSeconds(10)), Has.Count.EqualTo(2));
            Assert.That(pool.Created, Is.EqualTo(created), "a refused thread is not counted");
        }
        finally
        {
            pool.RefuseStartsForTesting = 0;
        }
        Assert.That(Green.Spawn(() => Green.RunBlocking(() => 42)).Get(), Is.EqualTo(42), "the hub goes on once threads are given again");
    }

    [Test]
    public void DisposingTheHubKillsWhatIsLeft()
    {
        var finallyRan = 0;
        for (int i = 0; i < 50; i++)
            Green.Spawn(() => { try { Green.Sleep(60_000); } finally { finallyRan++; } });
        Green.Sleep(0);
        Assert.That(Hub.AliveCount, Is.EqualTo(50));
        Hub.Dispose();
        Assert.That(finallyRan, Is.EqualTo(50));
        Hub = new Hub();
    }
}

public class CarrierPoolTests
{
    [Test]
    public void APoolDrainedByStartsIsRefilledAheadOfTheNextStarts()
    {
        // A pool of its own (odd stack size). Greenlets waiting on an event keep their carriers, so without the refill
        // thread nothing would be idle until one of them ends.
        var pool = GreenRuntime.Scheduling.CarrierPool.For(256 * 1024 + 8192);
        using var hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 8192 });
        var release = new Event();
        var gs = new List<Greenlet>();
        void StartOne()
        {
            gs.Add(Green.Spawn(() => release.Wait()));
            Green.Sleep(0); // it has started and waits on its carrier
        }
        for (int i = 0; i < 40; i++) StartOne();
        // Whatever the refills of that burst left idle, once they are over: take it all, one carrier at a time.
        int created;
        do
        {
            created = pool.Created;
            Thread.Sleep(300);
        }
        while (pool.Created != created);
        while (pool.Idle > 0) StartOne();
        StartOne(); // finds the pool empty
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (pool.Idle < GreenRuntime.Scheduling.CarrierPool.LowWater && DateTime.UtcNow < deadline) Thread.Sleep(10);
        Assert.That(pool.Idle, Is.GreaterThanOrEqualTo(GreenRuntime.Scheduling.CarrierPool.LowWater), "idle carriers made while the others are held");
        release.Set();
        Green.JoinAll(gs, raiseError: true);
    }

    [Test]
    public unsafe void PooledCarriersAreNamedBackgroundThreadsWithTheStackSizeAsked()
    {
        const int stackSize = 256 * 1024 + 12288; // a pool of its own
        using var hub = new Hub(new HubOptions { CarrierStackSize = stackSize });
        var (name, background, stack, onMain) = Green.Spawn(() =>
        {
            var thread = Thread.CurrentThread;
            return (thread.Name, thread.IsBackground, StackSizeOfThisThread(), thread.ManagedThreadId == Environment.CurrentManagedThreadId);
        }).Get();
        Assert.That(name, Does.StartWith("GreenRuntime carrier #"));
        Assert.That(background, Is.True, "carriers never keep the process alive");
        if (OperatingSystem.IsLinux()) Assert.That(stack, Is.InRange(stackSize, stackSize + 65536));
    }

    [Test]
    public void ByDefaultAGreenletHasAsMuchStackAsANewThread()
    {
        // A stack overflow aborts the process: recursion that a thread survives (a parser on deeply nested input) must not
        // overflow a greenlet. Measured the way .NET libraries guard their recursion: how deep until the runtime says the
        // stack is nearly used up.
        int onThread = 0;
        var thread = new Thread(() => onThread = DepthUntilStackRunsLow(0));
        thread.Start();
        thread.Join();
        using var hub = new Hub();
        int onGreenlet = Green.Spawn(() => DepthUntilStackRunsLow(0)).Get();
        Assert.That(onGreenlet, Is.GreaterThanOrEqualTo(onThread * 9 / 10), $"greenlet {onGreenlet} frames, thread {onThread}");
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static int DepthUntilStackRunsLow(int depth) =>
        System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack() ? DepthUntilStackRunsLow(depth + 1) + 0 : depth;

    /// <summary>The stack size of the calling thread as the C library reports it (Linux), or 0.</summary>
    private static unsafe long StackSizeOfThisThread()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        var attr = stackalloc byte[128];
        if (PthreadGetAttrNp(PthreadSelf(), attr) != 0) return 0;
        nint address, size;
        int error = PthreadAttrGetStack(attr, &address, &size);
        PthreadAttrDestroy(attr);
        return error == 0 ? size : 0;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "pthread_self")]
    private static extern nuint PthreadSelf();

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "pthread_getattr_np")]
    private static extern unsafe int PthreadGetAttrNp(nuint thread, byte* attr);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "pthread_attr_getstack")]
    private static extern unsafe int PthreadAttrGetStack(byte* attr, nint* address, nint* size);

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "pthread_attr_destroy")]
    private static extern unsafe int PthreadAttrDestroy(byte* attr);

    [Test]
    public void IdleCarriersAboveTheMinimumRetireAfterTheTimeout()
    {
        // A pool of its own (odd stack size) so other tests' carriers do not interfere.
        var pool = GreenRuntime.Scheduling.CarrierPool.For(256 * 1024 + 4096);
        using (var hub = new Hub(new HubOptions { CarrierStackSize = 256 * 1024 + 4096 }))
        {
            var gs = Enumerable.Range(0, 40).Select(_ => Green.Spawn(() => Green.Sleep(20))).ToList();
            Green.JoinAll(gs);
        }
        Assert.That(pool.Created, Is.GreaterThan(GreenRuntime.Scheduling.CarrierPool.MinIdle));
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (pool.Created > GreenRuntime.Scheduling.CarrierPool.MinIdle && DateTime.UtcNow < deadline) Thread.Sleep(100);
        Assert.That(pool.Created, Is.EqualTo(GreenRuntime.Scheduling.CarrierPool.MinIdle));
        Assert.That(pool.Idle, Is.EqualTo(pool.Created));
    }
}
