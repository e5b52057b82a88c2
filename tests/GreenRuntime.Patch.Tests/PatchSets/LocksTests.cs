using System.Diagnostics;
using GreenRuntime.LowLevel;
using GreenRuntime.TestSupport;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// The Locks set: lock/Monitor, Lock and Mutex waits on greenlets release the baton, so a greenlet that holds
/// one across a patched blocking call does not deadlock the hub when another greenlet wants it.
/// </summary>
public class LocksTests : PatchedHubTest
{
    // The hub would stall for the whole 300 ms hold if the waiter blocked holding the baton; 150 ms leaves room
    // for a loaded machine while still telling the two apart.
    private static readonly TimeSpan Hold = TimeSpan.FromMilliseconds(300);
    private static readonly TimeSpan GapBound = TimeSpan.FromMilliseconds(150);

    [Test]
    public void AGreenletThatMeetsALockWonInAReleasedWaitLetsItsWinnerRunBeforeWaitingInTheRuntime()
    {
        // The winner's thread took the monitor in a released wait (Parking.RunReleased with WaitReason.Lock, as a contended
        // enter does once its tries to take a lock that was free have failed) and holds it until its greenlet gets the
        // baton: the greenlet that meets the monitor lets it run (it goes first), then takes it, instead of parking its own
        // thread in the runtime's wait. Every such waiter used to hold the lock in turn while it waited for the baton, a
        // convoy that cost ASP.NET Core's console logger most of its throughput. (A contended enter no longer keeps what it
        // wins in the runtime at first, nor does Monitor.Wait: see ALockWonInAReleasedWaitIsNotHeldWhileItsGreenletWaitsForTheBaton
        // and AMonitorAPulsedWaitTookBackIsNotHeldWhileItsGreenletWaitsForTheBaton.)
        var monitor = new object();
        var states = new List<string>();
        using var go = new ManualResetEventSlim();
        Greenlet first = null!;
        var winner = Green.Spawn(() =>
        {
            Parking.RunReleased(static s => { s.go.Wait(); Monitor.Enter(s.monitor); return true; }, (go, monitor), WaitReason.Lock, cancellationPoint: false);
            try
            {
                states.Add($"winner sees {first.State} {first.WaitReason}");
            }
            finally
            {
                Monitor.Exit(monitor);
            }
        });
        first = Green.Spawn(() =>
        {
            Green.Sleep(20); // the winner's thread waits
            go.Set(); // it takes the monitor and posts its return
            var spin = Stopwatch.StartNew();
            while (spin.ElapsedMilliseconds < 50) { } // holding the baton while that happens
            lock (monitor) states.Add("entered again"); // held by the winner's thread: lets the winner run first
        });
        Green.JoinAll([winner, first], TimeSpan.FromSeconds(10));
        Assert.That(states, Is.EqualTo(new[] { "winner sees Ready Yield", "entered again" }), "the second enter yielded to the winner instead of waiting in the runtime");
    }

    [Test]
    public void AMonitorAPulsedWaitTookBackIsNotHeldWhileItsGreenletWaitsForTheBaton()
    {
        // The runtime's Monitor.Wait returns owning the monitor again, on the greenlet's thread, with the baton elsewhere: the
        // thread gives it back at once, every recursion of it, and the greenlet takes it again once it has the baton. Kept,
        // it was held away from every thread that wanted it until then: 50 greenlets producing into a bounded queue for a
        // consumer thread (lock + Monitor.Wait + PulseAll, as the console logger's QueueFullMode.Wait) took 0.9-2.7 s for
        // 10,000 items, threads 0.02-0.12 s.
        var monitor = new object();
        using var pulsed = new ManualResetEventSlim();
        var secondWaited = TimeSpan.Zero;
        var second = new Thread(() =>
        {
            pulsed.Wait();
            Thread.Sleep(50); // the waiter's thread has taken the monitor back by now
            var watch = Stopwatch.StartNew();
            lock (monitor) secondWaited = watch.Elapsed;
        });
        second.Start();
        var outcome = new List<string>();
        var waiter = Green.Spawn(() =>
        {
            lock (monitor)
            {
                lock (monitor)
                {
                    outcome.Add($"pulsed {Monitor.Wait(monitor, 10_000)}");
                    outcome.Add($"held {Monitor.IsEntered(monitor)}");
                }
                outcome.Add($"held once exited {Monitor.IsEntered(monitor)}"); // the recursion came back too
                outcome.Add($"timed out {!Monitor.Wait(monitor, 20)}, held {Monitor.IsEntered(monitor)}");
            }
            outcome.Add($"held after the block {Monitor.IsEntered(monitor)}");
        });
        var busy = Green.Spawn(() =>
        {
            Green.Sleep(30); // the waiter is in the runtime's wait, the baton released
            lock (monitor) Monitor.Pulse(monitor);
            pulsed.Set();
            var spin = Stopwatch.StartNew();
            while (spin.ElapsedMilliseconds < 400) { } // keeps the baton
        });
        Green.JoinAll([waiter, busy], TimeSpan.FromSeconds(10));
        second.Join();
        Assert.That(outcome, Is.EqualTo(new[] { "pulsed True", "held True", "held once exited True", "timed out True, held True", "held after the block False" }));
        Assert.That(secondWaited, Is.LessThan(TimeSpan.FromMilliseconds(200)), "the monitor was held while the waiter waited for the baton");
    }

    [TestCase("monitor", false)]
    [TestCase("Lock", false)]
    [TestCase("monitor", true)]
    [TestCase("Lock", true)]
    public void ALockWonInAReleasedWaitIsNotHeldWhileItsGreenletWaitsForTheBaton(string kind, bool withTimeout)
    {
        // A plain thread holds the lock; a greenlet waits for it with the baton released; the thread lets go while another
        // greenlet keeps the baton for 400 ms. A second plain thread that wants the lock then must not wait for those
        // 400 ms: the greenlet's thread, which won the lock in the runtime's wait, gives it back at once and takes it again
        // once its greenlet has the baton. Kept, it held the lock away from every thread and greenlet until then: behind
        // YARP (the runtime's timer-queue lock, re-armed several times per request) that convoy held the lock about half of
        // the time and left hundreds of greenlets waiting for it, at p99 latencies of 1-1.9 s instead of 0.2 s.
        var monitor = new object();
        var threadingLock = new Lock();
        void Enter() { if (kind == "Lock") threadingLock.Enter(); else Monitor.Enter(monitor); }
        void Exit() { if (kind == "Lock") threadingLock.Exit(); else Monitor.Exit(monitor); }
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var owner = new Thread(() => { Enter(); held.Set(); release.Wait(); Exit(); });
        owner.Start();
        held.Wait();
        var secondWaited = TimeSpan.Zero;
        var second = new Thread(() =>
        {
            release.Wait();
            Thread.Sleep(50); // the greenlet's thread has won the lock by now
            var watch = Stopwatch.StartNew();
            Enter();
            secondWaited = watch.Elapsed;
            Exit();
        });
        second.Start();
        var entered = false;
        var waiter = Green.Spawn(() =>
        {
            if (withTimeout) entered = kind == "Lock" ? threadingLock.TryEnter(10_000) : Monitor.TryEnter(monitor, 10_000);
            else { Enter(); entered = true; }
            if (entered) Exit();
        });
        var busy = Green.Spawn(() =>
        {
            Green.Sleep(30); // the waiter is in the runtime's wait, the baton released
            release.Set();
            var spin = Stopwatch.StartNew();
            while (spin.ElapsedMilliseconds < 400) { } // keeps the baton
        });
        Green.JoinAll([waiter, busy], TimeSpan.FromSeconds(10));
        owner.Join();
        second.Join();
        Assert.That(entered, Is.True);
        Assert.That(secondWaited, Is.LessThan(TimeSpan.FromMilliseconds(200)), "the lock was held while its greenlet waited for the baton");
    }

    [Test]
    public void AGreenletThatMeetsALockAPlainThreadHoldsWaitsInTheRuntimeAtOnce()
    {
        // No greenlet of the hub holds it: a pass through the ready queue would only cost (a thread taking the lock in a
        // tight loop made 200 greenlets' enters 13-20 times slower that way).
        var gate = new object();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var owner = new Thread(() => { lock (gate) { held.Set(); release.Wait(); } });
        owner.Start();
        held.Wait();
        var states = new List<string>();
        var waiter = Green.Spawn(() => { lock (gate) states.Add("entered"); });
        var observer = Green.Spawn(() =>
        {
            Green.Sleep(20);
            states.Add($"{waiter.State} {waiter.WaitReason}");
            release.Set();
        });
        Green.JoinAll([waiter, observer], TimeSpan.FromSeconds(10));
        owner.Join();
        Assert.That(states, Is.EqualTo(new[] { "Parked Lock", "entered" }));
    }

    [Test]
    public void ABoundedBufferWrittenWithLockAndMonitorWaitMovesItemsInOrder()
    {
        const int Items = 100_000, Capacity = 10;
        var gate = new object();
        var buffer = new Queue<int>();
        var received = new List<int>(Items);
        var producer = Green.Spawn(() =>
        {
            for (int i = 0; i < Items; i++)
            {
                lock (gate)
                {
                    while (buffer.Count == Capacity) Monitor.Wait(gate);
                    buffer.Enqueue(i);
                    Monitor.PulseAll(gate);
                }
            }
        });
        var consumer = Green.Spawn(() =>
        {
            while (received.Count < Items)
            {
                lock (gate)
                {
                    while (buffer.Count == 0) Monitor.Wait(gate);
                    received.Add(buffer.Dequeue());
                    Monitor.PulseAll(gate);
                }
            }
        });
        Green.JoinAll([producer, consumer], raiseError: true);
        Assert.That(received, Is.EqualTo(Enumerable.Range(0, Items)));
    }

    [Test]
    public void AStacklessGreenletWaitingForALockHeldByAStackfulOneAcrossASleepGetsIt()
    {
        // The stackless greenlet's synchronous part runs on a free carrier: its contended lock waits there with the
        // baton released, and the stackful holder resumes on its own carrier, releases the lock and lets it in.
        var gate = new object();
        var order = new List<string>();
        var holder = Green.Spawn(() =>
        {
            lock (gate)
            {
                order.Add("holder in");
                Thread.Sleep(200);
                order.Add("holder out");
            }
        });
        var waiters = Enumerable.Range(0, 3).Select(i => Green.SpawnAsync(async () =>
        {
            await Green.SleepAsync(TimeSpan.FromMilliseconds(20));
            lock (gate) order.Add($"waiter {i}");
            Console.Error.Write(""); // the console writer's own lock, under the same conditions
        })).ToList();
        Assert.That(Green.JoinAll([holder, .. waiters], timeout: TimeSpan.FromSeconds(10)), Has.Count.EqualTo(4), "nobody hangs");
        Assert.That(order.Take(2), Is.EqualTo(new[] { "holder in", "holder out" }));
        Assert.That(order.Skip(2), Is.EquivalentTo(new[] { "waiter 0", "waiter 1", "waiter 2" }));
    }

    [Test]
    public void TwoStepsOfOneStacklessGreenletMayWaitForLocksAtTheSameTime()
    {
        // Task.WhenAll of two async calls: both continuations are steps of the one stackless greenlet, and each
        // meets a lock a plain thread holds (a shared TimerQueue, connection pool). Each waits with the baton
        // released, so the second step's wait begins while the first one's is still out: the two waits must not
        // share the greenlet's park (a shared one handed the first step's baton to the second step's thread, and the
        // first, holding the lock, waited for ever).
        var gate = new object();
        var ticker = new Ticker();
        for (int round = 0; round < 20; round++)
        {
            int entered = 0;
            using var release = new ManualResetEventSlim();
            var holder = HoldOnAThread(gate, release);
            async Task Step()
            {
                await Task.Yield(); // from here on a step posted to the greenlet
                lock (gate) entered++;
            }
            var g = Green.SpawnAsync(() => Task.WhenAll(Step(), Step(), Step()));
            Green.Sleep(TimeSpan.FromMilliseconds(20)); // the steps now wait for the lock, the baton released
            release.Set();
            Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True, $"round {round}: the steps finish");
            Assert.That(g.Successful, Is.True, () => $"round {round}: {g.Exception}");
            Assert.That(entered, Is.EqualTo(3));
            holder.Join();
        }
        ticker.Stop();
        Assert.That(ticker.LongestGap, Is.LessThan(GapBound));
    }

    [Test]
    public void AGreenletWaitingForALockHeldAcrossASleepLetsTheHubRun()
    {
        var gate = new object();
        HolderAndWaiter(body => { lock (gate) body(); });
    }

    [Test]
    public void ALockObjectHeldAcrossASleepIsWaitedForWithTheBatonReleased()
    {
        var gate = new Lock();
        HolderAndWaiter(body => { lock (gate) body(); });
    }

    /// <summary>A plain thread that holds <paramref name="gate"/> until <paramref name="release"/> is set; returns once it
    /// holds it.</summary>
    private static Thread HoldOnAThread(object gate, ManualResetEventSlim release)
    {
        using var held = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            lock (gate)
            {
                held.Set();
                release.Wait();
            }
        });
        thread.Start();
        held.Wait();
        return thread;
    }

    /// <summary>Greenlet a holds the lock across a patched sleep while b waits for it: both finish in order, and the
    /// hub keeps ticking meanwhile.</summary>
    private static void HolderAndWaiter(Action<Action> underLock)
    {
        var log = new List<string>();
        var ticker = new Ticker();
        var a = Green.Spawn(() => underLock(() =>
        {
            log.Add("a in");
            Thread.Sleep(Hold); // patched: parks with the lock held
            log.Add("a out");
        }));
        var b = Green.Spawn(() => underLock(() => log.Add("b in")));
        Green.JoinAll([a, b], raiseError: true);
        ticker.Stop();
        Assert.That(log, Is.EqualTo(new[] { "a in", "a out", "b in" }));
        Assert.That(ticker.LongestGap, Is.LessThan(GapBound));
    }

    [Test]
    public void AMutexHeldAcrossASleepIsWaitedForWithTheBatonReleased()
    {
        using var mutex = new Mutex();
        var log = new List<string>();
        var ticker = new Ticker();
        var a = Green.Spawn(() =>
        {
            mutex.WaitOne();
            log.Add("a in");
            Thread.Sleep(Hold);
            log.Add("a out");
            mutex.ReleaseMutex();
        });
        var b = Green.Spawn(() =>
        {
            Assert.That(mutex.WaitOne(TimeSpan.FromSeconds(30)), Is.True);
            log.Add("b in");
            mutex.ReleaseMutex(); // throws unless this thread owns it: ownership is the greenlet's carrier's
        });
        Green.JoinAll([a, b], raiseError: true);
        ticker.Stop();
        Assert.That(log, Is.EqualTo(new[] { "a in", "a out", "b in" }));
        Assert.That(ticker.LongestGap, Is.LessThan(GapBound));
    }

    /// <summary>A plain thread that owns <paramref name="mutex"/> (once this returns) until <paramref name="release"/> is set.</summary>
    private static Thread HeldByAnotherThread(Mutex mutex, ManualResetEventSlim release)
    {
        using var held = new ManualResetEventSlim();
        var owner = new Thread(() =>
        {
            mutex.WaitOne();
            held.Set();
            release.Wait();
            mutex.ReleaseMutex();
        });
        owner.Start();
        Green.Wait(Task.Run(() => held.Wait(TimeSpan.FromSeconds(5))));
        return owner;
    }

    /// <summary>Whether a thread with no greenlet can take <paramref name="mutex"/> at once (it gives it back).</summary>
    private static bool IsFree(Mutex mutex)
    {
        var probe = Task.Run(() =>
        {
            bool got = mutex.WaitOne(0);
            if (got) mutex.ReleaseMutex();
            return got;
        });
        Green.Wait(probe);
        return probe.Result;
    }

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(false, true)] // a named mutex's wait ignores Thread.Interrupt on Linux (WaitAny refuses named mutexes there)
    public void AGreenletWaitingForAMutexIsKilledAtOnceAndAcquiresNothing(bool waitAny, bool named)
    {
        using var mutex = named ? new Mutex(false, "greenruntime-test-" + Guid.NewGuid().ToString("N")) : new Mutex();
        using var release = new ManualResetEventSlim();
        var owner = HeldByAnotherThread(mutex, release);
        bool reachedFinally = false;
        var waiter = Green.Spawn(() =>
        {
            try
            {
                if (waitAny) WaitHandle.WaitAny([mutex]);
                else mutex.WaitOne();
            }
            finally
            {
                reachedFinally = true;
            }
        });
        Green.Sleep(20); // it waits for the mutex with the baton released
        waiter.Kill(timeout: TimeSpan.FromSeconds(5));
        bool dead = waiter.Dead;
        release.Set();
        owner.Join();
        Assert.That(dead, Is.True, "the kill interrupted the wait instead of waiting for the mutex");
        Assert.That(reachedFinally, Is.True);
        Assert.That(waiter.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(IsFree(mutex), Is.True, "the killed wait acquired nothing");
    }

    [Test]
    public void AMutexAcquiredJustAsAKillComesIsReleasedAgain()
    {
        using var mutex = new Mutex();
        using var release = new ManualResetEventSlim();
        var owner = HeldByAnotherThread(mutex, release);
        bool entered = false;
        var waiter = Green.Spawn(() =>
        {
            mutex.WaitOne();
            entered = true;
        });
        KillJustAfterItsThreadAcquires(waiter, release, owner);
        Assert.That(entered, Is.False, "the kill was raised from the wait");
        Assert.That(IsFree(mutex), Is.True, "the waiter's thread released the mutex it had acquired");
    }

    /// <summary>Lets <paramref name="waiter"/> wait for what <paramref name="owner"/> holds, releases it, keeps the baton
    /// until the waiter's thread has acquired it (its greenlet then waits for the baton), and kills the waiter: the kill
    /// races the acquisition. The waiter must end with <see cref="GreenletExit"/>.</summary>
    private static void KillJustAfterItsThreadAcquires(Greenlet waiter, ManualResetEventSlim release, Thread owner)
    {
        Green.Sleep(20);
        release.Set();
        HoldTheBaton();
        waiter.Kill(timeout: TimeSpan.FromSeconds(5));
        owner.Join();
        Assert.That(waiter.Dead, Is.True);
        Assert.That(waiter.Value, Is.InstanceOf<GreenletExit>());
    }

    [Test]
    public void WaitAnyAndWaitAllOverSetsWithAMutexAreCooperative()
    {
        using var mutex = new Mutex();
        using var never = new ManualResetEvent(false);
        using var signalled = new ManualResetEvent(true);
        var ticker = new Ticker();
        var holder = Green.Spawn(() =>
        {
            mutex.WaitOne();
            Thread.Sleep(Hold);
            mutex.ReleaseMutex();
        });
        int any = -1;
        bool all = false;
        var waiter = Green.Spawn(() =>
        {
            any = WaitHandle.WaitAny([never, mutex], TimeSpan.FromSeconds(30));
            mutex.ReleaseMutex();
            all = WaitHandle.WaitAll([signalled, mutex], TimeSpan.FromSeconds(30));
            mutex.ReleaseMutex();
        });
        Green.JoinAll([holder, waiter], raiseError: true);
        ticker.Stop();
        Assert.Multiple(() =>
        {
            Assert.That(any, Is.EqualTo(1));
            Assert.That(all, Is.True);
            Assert.That(ticker.LongestGap, Is.LessThan(GapBound));
        });
    }

    [Test]
    public void MonitorTryEnterWithATimeoutTimesOutCooperatively()
    {
        var gate = new object();
        var ticker = new Ticker();
        bool? got = null;
        var a = Green.Spawn(() =>
        {
            lock (gate) Thread.Sleep(Hold);
        });
        var b = Green.Spawn(() =>
        {
            got = Monitor.TryEnter(gate, 50);
            if (got == true) Monitor.Exit(gate);
        });
        Green.JoinAll([a, b], raiseError: true);
        ticker.Stop();
        Assert.That(got, Is.False);
        Assert.That(ticker.LongestGap, Is.LessThan(GapBound));
    }

    [Test]
    public void AKillInterruptsALockWaitAtOnceAndLeavesTheLockUsable([Values("lock", "Monitor.TryEnter", "Lock")] string kind)
    {
        var gate = new object();
        var lockObject = new Lock();
        Action<Action> underLock = kind switch
        {
            "lock" => body => { lock (gate) body(); },
            "Lock" => body => { lock (lockObject) body(); },
            _ => body =>
            {
                if (!Monitor.TryEnter(gate, 60_000)) return;
                try
                {
                    body();
                }
                finally
                {
                    Monitor.Exit(gate);
                }
            },
        };
        var holder = Green.Spawn(() => underLock(() => Thread.Sleep(Hold)));
        bool entered = false, reachedFinally = false;
        var victim = Green.Spawn(() =>
        {
            try
            {
                underLock(() => entered = true);
            }
            finally
            {
                reachedFinally = true;
            }
        });
        Green.Sleep(50); // the victim waits for the lock with the baton released
        victim.Kill(timeout: TimeSpan.FromSeconds(5));
        bool endedWhileHeld = victim.Dead && !holder.Dead;
        holder.Join();
        Assert.That(endedWhileHeld, Is.True, "the kill interrupted the wait instead of waiting for the holder");
        Assert.That(victim.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(entered, Is.False, "nothing was acquired");
        Assert.That(reachedFinally, Is.True);
        var after = Green.Spawn(() => underLock(() => entered = true));
        Assert.That(Green.JoinAll([after], TimeSpan.FromSeconds(5)), Has.Count.EqualTo(1), "nobody keeps the lock");
        Assert.That(entered, Is.True);
    }

    [Test]
    public void KillsRacingLockWaitsOnTwoHubsNeverBreakMutualExclusionNorLeakALock()
    {
        // Greenlets of two hubs take a monitor (across a patched sleep) and a Lock in turn while a third of them are
        // killed at random moments: in a wait, just as it acquires, or inside the block.
        var gate = new object();
        var lockObject = new Lock();
        int inside = 0, overlaps = 0, strayInterrupts = 0;
        var random = new Random(7);
        var all = new List<Greenlet>();
        using (var group = new HubGroup(2))
        {
            for (int round = 0; round < 10; round++)
            {
                var batch = Enumerable.Range(0, 30).Select(i => group.SpawnOn(i % 2, () =>
                {
                    try
                    {
                        for (int k = 0; k < 4; k++)
                        {
                            if (k % 2 == 0)
                            {
                                lock (gate)
                                {
                                    if (Interlocked.Increment(ref inside) > 1) Interlocked.Increment(ref overlaps);
                                    try
                                    {
                                        Thread.Sleep(1);
                                    }
                                    finally
                                    {
                                        Interlocked.Decrement(ref inside);
                                    }
                                }
                            }
                            else
                            {
                                lock (lockObject) Thread.SpinWait(200);
                            }
                        }
                    }
                    catch (ThreadInterruptedException)
                    {
                        Interlocked.Increment(ref strayInterrupts);
                        throw;
                    }
                })).ToList();
                Thread.Sleep(random.Next(1, 8));
                foreach (var g in batch.Where((_, i) => i % 3 == 0)) g.Kill(block: false);
                all.AddRange(batch);
            }
            Assert.That(all.All(g => g.Join(TimeSpan.FromSeconds(30))), Is.True, "every greenlet ended");
        }
        Assert.That(overlaps, Is.Zero, "two greenlets were inside the monitor at once");
        Assert.That(strayInterrupts, Is.Zero, "an interrupt meant for a lock wait reached user code");
        Assert.That(all.Where(g => g.Exception is not null and not GreenletExit).Select(g => g.Exception), Is.Empty);
        Assert.That(all.Count(g => g.Value is GreenletExit), Is.GreaterThan(0), "some kills landed");
        Assert.That(Monitor.TryEnter(gate), Is.True, "the monitor is free");
        Monitor.Exit(gate);
        Assert.That(lockObject.TryEnter(), Is.True, "the Lock is free");
        lockObject.Exit();
    }

    [Test]
    public void AMonitorAcquiredJustAsAKillComesIsKeptAndTheKillIsRaisedAtTheNextBlockingPoint()
    {
        var gate = new object();
        using var release = new ManualResetEventSlim();
        var owner = HoldOnAThread(gate, release);
        bool entered = false;
        var victim = Green.Spawn(() =>
        {
            lock (gate)
            {
                entered = true;
                Thread.Sleep(10_000); // the kill, which came after the monitor was acquired, lands here
            }
        });
        KillJustAfterItsThreadAcquires(victim, release, owner);
        Assert.That(entered, Is.True, "the acquired monitor was kept: raising the kill there would have leaked it");
        Assert.That(Monitor.TryEnter(gate), Is.True, "the lock statement's finally released it");
        Monitor.Exit(gate);
    }

    [Test]
    public void OffAGreenletMonitorBehavesLikeTheOriginal()
    {
        var gate = new object();
        Assert.Throws<SynchronizationLockException>(() => Monitor.Wait(gate, 1));
        Assert.Throws<ArgumentNullException>(() => Monitor.Enter(null!));
        lock (gate) Assert.That(Monitor.Wait(gate, 20), Is.False);
        using var release = new ManualResetEventSlim();
        var other = HoldOnAThread(gate, release);
        Assert.That(Monitor.TryEnter(gate, 30), Is.False);
        release.Set();
        other.Join();
        Assert.That(Monitor.TryEnter(gate, 1000), Is.True);
        Monitor.Exit(gate);
    }

    [Test]
    public void AMonitorUsedByGreenletsAndAPlainThreadAlike()
    {
        var gate = new object();
        int counter = 0;
        var thread = new Thread(() =>
        {
            for (int i = 0; i < 2000; i++)
                lock (gate) counter++;
        });
        thread.Start();
        RunInGreenlets(10, _ =>
        {
            for (int i = 0; i < 200; i++)
            {
                lock (gate) counter++;
                if (i % 50 == 0) Thread.Sleep(1);
            }
        });
        thread.Join();
        Assert.That(counter, Is.EqualTo(4000));
    }

    [Test]
    public void ASynchronizedWriterOverAFileIsSharedByGreenletsWhoseWritesPark()
    {
        // TextWriter.Synchronized's methods are [MethodImpl(Synchronized)]: the runtime takes a monitor on the
        // writer around each call, and the patched file write inside parks with that monitor held.
        var path = Path.GetTempFileName();
        try
        {
            using (var writer = TextWriter.Synchronized(new StreamWriter(path) { AutoFlush = true }))
            {
                RunInGreenlets(20, i =>
                {
                    for (int k = 0; k < 20; k++) writer.WriteLine($"{i}:{k}");
                });
            }
            var lines = File.ReadAllLines(path);
            Assert.That(lines, Has.Length.EqualTo(400));
            Assert.That(lines.Distinct().Count(), Is.EqualTo(400));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void AKilledGreenletsFinallyStillEntersAContendedLock()
    {
        // Legacy cleanup takes locks: entering one is not a cancellation point, so the kill does not fail it.
        var gate = new object();
        bool cleanedUp = false;
        var holder = Green.Spawn(() =>
        {
            lock (gate) Thread.Sleep(Hold);
        });
        var victim = Green.Spawn(() =>
        {
            try
            {
                Thread.Sleep(60_000);
            }
            finally
            {
                lock (gate) cleanedUp = true;
            }
        });
        Green.Sleep(50);
        victim.Kill(block: true);
        holder.Join();
        Assert.That(victim.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(cleanedUp, Is.True);
    }

    [Test]
    public void ReleasingTheBatonWhileTheCarrierPoolsLockIsContendedDoesNotReleaseAgain()
    {
        // Regression: releasing the baton rents a carrier under the pool's lock; when a retiring or returning carrier
        // held that lock, the contended enter went through the Monitor replacement and released the baton again,
        // recursively, until the hub hung. A thread hammering the pool's lock makes that contention likely.
        var pool = GreenRuntime.Scheduling.CarrierPool.For(HubUnderTest.Options.CarrierStackSize);
        using var stop = new CancellationTokenSource();
        var hammer = new Thread(() =>
        {
            while (!stop.IsCancellationRequested) _ = pool.Idle;
        }) { IsBackground = true };
        hammer.Start();
        try
        {
            int calls = 0;
            RunInGreenlets(20, _ =>
            {
                for (int k = 0; k < 200; k++) Green.RunBlocking(() => Interlocked.Increment(ref calls));
            });
            Assert.That(calls, Is.EqualTo(4000));
        }
        finally
        {
            stop.Cancel();
            hammer.Join();
        }
    }

    [Test]
    public void AContendedLockTakenByAThreadOfTheHubWithoutTheBatonBlocksItAsOffAHub()
    {
        // Regression: the thread of a released call that has returned is a thread of the hub again before it holds the
        // baton, and queues its return through the inbox, whose queue takes a lock when it grows. Found contended, the
        // patched lock released the baton that another greenlet's thread held: two holders (a cold HTTP server under
        // wrk answered 500s, then crashed in HandBaton). Here the returning thread meets a lock a plain thread holds
        // while another greenlet runs, holding the baton: the thread waits for the lock as any thread would.
        var gate = new object();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var plain = new Thread(() =>
        {
            lock (gate)
            {
                held.Set();
                release.Wait(); // until the returning thread has seen the lock taken
                Thread.Sleep(50); // off any hub, the original: the returning thread's enter meets the lock held
            }
        });
        bool contended = false;
        int returnerThread = 0;
        Hub.ReturningFromReleasedCallForTesting = () =>
        {
            Hub.ReturningFromReleasedCallForTesting = null; // this call only
            returnerThread = Environment.CurrentManagedThreadId;
            contended = !Monitor.TryEnter(gate);
            if (!contended) Monitor.Exit(gate);
            release.Set();
            lock (gate) { }
        };
        try
        {
            int callThread = 0;
            var caller = Green.Spawn(() => Green.RunBlocking(() =>
            {
                callThread = Environment.CurrentManagedThreadId;
                plain.Start();
                held.Wait();
            }), "caller");
            var busy = Green.Spawn(HoldTheBaton, "busy"); // runs as the call is released, and holds the baton while it returns
            Green.JoinAll([busy, caller], raiseError: true);
            Assert.That(contended, Is.True, "the lock was free when the returning thread took it: nothing was tested");
            Assert.That(returnerThread, Is.EqualTo(callThread));
        }
        finally
        {
            Hub.ReturningFromReleasedCallForTesting = null;
            release.Set();
            if (plain.ThreadState != System.Threading.ThreadState.Unstarted) plain.Join();
        }
    }
}
