using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// <c>Thread.Interrupt</c> of a greenlet's thread, the old way of cancelling a worker, is the greenlet's: its interruptible
/// waits throw <see cref="ThreadInterruptedException"/> at once, those a thread's interrupt does not end either (a socket
/// read) leave it for the next one, and nothing of it is left on the carrier for whichever greenlet runs there next.
/// </summary>
public class ThreadInterruptTests : PatchedHubTest
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(10);

    public static IEnumerable<TestCaseData> Waits()
    {
        yield return new TestCaseData((Action)(() => Thread.Sleep(Long))).SetArgDisplayNames("Thread.Sleep");
        yield return new TestCaseData((Action)(() => Task.Delay(Long).Wait())).SetArgDisplayNames("Task.Wait");
        yield return new TestCaseData((Action)(() => SpinWait.SpinUntil(() => false, Long))).SetArgDisplayNames("SpinWait.SpinUntil");
        yield return new TestCaseData((Action)(() => new ManualResetEventSlim().Wait(Long))).SetArgDisplayNames("ManualResetEventSlim.Wait");
        yield return new TestCaseData((Action)(() => new SemaphoreSlim(0).Wait(Long))).SetArgDisplayNames("SemaphoreSlim.Wait");
        yield return new TestCaseData((Action)(() => new AutoResetEvent(false).WaitOne(Long))).SetArgDisplayNames("WaitHandle.WaitOne");
        yield return new TestCaseData((Action)(() =>
        {
            var gate = new object();
            lock (gate) Monitor.Wait(gate, Long);
        })).SetArgDisplayNames("Monitor.Wait");
    }

    [TestCaseSource(nameof(Waits))]
    public void AnotherGreenletsInterruptEndsTheWaitAtOnce(Action wait) =>
        InterruptEndsTheWait(wait, target => Green.Spawn(() => target.Interrupt()).Join());

    [TestCaseSource(nameof(Waits))]
    public void APlainThreadsInterruptEndsTheWaitAtOnce(Action wait) =>
        InterruptEndsTheWait(wait, target =>
        {
            var thread = new Thread(target.Interrupt);
            thread.Start();
            thread.Join();
        });

    private static void InterruptEndsTheWait(Action wait, Action<Thread> interrupt)
    {
        for (int round = 0; round < 3; round++)
        {
            Thread? target = null;
            Exception? outcome = null;
            long ended = 0;
            var waiter = Green.Spawn(() =>
            {
                target = Thread.CurrentThread;
                try
                {
                    wait();
                }
                catch (Exception e)
                {
                    outcome = e;
                }
                ended = Stopwatch.GetTimestamp();
            });
            Green.Sleep(50);
            long sent = Stopwatch.GetTimestamp();
            interrupt(target!);
            waiter.Join();
            Assert.That(outcome, Is.InstanceOf<ThreadInterruptedException>(), $"round {round}");
            Assert.That(Stopwatch.GetElapsedTime(sent, ended), Is.LessThan(TimeSpan.FromSeconds(5)), "the wait ran on instead of ending");
            AssertNoInterruptLeftBehind();
        }
    }

    [Test]
    public void AnInterruptDuringASocketReadWaitsForTheGreenletsNextWaitAsOnAThread()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var server = listener.Accept();
        Thread? target = null;
        int received = -1;
        Exception? atNextWait = null;
        var reader = Green.Spawn(() =>
        {
            target = Thread.CurrentThread;
            received = client.Receive(new byte[1]); // a thread's interrupt does not end a socket read
            try
            {
                Thread.Sleep(Long);
            }
            catch (ThreadInterruptedException e)
            {
                atNextWait = e;
            }
        });
        Green.Sleep(50);
        target!.Interrupt();
        Green.Sleep(100);
        Assert.That(reader.Ready, Is.False, "the read ended without its byte");
        server.Send([42]);
        reader.Join();
        Assert.That(received, Is.EqualTo(1));
        Assert.That(atNextWait, Is.Not.Null, "the interrupt was lost");
        AssertNoInterruptLeftBehind();
    }

    /// <summary>A contended enter waits with the baton released. On a thread, an interrupt during it throws from the enter,
    /// CoreLib's own lock enters too (measured on .NET 10: <c>SemaphoreSlim.Release</c> with its internal lock held throws
    /// and the permit is lost). A user's lock on a plain object does the same on a greenlet. An enter of CoreLib's, which
    /// the runtime lets wait on (CoreLib's bookkeeping is not written for an exception there), consumed the interrupt: the
    /// greenlet's next wait ran its full length. Now the interrupt stays pending for that next wait.</summary>
    [TestCase("lock on an object")]
    [TestCase("SemaphoreSlim.Release")]
    [TestCase("lock on a List<int>")]
    public void AnInterruptDuringAContendedLockEnterIsNeverLost(string kind)
    {
        var semaphore = new SemaphoreSlim(0);
        object gate = kind switch
        {
            "SemaphoreSlim.Release" => typeof(SemaphoreSlim).GetField("m_lockObjAndDisposed", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(semaphore)!,
            "lock on a List<int>" => new List<int>(),
            _ => new object(),
        };
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = new Thread(() =>
        {
            lock (gate)
            {
                held.Set();
                release.Wait();
            }
        });
        holder.Start();
        held.Wait();
        Thread? target = null;
        string? entered = null;
        Exception? atEnter = null, atNextWait = null;
        var waiter = Green.Spawn(() =>
        {
            target = Thread.CurrentThread;
            try
            {
                if (kind == "SemaphoreSlim.Release") semaphore.Release();
                else EnterAndExit(gate);
                entered = "entered";
            }
            catch (ThreadInterruptedException e)
            {
                atEnter = e;
            }
            try
            {
                Thread.Sleep(atEnter is null ? Long : TimeSpan.FromMilliseconds(200)); // it ends at once when pending
            }
            catch (ThreadInterruptedException e)
            {
                atNextWait = e;
            }
        });
        Green.Sleep(50); // waiting for the lock, released
        target!.Interrupt();
        Green.Sleep(50);
        release.Set();
        holder.Join();
        Assert.That(waiter.Join(TimeSpan.FromSeconds(5)), Is.True, "the interrupt was lost: the next wait ran its full length");
        if (kind == "lock on an object")
        {
            Assert.That(atEnter, Is.Not.Null, "the enter throws, as on a thread");
            Assert.That(atNextWait, Is.Null, "one interrupt, one exception");
        }
        else
        {
            Assert.That(entered, Is.EqualTo("entered"), "CoreLib's enter waits on");
            Assert.That(atNextWait, Is.Not.Null, "the interrupt stayed pending for the next wait");
        }
        if (kind == "SemaphoreSlim.Release") Assert.That(semaphore.CurrentCount, Is.EqualTo(1));
        AssertNoInterruptLeftBehind();
    }

    /// <summary>A user's <c>lock</c> placed right in a <c>try</c> that catches <see cref="ThreadInterruptedException"/>: on a
    /// thread the interrupt throws from the contended enter, into that handler, and nothing is left for the next wait. The
    /// greenlet does the same. Such a handler keeps a kill's interrupt out of the enter (a kill is no exception it catches:
    /// UnwindingCleanupTests), and it used to keep the thread's interrupt out too: the greenlet entered, and the interrupt
    /// came out of its next wait instead, outside the handler.</summary>
    [TestCase("object", false)]
    [TestCase("object", true)]
    [TestCase("Lock", false)]
    [TestCase("Lock", true)]
    public void AnInterruptDuringAContendedLockEnterInATryThatCatchesItThrowsFromTheEnterAsOnAThread(string kind, bool onGreenlet)
    {
        var monitor = new object();
        var lockObject = new Lock();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = new Thread(() =>
        {
            if (kind == "Lock") lockObject.Enter();
            else Monitor.Enter(monitor);
            held.Set();
            release.Wait();
            if (kind == "Lock") lockObject.Exit();
            else Monitor.Exit(monitor);
        });
        holder.Start();
        held.Wait();
        Thread? target = null;
        bool entered = false;
        Exception? atEnter = null, atNextWait = null;
        void Body()
        {
            target = Thread.CurrentThread;
            try
            {
                if (kind == "Lock")
                {
                    lock (lockObject) entered = true;
                }
                else
                {
                    lock (monitor) entered = true;
                }
            }
            catch (ThreadInterruptedException e)
            {
                atEnter = e;
            }
            try
            {
                Thread.Sleep(TimeSpan.FromMilliseconds(200));
            }
            catch (ThreadInterruptedException e)
            {
                atNextWait = e;
            }
        }
        Func<TimeSpan, bool> join;
        if (onGreenlet)
        {
            var g = Green.Spawn(Body);
            join = t => g.Join(t);
        }
        else
        {
            var thread = new Thread(Body);
            thread.Start();
            join = t => thread.Join(t);
        }
        Green.Sleep(100); // waiting for the lock
        target!.Interrupt();
        Green.Sleep(50);
        release.Set();
        holder.Join();
        Assert.That(join(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(atEnter, Is.Not.Null, "the enter throws into the handler around it, as on a thread");
        Assert.That(entered, Is.False);
        Assert.That(atNextWait, Is.Null, "one interrupt, one exception");
        AssertNoInterruptLeftBehind();
    }

    // A frame of its own with no handler around the enter: one that catches ThreadInterruptedException there is taken for
    // code that retries the enter (Cooperative.CallerKeepsInterruptsOut).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void EnterAndExit(object gate)
    {
        lock (gate) { }
    }

    [Test]
    public void AGreenletThatInterruptsItselfGetsItAtItsNextWait()
    {
        var g = Green.Spawn(() =>
        {
            Thread.CurrentThread.Interrupt();
            Thread.Sleep(10_000);
        });
        g.Join();
        Assert.That(g.Exception, Is.InstanceOf<ThreadInterruptedException>());
        AssertNoInterruptLeftBehind();
    }

    [Test]
    public void TheThreadOfAGreenletThatHasEndedIsLeftAlone()
    {
        Thread? stale = null;
        Green.Spawn(() => stale = Thread.CurrentThread).Join();
        stale!.Interrupt(); // a pooled carrier now: the greenlet the caller knew has ended
        AssertNoInterruptLeftBehind();
    }

    [Test]
    public void APlainThreadIsInterruptedByTheOriginal()
    {
        Exception? outcome = null;
        using var started = new ManualResetEventSlim();
        var thread = new Thread(() =>
        {
            started.Set();
            try
            {
                Thread.Sleep(Long);
            }
            catch (Exception e)
            {
                outcome = e;
            }
        });
        thread.Start();
        started.Wait();
        thread.Interrupt();
        Assert.That(thread.Join(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(outcome, Is.InstanceOf<ThreadInterruptedException>());
    }

    /// <summary>Later greenlets, which reuse the carriers, wait without meeting an interrupt that was not theirs.</summary>
    private static void AssertNoInterruptLeftBehind()
    {
        int stray = 0;
        var later = Enumerable.Range(0, 20).Select(_ => Green.Spawn(() =>
        {
            try
            {
                new ManualResetEventSlim().Wait(5);
                Thread.Sleep(1);
                var gate = new object();
                lock (gate) Monitor.Wait(gate, 1);
            }
            catch (ThreadInterruptedException)
            {
                Interlocked.Increment(ref stray);
            }
        })).ToList();
        Green.JoinAll(later);
        Assert.That(stray, Is.Zero, "an interrupt was left on a carrier");
    }
}
