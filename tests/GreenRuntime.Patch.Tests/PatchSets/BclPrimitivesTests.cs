using System.Collections.Concurrent;
using GreenRuntime.TestSupport;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Synchronisation types of the BCL that legacy code shares between threads, and that wait through the patched calls
/// underneath (<c>ReaderWriterLockSlim</c> on its events, <c>BlockingCollection</c> on <c>SemaphoreSlim</c>,
/// <c>Barrier</c> and <c>CountdownEvent</c> on <c>ManualResetEventSlim</c>): used between greenlets of one hub, they
/// neither deadlock it nor stall its other greenlets.
/// </summary>
public class BclPrimitivesTests : PatchedHubTest
{
    private static readonly TimeSpan GapBound = TimeSpan.FromMilliseconds(150);

    private static void JoinAllSucceeded(IReadOnlyCollection<Greenlet> greenlets)
    {
        var finished = Green.JoinAll(greenlets, TimeSpan.FromSeconds(30));
        Assert.That(finished, Has.Count.EqualTo(greenlets.Count), "every greenlet finished");
        Assert.That(greenlets.Where(g => !g.Successful).Select(g => g.Exception?.ToString()), Is.Empty);
    }

    [Test]
    public void AReaderWriterLockSlimHeldForWritingAcrossASleepLetsTheReadersInAfterwards()
    {
        var rw = new ReaderWriterLockSlim();
        var log = new List<string>();
        var ticker = new Ticker();
        var writer = Green.Spawn(() =>
        {
            rw.EnterWriteLock();
            log.Add("write");
            Thread.Sleep(300);
            log.Add("written");
            rw.ExitWriteLock();
        });
        Green.Sleep(20);
        var readers = Enumerable.Range(0, 5).Select(_ => Green.Spawn(() =>
        {
            rw.EnterReadLock();
            log.Add("read");
            Thread.Sleep(50);
            rw.ExitReadLock();
        })).ToList();
        JoinAllSucceeded([writer, .. readers]);
        ticker.Stop();
        Assert.That(log, Is.EqualTo(new[] { "write", "written", "read", "read", "read", "read", "read" }));
        Assert.That(ticker.LongestGap, Is.LessThan(GapBound));
    }

    [Test]
    public void ABoundedBlockingCollectionMovesItemsInOrderBetweenTwoGreenlets()
    {
        using var queue = new BlockingCollection<int>(boundedCapacity: 10);
        var received = new List<int>();
        var producer = Green.Spawn(() =>
        {
            for (int i = 0; i < 10_000; i++) queue.Add(i);
            queue.CompleteAdding();
        });
        var consumer = Green.Spawn(() =>
        {
            foreach (int item in queue.GetConsumingEnumerable()) received.Add(item);
        });
        JoinAllSucceeded([producer, consumer]);
        Assert.That(received, Is.EqualTo(Enumerable.Range(0, 10_000)));
    }

    /// <summary>Legacy code that feeds a bounded collection from <c>Task.Run</c>: more producers than the pool has
    /// threads, each blocked while its collection is full. A greenlet's wake must not need a pool thread: it once
    /// came through the pool (SemaphoreSlim completes an async waiter there), which took 6.5 ms per item while the pool
    /// grew (3.9 s for 6 × 100 items here).</summary>
    [Test]
    public void BoundedBlockingCollectionsFedByThreadPoolTasksAreDrainedWithoutWaitingForThePoolToGrow()
    {
        ThreadPool.GetMinThreads(out int poolThreads, out _);
        int producers = poolThreads + 4;
        const int Items = 400;
        var sums = new long[producers];
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var consumers = Enumerable.Range(0, producers).Select(p => Green.Spawn(() =>
        {
            using var queue = new BlockingCollection<int>(boundedCapacity: 5);
            var producer = Task.Run(() =>
            {
                for (int i = 0; i < Items; i++) queue.Add(i);
                queue.CompleteAdding();
            });
            foreach (int item in queue.GetConsumingEnumerable()) sums[p] += item;
            producer.Wait();
        })).ToList();
        JoinAllSucceeded(consumers);
        Assert.That(sums, Is.All.EqualTo(Items * (Items - 1) / 2), "every item arrived once");
        // Generous: about 10 ms when wakes are direct; several seconds when each waits for the pool to grow.
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(3)), $"{producers * Items} items through {producers} collections");
    }

    [Test]
    public void GreenletsMeetAtABarrierAndACountdownEvent()
    {
        const int Parties = 4, Phases = 100;
        using var barrier = new Barrier(Parties);
        using var done = new CountdownEvent(Parties);
        var phasesSeen = new int[Parties];
        var parties = Enumerable.Range(0, Parties).Select(i => Green.Spawn(() =>
        {
            for (int k = 0; k < Phases; k++)
            {
                barrier.SignalAndWait();
                phasesSeen[i] = (int)barrier.CurrentPhaseNumber;
            }
            done.Signal();
        })).ToList();
        var waiter = Green.Spawn(() => done.Wait());
        JoinAllSucceeded([.. parties, waiter]);
        Assert.That(phasesSeen, Is.All.EqualTo(Phases));
    }

    private static readonly object s_finalizerLock = new();
    private static int s_finalizersEntered, s_finalizersGaveUp;

    private sealed class NeedsTheLock
    {
        ~NeedsTheLock()
        {
            // Gives up after 5 s, so that a hub that is deadlocked fails the test instead of hanging it.
            if (Monitor.TryEnter(s_finalizerLock, TimeSpan.FromSeconds(5)))
            {
                Monitor.Exit(s_finalizerLock);
                Interlocked.Increment(ref s_finalizersEntered);
            }
            else
            {
                Interlocked.Increment(ref s_finalizersGaveUp);
            }
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void Abandon(int count)
    {
        for (int i = 0; i < count; i++) _ = new NeedsTheLock();
    }

    [Test]
    public void WaitForPendingFinalizersLetsAGreenletHoldingALockAFinalizerNeedsRun()
    {
        // On threads the holder releases the lock after its sleep and the wait returns then.
        s_finalizersEntered = s_finalizersGaveUp = 0;
        var holder = Green.Spawn(() =>
        {
            lock (s_finalizerLock) Thread.Sleep(300);
        });
        Green.Sleep(20);
        var waiter = Green.Spawn(() =>
        {
            Abandon(3);
            GC.Collect();
            GC.WaitForPendingFinalizers();
        });
        JoinAllSucceeded([holder, waiter]);
        Assert.That((s_finalizersEntered, s_finalizersGaveUp), Is.EqualTo((3, 0)), "every finalizer got the lock once its holder released it");
    }

    [TestCase("WaitHandle")]
    [TestCase("WaitHandle(0)")]
    [TestCase("ManualResetEventSlim")]
    [TestCase("SemaphoreSlim")]
    [TestCase("Thread.Join")]
    [TestCase("Monitor.Wait(0)")]
    [TestCase("Socket.Poll(0)")]
    public void ALoopOfWaitsThatAreAlreadySatisfiedLetsTheOtherGreenletsRun(string kind)
    {
        // Lucene.Net's near-real-time reopen waits `while (targetGen > searchingGen) available.WaitOne();`, and the event
        // stays set while the generation it waits for is still being made: none of those waits blocks, and the loop held
        // the baton for good, so the greenlet that would end it never ran again.
        // On a hub of its own, with the blocking monitor on (it asks the holder to give way), on a background thread: on
        // the old source the loop never ended.
        using var handle = new ManualResetEvent(true);
        using var slim = new ManualResetEventSlim(true);
        using var semaphore = new SemaphoreSlim(int.MaxValue);
        var ended = new Thread(() => { });
        ended.Start();
        ended.Join();
        var monitor = new object();
        using var listener = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        long flag = 0;
        int done = 0;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
            var spinner = Green.Spawn(() =>
            {
                while (Interlocked.Read(ref flag) == 0)
                {
                    switch (kind)
                    {
                        case "WaitHandle": handle.WaitOne(); break;
                        case "WaitHandle(0)": handle.WaitOne(0); break;
                        case "ManualResetEventSlim": slim.Wait(); break;
                        case "SemaphoreSlim": semaphore.Wait(); break;
                        case "Thread.Join": ended.Join(); break;
                        case "Monitor.Wait(0)": lock (monitor) Monitor.Wait(monitor, 0); break;
                        case "Socket.Poll(0)": client.Poll(0, System.Net.Sockets.SelectMode.SelectWrite); break;
                    }
                }
            });
            var setter = Green.Spawn(() =>
            {
                Thread.Sleep(10);
                Interlocked.Exchange(ref flag, 1);
            });
            done = Green.JoinAll([spinner, setter], TimeSpan.FromSeconds(20)).Count;
        }) { IsBackground = true };
        runner.Start();
        bool returned = runner.Join(TimeSpan.FromSeconds(30));
        Interlocked.Exchange(ref flag, 1); // lets a spinner that held its hub end
        Assert.That(returned, Is.True, "the hub's thread came back");
        Assert.That(done, Is.EqualTo(2), "the satisfied waits gave the hub up when its monitor asked");
    }
}
