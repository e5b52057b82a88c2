using System.Runtime.ExceptionServices;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Lock waits on a hub whose carriers are all taken (<see cref="HubOptions.MaxCarriers"/> reached): a greenlet that
/// cannot hand the hub to a free carrier must still not block it while it waits for a lock, a <see cref="Lock"/> or a
/// <see cref="Mutex"/> that a parked greenlet of the same hub holds. Each test runs its hub on a thread of its own with
/// a bounded join, so a hub that stops for good fails the test instead of hanging the run.
/// </summary>
public class NoCarrierLeftLockTests : PatchedHubTest
{
    private const int Workers = 20, Rounds = 50, RecordSize = 200;

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Test]
    public void ALockHeldAcrossAFileWriteIsWaitedForWithoutBlockingTheHub()
    {
        var gate = new object();
        AssertLikeThreads(critical => { lock (gate) critical(); });
    }

    [Test]
    public void ASystemThreadingLockHeldAcrossAFileWriteIsWaitedForWithoutBlockingTheHub()
    {
        var gate = new Lock();
        AssertLikeThreads(critical => { lock (gate) critical(); });
    }

    [Test]
    public void AMutexHeldAcrossAFileWriteIsWaitedForWithoutBlockingTheHub()
    {
        using var mutex = new Mutex(false);
        AssertLikeThreads(critical =>
        {
            Assert.That(mutex.WaitOne(), Is.True);
            try
            {
                critical();
            }
            finally
            {
                mutex.ReleaseMutex();
            }
        });
    }

    [Test]
    public void AMonitorTryEnterWithATimeoutWaitsWithoutBlockingTheHub()
    {
        var gate = new object();
        AssertLikeThreads(critical =>
        {
            while (!Monitor.TryEnter(gate, 10_000)) { }
            try
            {
                critical();
            }
            finally
            {
                Monitor.Exit(gate);
            }
        });
    }

    [Test]
    public void AKillEndsAnEnterThatWaitsWithNoCarrierLeftAndTakesNothing()
    {
        var result = OnOwnHub(2, () =>
        {
            var gate = new object();
            var release = new Event();
            bool entered = false;
            var holder = Green.Spawn(() =>
            {
                lock (gate) release.Wait();
            });
            var waiter = Green.Spawn(() =>
            {
                Green.Sleep(5);
                lock (gate) entered = true;
            });
            Green.Sleep(100); // the waiter is polling: both carriers are taken
            bool couldRelease = Parking.CanReleaseBaton;
            waiter.Kill();
            release.Set();
            Green.JoinAll([holder, waiter], Bound);
            bool free = Monitor.TryEnter(gate);
            if (free) Monitor.Exit(gate);
            return (couldRelease, waiter.Dead, entered, free);
        });
        Assert.That(result, Is.EqualTo((false, true, false, true)), "at the cap; ended by the kill; never entered; the lock is free afterwards");
    }

    [Test]
    public void AThreadInterruptEndsAPolledEnterInATryThatCatchesItAsOnAThread()
    {
        // The handler makes the pauses shielded (a kill stays pending there: see UnwindingCleanupTests), but the thread's
        // interrupt is what it catches: on a thread it throws from the enter, and so it does here, after the pause it came
        // in. It used to stay pending through the enter and come out of the next wait, outside the handler.
        var result = OnOwnHub(2, () =>
        {
            var gate = new object();
            var release = new Event();
            Thread? target = null;
            bool entered = false, atEnter = false, atNextWait = false;
            var holder = Green.Spawn(() =>
            {
                lock (gate) release.Wait();
            });
            var waiter = Green.Spawn(() =>
            {
                target = Thread.CurrentThread;
                Green.Sleep(5);
                try
                {
                    lock (gate) entered = true;
                }
                catch (ThreadInterruptedException)
                {
                    atEnter = true;
                }
                try
                {
                    Thread.Sleep(200);
                }
                catch (ThreadInterruptedException)
                {
                    atNextWait = true;
                }
            });
            Green.Sleep(100); // the waiter is polling: both carriers are taken
            bool couldRelease = Parking.CanReleaseBaton;
            target!.Interrupt();
            Green.Sleep(100);
            release.Set();
            Green.JoinAll([holder, waiter], Bound);
            return (couldRelease, waiter.Dead, entered, atEnter, atNextWait);
        });
        Assert.That(result, Is.EqualTo((false, true, false, true, false)), "at the cap; ended; never entered; the enter threw; nothing left for the next wait");
    }

    [TestCase(2)]
    [TestCase(4)]
    public void ABoundedBufferWithMonitorWaitBetweenGreenletsMovesEveryItemOnce(int maxCarriers)
    {
        // Producers and consumers, one carrier each, wait for room or items with Monitor.Wait and log each move to a
        // file inside the lock, so the holder parks there and the others wait to enter: every carrier is taken while a
        // greenlet holding the monitor has to wait in Monitor.Wait. (More greenlets than carriers could not work on
        // threads either: those that did not start could never pulse the ones waiting.)
        int Producers = maxCarriers / 2, Consumers = maxCarriers / 2;
        const int PerProducer = 300, Capacity = 4;
        var received = OnOwnHub(maxCarriers, () =>
        {
            var gate = new object();
            var buffer = new Queue<int>();
            var taken = new List<int>();
            var path = Path.GetTempFileName();
            try
            {
                using var log = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, bufferSize: 1);
                var record = new byte[16];
                var producers = Enumerable.Range(0, Producers).Select(p => Green.Spawn(() =>
                {
                    for (int i = 0; i < PerProducer; i++)
                    {
                        lock (gate)
                        {
                            while (buffer.Count == Capacity) Monitor.Wait(gate);
                            buffer.Enqueue(p * PerProducer + i);
                            log.Write(record);
                            Monitor.PulseAll(gate);
                        }
                    }
                }));
                var consumers = Enumerable.Range(0, Consumers).Select(_ => Green.Spawn(() =>
                {
                    for (int i = 0; i < PerProducer; i++)
                    {
                        lock (gate)
                        {
                            while (buffer.Count == 0) Monitor.Wait(gate);
                            taken.Add(buffer.Dequeue());
                            log.Write(record);
                            Monitor.PulseAll(gate);
                        }
                    }
                }));
                var all = producers.Concat(consumers).ToList();
                Assert.That(Green.JoinAll(all, Bound, raiseError: true), Has.Count.EqualTo(all.Count));
                return taken;
            }
            finally
            {
                File.Delete(path);
            }
        });
        Assert.That(received, Is.EquivalentTo(Enumerable.Range(0, Producers * PerProducer)), "every item was taken exactly once");
        for (int p = 0; p < Producers; p++)
        {
            var fromProducer = received.Where(x => x / PerProducer == p).ToList();
            Assert.That(fromProducer, Is.Ordered, $"producer {p}'s items were taken in the order it put them");
        }
    }

    /// <summary>Runs <see cref="Workers"/> workers that each enter the critical section <see cref="Rounds"/> times through
    /// <paramref name="withLock"/> and write a record to a file inside it (a write the Files set offloads, so the holder
    /// parks holding the lock): first on plain threads, then as greenlets of a hub with 8 carriers. Both must finish with
    /// every record written and no two workers inside at once.</summary>
    private static void AssertLikeThreads(Action<Action> withLock)
    {
        var onThreads = Run(withLock, body =>
        {
            var threads = Enumerable.Range(0, Workers).Select(_ => new Thread(() => body())).ToList();
            threads.ForEach(t => t.Start());
            threads.ForEach(t => t.Join());
        });
        var onGreenlets = OnOwnHub(8, () => Run(withLock, body =>
        {
            var greenlets = Enumerable.Range(0, Workers).Select(_ => Green.Spawn(body)).ToList();
            Assert.That(Green.JoinAll(greenlets, Bound, raiseError: true), Has.Count.EqualTo(Workers));
        }));
        var expected = (Entries: Workers * Rounds, Length: (long)Workers * Rounds * RecordSize, Overlaps: 0);
        Assert.That(onThreads, Is.EqualTo(expected), "on threads");
        Assert.That(onGreenlets, Is.EqualTo(expected), "on greenlets");
    }

    private static (int Entries, long Length, int Overlaps) Run(Action<Action> withLock, Action<Action> runWorkers)
    {
        var path = Path.GetTempFileName();
        try
        {
            int entries = 0, inside = 0, overlaps = 0;
            using (var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, bufferSize: 1))
            {
                var record = new byte[RecordSize];
                runWorkers(() =>
                {
                    for (int i = 0; i < Rounds; i++)
                    {
                        withLock(() =>
                        {
                            if (Interlocked.Increment(ref inside) != 1) Interlocked.Increment(ref overlaps);
                            file.Write(record);
                            entries++;
                            Interlocked.Decrement(ref inside);
                        });
                    }
                });
            }
            return (entries, new FileInfo(path).Length, overlaps);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Runs <paramref name="body"/> as the main greenlet of a hub with <paramref name="maxCarriers"/> carriers, on
    /// a thread of its own; fails if that does not end within <see cref="Bound"/>.</summary>
    private static T OnOwnHub<T>(int maxCarriers, Func<T> body)
    {
        T result = default!;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxCarriers = maxCarriers, MaxBlockingTime = null });
                result = body();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true, Name = "no-carrier hub" };
        thread.Start();
        Assert.That(thread.Join(Bound), Is.True, $"the hub with {maxCarriers} carriers finished (it stopped for good when a lock wait blocked it)");
        if (failure != null) ExceptionDispatchInfo.Throw(failure);
        return result;
    }
}
