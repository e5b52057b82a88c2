using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Patched calls on greenlets: they park only the greenlet, keep timeouts, and cancel cleanly on kill.</summary>
[TestFixture]
public class OnHubBehaviourTests : PatchedHubTest
{
    [Test]
    public void APatchedCallWhileAParksWakersAreRegisteredRunsAsTheOriginal()
    {
        // A registration that sleeps in a retry (or takes a lock another thread holds) runs between BeginPark and EndPark:
        // parked there, the greenlet began a second park over the first.
        var ticks = 0;
        var ticker = Green.Spawn(() => { while (true) { Green.Sleep(1); ticks++; } });
        Green.Sleep(10);
        var g = Green.Spawn(() =>
        {
            var token = GreenRuntime.LowLevel.Parking.BeginPark(WaitReason.Other);
            int before = ticks;
            Thread.Sleep(30); // the original: the thread sleeps with the baton, nothing else runs
            int during = ticks - before;
            token.TryWake("registered");
            return (GreenRuntime.LowLevel.Parking.EndPark(token), during);
        });
        var (value, ticksDuringSleep) = g.Get();
        ticker.Kill();
        Assert.That(value, Is.EqualTo("registered"));
        Assert.That(ticksDuringSleep, Is.Zero, "the sleep inside the park's registration held the hub, as a blocking call there must");
    }

    private static (Socket Client, Socket Server, TcpListener Listener) ConnectedPair()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var connect = client.ConnectAsync(listener.LocalEndpoint);
        var server = listener.AcceptSocketAsync();
        Task.WaitAll(connect, server);
        return (client, server.Result, listener);
    }

    [Test]
    public void KillCancelsAPendingReceiveWithoutLosingData()
    {
        var (client, server, listener) = ConnectedPair();
        using (client)
        using (server)
        using (listener.Server)
        {
            var buffer = new byte[16];
            var receiver = Green.Spawn(() => client.Receive(buffer));
            Green.Sleep(50);
            Assert.That(receiver.WaitReason, Is.EqualTo(WaitReason.Socket), "parked in the receive");
            receiver.Kill();
            Assert.That(receiver.Dead, Is.True);
            server.Send("0123456789"u8.ToArray());
            var again = new byte[16];
            int n = Green.Spawn(() => client.Receive(again)).Get();
            Assert.That(again.AsSpan(0, n).ToArray(), Is.EqualTo("0123456789"u8.ToArray()), "every byte reaches the next receive");
            Assert.That(buffer, Has.All.EqualTo((byte)0), "the killed receive wrote nothing into its buffer");
        }
    }

    [Test]
    public void ReceiveTimeoutKeepsItsMeaningAndOtherGreenletsRun()
    {
        var (client, server, listener) = ConnectedPair();
        using (client)
        using (server)
        using (listener.Server)
        {
            client.ReceiveTimeout = 150;
            var ticks = 0;
            var ticker = Green.Spawn(() =>
            {
                for (int i = 0; i < 5; i++)
                {
                    Thread.Sleep(10);
                    ticks++;
                }
            });
            var e = Assert.Throws<SocketException>(() => client.Receive(new byte[4]));
            Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.TimedOut));
            Assert.That(ticks, Is.EqualTo(5), "the ticker ran while the main greenlet waited for data");
            ticker.Join();
            server.Send([7, 8]);
            var buffer = new byte[4];
            Assert.That(client.Receive(buffer), Is.EqualTo(2));
            Assert.That(buffer[..2], Is.EqualTo(new byte[] { 7, 8 }));
        }
    }

    [Test]
    public void AcceptAndConnectPark()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var order = new List<string>();
        var acceptor = Green.Spawn(() =>
        {
            using var accepted = listener.Accept();
            order.Add("accepted");
            accepted.Send([42]);
        });
        Green.Sleep(20);
        order.Add("connecting");
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        var one = new byte[1];
        Assert.That(client.Receive(one), Is.EqualTo(1));
        acceptor.Join();
        Assert.That(order, Is.EqualTo(new[] { "connecting", "accepted" }));
        Assert.That(one[0], Is.EqualTo(42));
        Assert.That(client.Blocking, Is.True);
    }

    [Test]
    public void GreenletsWaitForEachOtherThroughThreadingPrimitives()
    {
        using var semaphore = new SemaphoreSlim(0);
        using var slim = new ManualResetEventSlim();
        using var auto = new AutoResetEvent(false);
        var log = new List<string>();
        var waiter = Green.Spawn(() =>
        {
            semaphore.Wait();
            log.Add("semaphore");
            slim.Wait();
            log.Add("slim");
            Assert.That(auto.WaitOne(5000), Is.True);
            log.Add("auto");
        });
        var releaser = Green.Spawn(() =>
        {
            log.Add("release");
            semaphore.Release();
            Thread.Sleep(10);
            slim.Set();
            Thread.Sleep(10);
            auto.Set();
        });
        // Without the patches the waiter would block the hub's only running thread and the releaser never runs.
        Green.JoinAll([waiter, releaser], TimeSpan.FromSeconds(10), raiseError: true);
        Assert.That(log, Is.EqualTo(new[] { "release", "semaphore", "slim", "auto" }));
        Assert.That(auto.WaitOne(0), Is.False, "the signal was consumed exactly once");
    }

    [Test]
    public void AnEventWaitWithATimeoutBelowMinusOneThrowsAsTheOriginalSetOrNot()
    {
        using var set = new ManualResetEventSlim(true);
        using var unset = new ManualResetEventSlim();
        var g = Green.Spawn(() =>
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => set.Wait(-2));
            Assert.Throws<ArgumentOutOfRangeException>(() => unset.Wait(-2));
        });
        g.Join(TimeSpan.FromSeconds(10));
        Assert.That(g.Successful, Is.True, g.Exception?.ToString());
    }

    [Test]
    public void AnInterruptedEventWaitRaisesItsTimeoutEvenWhenTheTimeoutIsCancelledAtOnce()
    {
        // The timeout's token callback cancels it on the hub right after its expiry interrupted the wait: the wait still
        // has no result, so it must not return as if it had timed out (false) or been set.
        using var never = new ManualResetEventSlim();
        using var semaphore = new Semaphore(0, 1);
        var outcomes = new List<object?>();
        var g = Green.Spawn(() =>
        {
            foreach (var wait in new Func<object>[] { () => never.Wait(Timeout.Infinite), () => WaitHandle.WaitAny([semaphore]) })
            {
                using var timeout = GreenTimeout.Start(TimeSpan.FromMilliseconds(20));
                timeout.Token.Register(timeout.Cancel);
                try
                {
                    outcomes.Add(wait());
                }
                catch (GreenTimeoutException e)
                {
                    outcomes.Add(e.GetType());
                }
            }
        });
        g.Join(TimeSpan.FromSeconds(10));
        Assert.That(outcomes, Is.EqualTo(new object[] { typeof(GreenTimeoutException), typeof(GreenTimeoutException) }));
        Assert.That(semaphore.WaitOne(0), Is.False, "nothing was acquired, nothing given back");
    }

    [Test]
    public void AManualResetEventWaitHandleAcquiredJustBeforeAKillIsLeftAsItsOwnerSetsIt()
    {
        // A plain EventWaitHandle does not say whether it resets itself, so what its wait acquired cannot be given back
        // exactly: Set would restore an auto-reset event, but would set a manual-reset one that another thread has reset.
        // Such a wait keeps what it acquired and returns, and the kill is raised at the greenlet's next blocking point.
        using var manual = new EventWaitHandle(false, EventResetMode.ManualReset);
        bool returned = false;
        var waiter = Green.Spawn(() =>
        {
            returned = manual.WaitOne();
            Green.Sleep(TimeSpan.FromSeconds(30));
        });
        Green.Sleep(20); // the waiter's thread waits in WaitOne with the baton released
        manual.Set();
        // Keep the baton until the waiter's wait has returned true: its greenlet waits for the baton now.
        HoldTheBaton();
        waiter.Kill(block: false);
        manual.Reset();
        Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(waiter.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(returned, Is.True, "the wait returned what it acquired; the kill came at the next blocking point");
        Assert.That(manual.WaitOne(0), Is.False, "the event stays as its owner left it (reset)");
    }

    [Test]
    public void EventWaitsOfGreenletsDoNotNeedTheThreadPool()
    {
        // Every pool thread busy with work that does not finish (as under a burst of CPU-bound requests): a greenlet's
        // event wait must still see its Set at once. A registered wait hands the signal to a pool worker first, queued
        // behind that work, until the pool has added enough threads to reach it.
        using var slim = new ManualResetEventSlim();
        using var auto = new AutoResetEvent(false);
        var stop = new StrongBox<bool>();
        for (int i = 0; i < 64; i++)
            ThreadPool.UnsafeQueueUserWorkItem(static s =>
            {
                while (!Volatile.Read(ref ((StrongBox<bool>)s!).Value)) Thread.SpinWait(1000);
            }, stop);
        try
        {
            var slimWaiter = Green.Spawn(() => slim.Wait());
            var autoWaiter = Green.Spawn(() => auto.WaitOne());
            Green.Sleep(50);
            var setter = new Thread(() =>
            {
                slim.Set();
                auto.Set();
            });
            var clock = Stopwatch.StartNew();
            setter.Start();
            Assert.That(Green.JoinAll([slimWaiter, autoWaiter], TimeSpan.FromSeconds(30), raiseError: true), Has.Count.EqualTo(2),
                "both waits ended");
            // Measured: 39 ms, against 3.4 s through the pool. The bound leaves room for a loaded machine.
            TestContext.Out.WriteLine($"both waits ended {clock.Elapsed.TotalMilliseconds:F0} ms after the Set");
            Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1.5)), "the waits did not wait for the busy thread pool");
            setter.Join();
            Assert.That(autoWaiter.Value, Is.True);
            Assert.That(auto.WaitOne(0), Is.False, "the auto-reset signal was consumed exactly once");
        }
        finally
        {
            Volatile.Write(ref stop.Value, true);
        }
    }

    [Test]
    public void WithNoCarrierLeftToTakeOverEventWaitsAreRegisteredWaits()
    {
        // Two carriers: the first waiter's released wait takes the second to run the hub, so the second waiter, started
        // there, has none left to hand the hub to and waits through registered waits (the pool) instead. Both kinds
        // must end on their signals, acquiring exactly once.
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxCarriers = 2, MaxBlockingTime = null });
                using var first = new AutoResetEvent(false);
                using var second = new AutoResetEvent(false);
                using var slim = new ManualResetEventSlim();
                var released = Green.Spawn(() => first.WaitOne());
                var registered = Green.Spawn(() => second.WaitOne() && slim.Wait(10_000));
                Green.Sleep(100);
                Assert.That(Parking.CanReleaseBaton, Is.False, "both carriers are taken");
                first.Set();
                second.Set();
                slim.Set();
                Assert.That(Green.JoinAll([released, registered], TimeSpan.FromSeconds(10), raiseError: true), Has.Count.EqualTo(2));
                Assert.That(released.Value, Is.True);
                Assert.That(registered.Value, Is.True);
                Assert.That(first.WaitOne(0) || second.WaitOne(0), Is.False, "each signal was consumed exactly once");
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        thread.Join();
        if (failure != null) ExceptionDispatchInfo.Throw(failure);
    }

    [Test]
    public void AKillEndsEventWaitsAndTakesNothing()
    {
        using var slim = new ManualResetEventSlim();
        using var auto = new AutoResetEvent(false);
        using var semaphore = new Semaphore(0, 1);
        var waiters = new[]
        {
            Green.Spawn(() => slim.Wait()),
            Green.Spawn(() => auto.WaitOne()),
            Green.Spawn(() => semaphore.WaitOne()),
        };
        Green.Sleep(50);
        foreach (var waiter in waiters) waiter.Kill(block: false);
        Assert.That(Green.JoinAll(waiters, TimeSpan.FromSeconds(5)), Has.Count.EqualTo(3), "each kill ended its wait");
        Assert.That(waiters.Select(w => w.Value), Has.All.InstanceOf<GreenletExit>());
        auto.Set();
        semaphore.Release();
        Assert.That(auto.WaitOne(0), Is.True, "the killed waiter took no signal");
        Assert.That(semaphore.WaitOne(0), Is.True, "the killed waiter took no count");
    }

    [Test]
    public void TimeoutsOfThreadingWaitsOnAGreenlet()
    {
        using var semaphore = new SemaphoreSlim(0);
        using var slim = new ManualResetEventSlim();
        using var auto = new AutoResetEvent(false);
        var others = 0;
        var busy = Green.Spawn(() =>
        {
            for (int i = 0; i < 3; i++)
            {
                Thread.Sleep(5);
                others++;
            }
        });
        Assert.That(semaphore.Wait(50), Is.False);
        Assert.That(slim.Wait(50), Is.False);
        Assert.That(auto.WaitOne(50), Is.False);
        Assert.That(new TaskCompletionSource().Task.Wait(50), Is.False);
        busy.Join();
        Assert.That(others, Is.EqualTo(3));
        semaphore.Release();
        Assert.That(semaphore.CurrentCount, Is.EqualTo(1), "a timed-out wait took no count");
    }

    [Test]
    public void KilledSemaphoreWaiterTakesNoCount()
    {
        using var semaphore = new SemaphoreSlim(0);
        var waiter = Green.Spawn(() => semaphore.Wait());
        Green.Sleep(20);
        waiter.Kill();
        semaphore.Release();
        Assert.That(semaphore.CurrentCount, Is.EqualTo(1));
    }

    [Test]
    public void TaskResultOfWorkThatNeedsTheHub()
    {
        // A task completed by another greenlet: a blocking wait would deadlock the hub.
        var source = new TaskCompletionSource<int>();
        Green.Spawn(() =>
        {
            Thread.Sleep(20);
            source.SetResult(5);
        });
        Assert.That(source.Task.Result, Is.EqualTo(5));
        var many = Enumerable.Range(0, 20).Select(i => Task.Delay(100).ContinueWith(_ => i)).ToArray();
        var watch = Stopwatch.StartNew();
        var results = new int[20];
        RunInGreenlets(20, i => results[i] = many[i].GetAwaiter().GetResult());
        Assert.That(results, Is.EqualTo(Enumerable.Range(0, 20)));
        Task.WaitAll(many);
        Assert.That(Task.WaitAny([new TaskCompletionSource().Task, Task.Delay(10)]), Is.EqualTo(1));
    }

    /// <summary>A task wait whose token is cancelled first throws OperationCanceledException, as on a plain thread: Polly's
    /// pessimistic timeout (<c>task.Wait(timeoutToken)</c>, then <c>task.Result</c>) relies on it, and hung on a greenlet
    /// when the wait returned instead.</summary>
    [Test]
    public void ATaskWaitWhoseTokenIsCancelledThrowsAsOnAPlainThread()
    {
        static string Outcome(Func<CancellationToken, object> wait)
        {
            using var cancel = new CancellationTokenSource(50);
            try
            {
                return $"returned {wait(cancel.Token)}";
            }
            catch (Exception e)
            {
                return e.GetType().Name;
            }
        }
        static string[] All()
        {
            var never = new TaskCompletionSource<int>().Task; // continuations run synchronously: the park path
            var neverAsync = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously).Task;
            return
            [
                Outcome(ct => { never.Wait(ct); return "void"; }),
                Outcome(ct => never.Wait(10_000, ct)),
                Outcome(ct => never.Wait(TimeSpan.FromSeconds(10), ct)),
                Outcome(ct => Task.WaitAny([never], ct)),
                Outcome(ct => Task.WaitAny([never, neverAsync], 10_000, ct)),
                Outcome(ct => Task.WaitAll([never], 10_000, ct)),
                Outcome(ct => neverAsync.Wait(10_000, ct)),
            ];
        }
        string[] onThread = [];
        var thread = new Thread(() => onThread = All());
        thread.Start();
        thread.Join();
        Assert.That(onThread, Is.All.EqualTo(nameof(OperationCanceledException)), "the original, for reference");
        Assert.That(Green.Spawn(All).Get(), Is.EqualTo(onThread));
    }

    /// <summary>Libraries' task completion sources usually run their continuations asynchronously: a park woken through
    /// a continuation would wait for a thread-pool thread, and legacy code often holds the pool's threads (2.4 s for a
    /// result set after 50 ms, measured with the pool's threads held). Every kind of wait is woken directly.</summary>
    [Test]
    public void WaitsForTasksThatRunTheirContinuationsAsynchronouslyNeedNoThreadPoolThread()
    {
        using var pool = new HeldThreadPool();
        var sources = Enumerable.Range(0, 6).Select(_ => new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var watch = Stopwatch.StartNew();
        var waiters = new Func<int>[]
        {
            () => sources[0].Task.Result,
            () => sources[1].Task.Wait(10_000) ? 1 : 0,
            () => sources[2].Task.GetAwaiter().GetResult(),
            () => Task.WaitAll([sources[3].Task], 10_000) ? 3 : 0,
            () => sources[4].Task.Wait(10_000, new CancellationTokenSource().Token) ? 4 : 0,
            () => sources[5].Task.Result, // set by another greenlet of the hub
        }.Select(w => Green.Spawn(w)).ToList();
        var setter = new Thread(() =>
        {
            Thread.Sleep(50);
            for (int i = 0; i < 5; i++) sources[i].SetResult(i);
        });
        setter.Start();
        Green.Spawn(() =>
        {
            Thread.Sleep(50);
            sources[5].SetResult(5);
        });
        var finished = Green.JoinAll(waiters, TimeSpan.FromSeconds(30));
        Assert.That(finished, Has.Count.EqualTo(waiters.Count));
        Assert.That(waiters.Select(w => ((Greenlet<int>)w).Get()), Is.EqualTo(new[] { 0, 1, 2, 3, 4, 5 }));
        // Generous: about 55 ms when woken directly; seconds when each wake waits for the pool to grow.
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1.5)));
        setter.Join();
    }

    /// <summary>With the pool's threads held by legacy blocking work, a DNS lookup and a process wait once heard of
    /// their end through a pool thread (4.4 s and 0.9 s measured); both are woken directly now.</summary>
    [Test]
    public void DnsLookupsAndProcessWaitsDoNotWaitForAThreadPoolThatIsHeld()
    {
        using var pool = new HeldThreadPool();
        var watch = Stopwatch.StartNew();
        var lookup = Green.Spawn(() => Dns.GetHostAddresses("localhost"));
        var exitCode = Green.Spawn(() =>
        {
            using var process = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "exit 3"]) { UseShellExecute = false })!;
            process.WaitForExit();
            return process.ExitCode;
        });
        Assert.That(Green.JoinAll([lookup, exitCode], TimeSpan.FromSeconds(30)), Has.Count.EqualTo(2));
        Assert.That(lookup.Get(), Is.Not.Empty);
        Assert.That(exitCode.Get(), Is.EqualTo(3));
        // Generous: milliseconds when woken directly; seconds when each waits for the pool to grow.
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)));
    }

    /// <summary>A process with <c>EnableRaisingEvents</c> was waited for by parking on <c>WaitForExitAsync</c>, whose wake
    /// came from the pool's exit callback: five 0.1 s processes took 0.73-1 s with the pool's threads held, 0.1 s on
    /// threads. The wait is the released original's now, and <c>Exited</c> still runs on the greenlet (or on a pool thread,
    /// as on threads), never on a released thread beside the hub's greenlets.</summary>
    [Test]
    public void AProcessWaitWithExitedEventsDoesNotWaitForAThreadPoolThatIsHeld()
    {
        using var pool = new HeldThreadPool();
        var exitedOn = new System.Collections.Concurrent.ConcurrentBag<string>();
        var watch = Stopwatch.StartNew();
        var waiters = Enumerable.Range(0, 5).Select(_ => Green.Spawn(() =>
        {
            int exitCodes = 0;
            for (int round = 0; round < 3; round++) // each round's wakes waited for the pool to grow again
            {
                using var process = new Process { StartInfo = new ProcessStartInfo("sleep", "0.1") { UseShellExecute = false }, EnableRaisingEvents = true };
                process.Exited += (_, _) => exitedOn.Add(Thread.CurrentThread.IsThreadPoolThread ? "pool" : Parking.CanPark ? "greenlet" : "released thread");
                process.Start();
                process.WaitForExit();
                exitCodes += process.ExitCode;
            }
            return exitCodes;
        })).ToList();
        Assert.That(Green.JoinAll(waiters, TimeSpan.FromSeconds(60)), Has.Count.EqualTo(5));
        var elapsed = watch.Elapsed;
        Assert.That(waiters.Select(w => ((Greenlet<int>)w).Get()), Is.All.EqualTo(0));
        Assert.That(exitedOn, Has.Count.EqualTo(15), "Exited was raised before WaitForExit returned, as on threads");
        Assert.That(exitedOn.Distinct(), Is.SubsetOf(new[] { "greenlet", "pool" }), "never on a released thread beside the hub's greenlets");
        // Generous: about 0.3 s when woken directly (three rounds of 0.1 s); 0.75 s and more per round when the wakes wait
        // for the pool to grow.
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(1.2)));
    }

    [Test]
    public void AProcessWaitWithExitedEventsIsKilledAtOnce()
    {
        using var process = new Process { StartInfo = new ProcessStartInfo("sleep", "5") { UseShellExecute = false }, EnableRaisingEvents = true };
        process.Start();
        var waiter = Green.Spawn(() => process.WaitForExit());
        Green.Sleep(50);
        var watch = Stopwatch.StartNew();
        waiter.Kill(timeout: TimeSpan.FromSeconds(5));
        Assert.That(waiter.Dead, Is.True);
        Assert.That(waiter.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2)), "the kill interrupted the wait");
        process.Kill();
    }

    [Test]
    public void KillAndTimeoutEndAWaitForATaskThatRunsItsContinuationsAsynchronously()
    {
        var source = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var ticks = 0;
        var ticker = Green.Spawn(() =>
        {
            for (int i = 0; i < 5; i++)
            {
                Thread.Sleep(5);
                ticks++;
            }
        });
        Assert.That(source.Task.Wait(100), Is.False, "timed out");
        Assert.That(ticks, Is.EqualTo(5), "the other greenlet ran meanwhile");
        ticker.Join();
        var waiter = Green.Spawn(() => source.Task.Result);
        Green.Sleep(20);
        waiter.Kill();
        Assert.That(waiter.Dead, Is.True);
        Assert.That(waiter.Exception, Is.Null.Or.InstanceOf<GreenletExit>(), "ended by the kill");
        source.SetResult(7);
        Assert.That(Green.Spawn(() => source.Task.Result).Get(), Is.EqualTo(7), "the task is still usable");
        var failed = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var faulting = Green.Spawn(() => failed.Task.Result);
        Green.Sleep(10);
        failed.SetException(new InvalidOperationException("boom"));
        var error = Assert.Throws<AggregateException>(() => faulting.Get());
        Assert.That(error!.InnerException, Is.InstanceOf<InvalidOperationException>(), "the original's exception");
    }

    [Test]
    public void ThreadJoinAndProcessWaitForExitPark()
    {
        var ticks = 0;
        var ticker = Green.Spawn(() =>
        {
            for (int i = 0; i < 5; i++)
            {
                Thread.Sleep(10);
                ticks++;
            }
        });
        var worker = new Thread(() => { var w = Stopwatch.StartNew(); while (w.ElapsedMilliseconds < 150) { } });
        worker.Start();
        worker.Join();
        using var p = Process.Start(new ProcessStartInfo("sleep", "0.1") { UseShellExecute = false })!;
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0));
        ticker.Join();
        Assert.That(ticks, Is.EqualTo(5));
    }

    [Test]
    public void ThreadStartsLetTheHubRunAndStartThreadsAsTheOriginal()
    {
        // Starting a thread waits until it runs (0.2-0.4 ms each): with the baton held, a loop of starts stopped every
        // other greenlet for its whole length.
        int ticks = 0, ran = 0;
        bool starting = true;
        var ticker = Green.Spawn(() =>
        {
            while (starting) Green.Sleep(1);
        });
        var ticking = Green.Spawn(() =>
        {
            while (starting)
            {
                Green.Sleep(0);
                ticks++;
            }
        });
        Green.Sleep(5);
        int ticksBefore = ticks;
        var threads = Enumerable.Range(0, 200).Select(_ => new Thread(() => Interlocked.Increment(ref ran))).ToList();
        foreach (var t in threads) t.Start(); // no other blocking call in this loop
        int ticksDuring = ticks - ticksBefore;
        starting = false;
        foreach (var t in threads) t.Join();
        Green.JoinAll([ticker, ticking]);
        Assert.That(ran, Is.EqualTo(200), "every thread ran");
        Assert.That(ticksDuring, Is.GreaterThan(0), "other greenlets ran while the threads started");
        Assert.Throws<ThreadStateException>(() => threads[0].Start(), "a thread started twice: the original's exception");
    }

    [Test]
    public void AThreadCoreLibStartsUnderItsOwnLockKeepsTheBaton()
    {
        // The thread pool starts a wait thread for RegisterWaitForSingleObject when its wait threads are full, holding
        // its wait-thread lock (a LowLevelLock, which greenlets wait for with the baton held). Started with the baton
        // released, the next greenlet to register a wait took the baton and waited for that lock, and the greenlet that
        // held the lock never got the baton back to release it: SSH.NET's SFTP transfers (a registered wait per request)
        // hung the process. On a hub of its own, on a background thread: on the old source it never came back.
        var registrations = new System.Collections.Concurrent.ConcurrentBag<RegisteredWaitHandle>();
        var events = new System.Collections.Concurrent.ConcurrentBag<ManualResetEvent>();
        int done = 0;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
            var registering = Enumerable.Range(0, 40).Select(_ => Green.Spawn(() =>
            {
                for (int k = 0; k < 10; k++)
                {
                    var signal = new ManualResetEvent(false);
                    events.Add(signal);
                    registrations.Add(ThreadPool.RegisterWaitForSingleObject(signal, (_, _) => { }, null, Timeout.Infinite, true));
                    Green.Sleep(0);
                }
            })).ToList();
            done = Green.JoinAll(registering, TimeSpan.FromSeconds(20)).Count;
        }) { IsBackground = true };
        runner.Start();
        bool returned = runner.Join(TimeSpan.FromSeconds(30));
        Assert.That(returned, Is.True, "the hub's thread came back");
        Assert.That(done, Is.EqualTo(40));
        foreach (var registration in registrations) registration.Unregister(null);
        foreach (var signal in events) signal.Dispose();
    }

    [Test]
    public void RedirectedProcessStreamsAreReadAndWrittenByOverlappingGreenlets()
    {
        // On Unix a Process's redirected streams are pipes that .NET reads and writes through a Socket object that is no
        // socket: the cooperative receive must not recv() or peek on it (ENOTSOCK), yet must not block the hub either.
        var ticks = new List<long>();
        var clock = Stopwatch.StartNew();
        bool done = false;
        var ticker = Green.Spawn(() =>
        {
            while (!done)
            {
                Thread.Sleep(5);
                ticks.Add(clock.ElapsedMilliseconds);
            }
        });
        var outputs = new string[10];
        var elapsed = RunInGreenlets(10, i =>
        {
            using var p = Process.Start(new ProcessStartInfo("sh", "-c \"read x; sleep 0.3; echo got$x; echo oops 1>&2; head -c 100000 /dev/zero\"")
            {
                RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            })!;
            p.StandardInput.WriteLine(i);
            p.StandardInput.Close();
            var output = p.StandardOutput.ReadToEnd();
            var error = p.StandardError.ReadToEnd();
            p.WaitForExit();
            outputs[i] = $"{output.Length} {output[..output.IndexOf('\n')]} {error.Trim()}";
        });
        done = true;
        ticker.Join();
        Assert.That(outputs, Is.EqualTo(Enumerable.Range(0, 10).Select(i => $"{100_000 + $"got{i}\n".Length} got{i} oops")));
        // Ten 0.3 s processes one after another would take 3 s; overlapped about 0.3 s (generous bound for a loaded machine).
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(2.5)), "the reads overlapped");
        var gaps = ticks.Zip(ticks.Skip(1), (a, b) => b - a);
        Assert.That(gaps.DefaultIfEmpty(0).Max(), Is.LessThan(250), "no read held the hub while its process slept");
    }

    [Test]
    public void ProcessStartRunsWithTheBatonReleased()
    {
        // The parent waits in native code until its child has exec'd; meanwhile the other greenlets run.
        var starter = Green.Spawn(() =>
        {
            for (int i = 0; i < 20; i++)
            {
                using var p = Process.Start(new ProcessStartInfo("sh", "-c true") { UseShellExecute = false })!;
                p.WaitForExit();
            }
        });
        int seenStarting = 0;
        while (!starter.Ready)
        {
            if (starter.WaitReason == WaitReason.Blocking) seenStarting++;
            Green.Sleep(0);
        }
        Assert.That(starter.Successful, Is.True, starter.Exception?.ToString());
        Assert.That(seenStarting, Is.GreaterThan(0), "another greenlet ran while a start was under way");
    }

    [Test]
    public void AnAnonymousPipeIsReadOnAGreenletWithoutHoldingTheHub()
    {
        using var server = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.Out);
        using var client = new System.IO.Pipes.AnonymousPipeClientStream(System.IO.Pipes.PipeDirection.In, server.ClientSafePipeHandle);
        var writer = new Thread(() =>
        {
            Thread.Sleep(200); // a plain thread: the original sleep
            server.Write([1, 2, 3]);
            server.Close();
        });
        int ticks = 0;
        var ticker = Green.Spawn(() =>
        {
            while (true)
            {
                Thread.Sleep(10);
                ticks++;
            }
        });
        writer.Start();
        var reader = Green.Spawn(() =>
        {
            var buffer = new byte[8];
            int first = client.Read(buffer);
            int end = client.Read(buffer, first, buffer.Length - first);
            return (first, end, buffer[0]);
        });
        Assert.That(reader.Get(), Is.EqualTo((3, 0, (byte)1)), "three bytes, then the end of the stream");
        Assert.That(ticks, Is.GreaterThanOrEqualTo(5), "the ticker ran while the reader waited");
        ticker.Kill();
        writer.Join();
    }

    [Test]
    public void ATimeoutThatComesWhileAPipeWriteIsPartlyDoneIsRaisedOnlyOnceAllOfItWentOut()
    {
        // A Process's stdin and every PipeStream write through a Socket that wraps the pipe. A write cut short corrupts
        // what the reader parses (a child reading length-prefixed records, a shell reading lines), so, as on a socket,
        // the write goes on once part of it went out, and the timeout is raised at the next blocking point.
        using var server = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.Out);
        using var client = new System.IO.Pipes.AnonymousPipeClientStream(System.IO.Pipes.PipeDirection.In, server.ClientSafePipeHandle);
        var first = new byte[1024 * 1024];
        Array.Fill(first, (byte)1);
        var second = new byte[1000];
        Array.Fill(second, (byte)2);
        var stall = new ManualResetEventSlim();
        var reader = Task.Run(() =>
        {
            stall.Wait(); // a plain thread: the original wait
            var all = new MemoryStream();
            client.CopyTo(all);
            return all.ToArray();
        });
        Exception? raised = null;
        var writer = Green.Spawn(() =>
        {
            try
            {
                Green.WithTimeout(TimeSpan.FromMilliseconds(50), () =>
                {
                    server.Write(first);
                    Thread.Sleep(1); // the next blocking point raises the expired timeout
                    Assert.Fail("the expired timeout was not raised");
                });
            }
            catch (GreenTimeoutException e)
            {
                raised = e;
            }
            server.Write(second);
            server.Dispose();
        });
        Green.Sleep(300);
        Assert.That(writer.Dead, Is.False, "the timeout expired while the first write was partly done: the write goes on");
        stall.Set();
        Assert.That(Parking.WaitForTask(reader, TimeSpan.FromSeconds(30)), Is.True);
        Green.JoinAll([writer]);
        Assert.That(writer.Successful, Is.True, writer.Exception?.ToString());
        Assert.That(raised, Is.Not.Null, "the timeout is raised at the blocking point after the write");
        Assert.That(reader.Result, Is.EqualTo(first.Concat(second).ToArray()), "each write arrives whole");
    }

    [Test]
    public void AWebSocketReceiveEndedByATimeoutIsCancelledNotLeftToTakeTheNextMessage()
    {
        // Legacy code waits for ReceiveAsync with GetAwaiter().GetResult() and no token. Left running after the timeout,
        // the receive took the next message for nobody (another greenlet's reply, on a shared socket). Cancelled, the
        // socket is aborted, as on a thread whose token was cancelled.
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        using var listener = new HttpListener();
        listener.Prefixes.Add($"http://127.0.0.1:{port}/");
        listener.Start();
        var server = Task.Run(async () =>
        {
            var context = await listener.GetContextAsync();
            var socket = (await context.AcceptWebSocketAsync(null)).WebSocket;
            var buffer = new byte[100];
            while (socket.State == System.Net.WebSockets.WebSocketState.Open)
            {
                var received = await socket.ReceiveAsync(buffer, CancellationToken.None);
                if (received.MessageType == System.Net.WebSockets.WebSocketMessageType.Close) break;
                await Task.Delay(300); // the reply comes after the client's timeout
                await socket.SendAsync(buffer.AsMemory(0, received.Count), System.Net.WebSockets.WebSocketMessageType.Text, true, CancellationToken.None);
            }
        });
        using var client = new System.Net.WebSockets.ClientWebSocket();
        client.ConnectAsync(new Uri($"ws://127.0.0.1:{port}/"), CancellationToken.None).GetAwaiter().GetResult();
        client.SendAsync(new ArraySegment<byte>("slow"u8.ToArray()), System.Net.WebSockets.WebSocketMessageType.Text, true, CancellationToken.None).GetAwaiter().GetResult();
        var first = Green.WithTimeout(TimeSpan.FromMilliseconds(100), () =>
        {
            var buffer = new byte[100];
            var result = client.ReceiveAsync(new ArraySegment<byte>(buffer), CancellationToken.None).GetAwaiter().GetResult();
            return System.Text.Encoding.UTF8.GetString(buffer, 0, result.Count);
        }, "timed out");
        Assert.That(first, Is.EqualTo("timed out"));
        Green.Sleep(50);
        Assert.That(client.State, Is.EqualTo(System.Net.WebSockets.WebSocketState.Aborted), "the abandoned receive was cancelled, as a thread's with a cancelled token");
        listener.Stop();
        Assert.That(Parking.WaitForTask(server, TimeSpan.FromSeconds(10)), Is.True);
    }

    [Test]
    public void ANamedPipeServerWhoseWaitForAClientTimedOutServesTheNextClient()
    {
        string name = "greenruntime-test-" + Guid.NewGuid().ToString("N");
        using var server = new System.IO.Pipes.NamedPipeServerStream(name, System.IO.Pipes.PipeDirection.InOut, 1);
        var first = Green.WithTimeout(TimeSpan.FromMilliseconds(100), () =>
        {
            server.WaitForConnection();
            return "connected";
        }, "timed out");
        Assert.That(first, Is.EqualTo("timed out"));
        var client = Green.Spawn(() =>
        {
            using var pipe = new System.IO.Pipes.NamedPipeClientStream(".", name);
            pipe.Connect(5000);
            pipe.WriteByte(7);
            Green.Sleep(500); // keep the connection until the server has read
        });
        int read = Green.WithTimeout(TimeSpan.FromSeconds(10), () =>
        {
            server.WaitForConnection();
            return server.ReadByte();
        }, -1);
        Assert.That(read, Is.EqualTo(7), "the abandoned wait did not take the client's connection");
        client.Join();
    }

    [Test]
    public void AKillEndsAWriteToAFullPipeAtOnceWhileNothingOfItWentOut()
    {
        using var server = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.Out);
        using var client = new System.IO.Pipes.AnonymousPipeClientStream(System.IO.Pipes.PipeDirection.In, server.ClientSafePipeHandle);
        var filled = Green.Spawn(() =>
        {
            while (true) server.Write(new byte[4096]); // PIPE_BUF: each write goes in whole or not at all
        });
        Green.Sleep(100);
        Assert.That(filled.WaitReason, Is.EqualTo(WaitReason.Socket), "parked: the pipe is full");
        filled.Kill();
        Assert.That(filled.Dead, Is.True, "nothing of the last write went out, so the kill ends it at once");
        var late = Green.Spawn(() => server.Write("late"u8));
        Green.Sleep(50);
        late.Kill();
        Assert.That(late.Dead, Is.True);
        // The reader finds whole 4 KiB writes of zeros and nothing of the killed ones.
        var buffer = new byte[64 * 1024];
        long total = 0;
        server.Dispose();
        int n;
        while ((n = client.Read(buffer)) > 0)
        {
            Assert.That(buffer.AsSpan(0, n).IndexOfAnyExcept((byte)0), Is.EqualTo(-1));
            total += n;
        }
        Assert.That(total % 4096, Is.Zero, "only whole writes");
    }

    [Test]
    public void AKillEndsAThreadJoinAndTheJoinWorksAfterwards()
    {
        using var finish = new ManualResetEventSlim();
        var worker = new Thread(() => finish.Wait()); // off the hub: the original wait
        worker.Start();
        var joiner = Green.Spawn(() => worker.Join());
        var timed = Green.Spawn(() => worker.Join(50));
        Green.Sleep(50);
        joiner.Kill(block: false);
        Assert.That(Green.JoinAll([joiner, timed], TimeSpan.FromSeconds(5)), Has.Count.EqualTo(2), "the kill and the timeout ended the joins");
        Assert.That(joiner.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(timed.Value, Is.False, "the thread was still running");
        finish.Set();
        var late = Green.Spawn(() => worker.Join(10_000));
        Assert.That(late.Get(), Is.True);
        Assert.That(worker.IsAlive, Is.False);
    }

    [Test]
    public void CallSitesCompiledBeforePatchingAreRedirected()
    {
        // PatchedHubTest patched in OneTimeSetUp; prove it with a method first compiled and run before that:
        // Precompiled.SleepBriefly ran (and was jitted) when the assembly loaded, before any patching.
        Assert.That(Precompiled.RanBeforePatching, Is.True);
        var all = RunInGreenlets(20, _ => Precompiled.SleepBriefly());
        Assert.That(all, Is.LessThan(TimeSpan.FromMilliseconds(20 * 100 / 3)), "the 20 sleeps overlapped");
    }
}

/// <summary>Code compiled and run when the test assembly loads (module initializer), before any patching.</summary>
internal static class Precompiled
{
    public static bool RanBeforePatching { get; private set; }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void SleepBriefly() => Thread.Sleep(100);

    [ModuleInitializer]
    internal static void RunAtLoad()
    {
        SleepBriefly();
        RanBeforePatching = true;
    }
}
