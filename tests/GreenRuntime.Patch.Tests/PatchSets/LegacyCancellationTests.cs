using System.Text;
using System.Reflection;
using System.Net.Sockets;
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

    [Test]
    public void CoreLibsSpinBackOffsAreNoCancellationPointsButTheSameCallsFromOtherCodeAre()
    {
        bool spunThrough = false;
        var raised = Green.WithTimeout(TimeSpan.FromMilliseconds(20), () =>
        {
            var watch = Stopwatch.StartNew();
            while (watch.ElapsedMilliseconds < 60) { } // the timeout expires meanwhile, raised at the next blocking point
            var spinLock = new SpinLock(false);
            bool taken = false;
            var holder = new Thread(() =>
            {
                bool held = false;
                spinLock.Enter(ref held);
                Thread.Sleep(50); // off the hub: a plain sleep
                spinLock.Exit();
            });
            holder.Start();
            while (!spinLock.IsHeld) { }
            spinLock.Enter(ref taken); // CoreLib's SpinLock spins with SpinWait: Thread.Sleep(0), Sleep(1) and Yield inside
            spinLock.Exit();
            spunThrough = true;
            Thread.Sleep(1); // this code's own call: a cancellation point
            return "not raised";
        }, "raised");
        Assert.That((spunThrough, raised), Is.EqualTo((true, "raised")));
    }

    [Test]
    public void SpinUntilInOtherCodeIsACancellationPoint()
    {
        // SpinWait is CoreLib's, but a SpinUntil of user code is a polling loop: its back-offs count as that code's.
        bool flag = false;
        var watch = Stopwatch.StartNew();
        var outcome = Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => SpinWait.SpinUntil(() => flag, 5000) ? "flag" : "gave up", "raised");
        Assert.That(outcome, Is.EqualTo("raised"));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(4)), "the timeout ended the spin, not SpinUntil's own");
    }

    [Test]
    public void ANamedPipeClientsConnectToAMissingPipeEndsOnATimeoutOrAKill()
    {
        // NamedPipeClientStream.Connect polls for the pipe with a SpinWait: that loop is the pipe's, not CoreLib's bookkeeping.
        string Missing() => "gr-missing-" + Guid.NewGuid().ToString("N");
        var outcome = Green.WithTimeout(TimeSpan.FromMilliseconds(100), () =>
        {
            using var pipe = new System.IO.Pipes.NamedPipeClientStream(".", Missing(), System.IO.Pipes.PipeDirection.InOut);
            try
            {
                pipe.Connect(3000);
                return "connected";
            }
            catch (TimeoutException e) when (e is not GreenTimeoutException)
            {
                return "the pipe's own timeout";
            }
        }, "raised");
        Assert.That(outcome, Is.EqualTo("raised"));

        var connecting = Green.Spawn(() =>
        {
            using var pipe = new System.IO.Pipes.NamedPipeClientStream(".", Missing(), System.IO.Pipes.PipeDirection.InOut);
            pipe.Connect(30_000);
        });
        Green.Sleep(50);
        var killer = Green.Spawn(() => connecting.Kill());
        killer.Join(TimeSpan.FromSeconds(10));
        Assert.That((killer.Ready, connecting.Dead), Is.EqualTo((true, true)), "the kill ended the connect");
    }

    [Test]
    public void AReaderWriterLockSlimReleasedWhileUnwindingFromATimeoutStaysConsistent()
    {
        // ExitReadLock takes the lock's internal spin lock; when another thread holds that, it backs off with
        // Thread.Sleep(0) and Sleep(1). Raised there, the expired timeout left the read lock held for good.
        var rw = new ReaderWriterLockSlim();
        var spinLock = typeof(ReaderWriterLockSlim).GetField("_spinLock", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
        var isLocked = spinLock.FieldType.GetField("_isLocked", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
        void SetInternalLock(bool locked)
        {
            object boxed = spinLock.GetValue(rw)!;
            isLocked.SetValue(boxed, locked);
            spinLock.SetValue(rw, boxed);
        }
        var reader = Green.Spawn(() =>
        {
            rw.EnterReadLock();
            return Green.WithTimeout(TimeSpan.FromMilliseconds(30), () =>
            {
                try
                {
                    Thread.Sleep(10_000);
                }
                finally
                {
                    rw.ExitReadLock();
                }
                return "slept";
            }, "timed out");
        });
        Green.Sleep(10);
        SetInternalLock(true); // as another thread inside the lock's bookkeeping would
        Green.Sleep(200); // the timeout has expired and the reader spins in ExitReadLock
        SetInternalLock(false);
        Assert.That(reader.Get(), Is.EqualTo("timed out"));
        Assert.That(rw.CurrentReadCount, Is.Zero, "the read lock was released");
        Assert.That(rw.TryEnterWriteLock(0), Is.True);
        rw.ExitWriteLock();
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AWriterStreamingToASlowReaderEndsAtItsNextSendThatDoesNotFitAfterAKill(string how)
    {
        // Each send gets part of its chunk out at once and waits, shielded, for the rest (a message is never cut), so
        // the writer never met a blocking point: killed, it streamed on to its last chunk. The kill held back by a send
        // is raised at the start of a later send whose chunk does not fit in the socket's free buffer, before any byte
        // of it goes out: between two whole chunks.
        const int chunk = 64 * 1024, chunks = 200;
        var (writerSide, readerSide) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        using (writerSide)
        using (readerSide)
        {
            writerSide.SendBufferSize = 16 * 1024;
            readerSide.ReceiveBufferSize = 16 * 1024;
            long received = 0;
            var reader = new Thread(() =>
            {
                var buffer = new byte[8 * 1024];
                try
                {
                    int n;
                    while ((n = readerSide.Receive(buffer)) > 0)
                    {
                        Interlocked.Add(ref received, n);
                        Thread.Sleep(2); // a slow reader: about 4 MB/s at most
                    }
                }
                catch (SocketException)
                {
                }
            });
            reader.Start();
            int written = 0;
            var writer = Green.Spawn(() =>
            {
                void Stream()
                {
                    var data = new byte[chunk];
                    for (int i = 0; i < chunks; i++)
                    {
                        writerSide.Send(data);
                        written++;
                    }
                }
                if (how == "kill") Stream();
                else Green.WithTimeout(TimeSpan.FromMilliseconds(100), Stream);
            });
            Green.Sleep(100);
            if (how == "kill") writer.Kill(block: false);
            Assert.That(writer.Join(TimeSpan.FromSeconds(10)), Is.True);
            int writtenAtEnd = written;
            writerSide.Shutdown(SocketShutdown.Send);
            reader.Join();
            TestContext.Out.WriteLine($"{how}: {writtenAtEnd} of {chunks} chunks written, {received} bytes received");
            Assert.That(writtenAtEnd, Is.LessThan(chunks / 2), "the writer went on streaming after its kill or timeout");
            Assert.That(received % chunk, Is.Zero, "only whole chunks went out: no send was cut");
        }
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AKillOrTimeoutThatCameBeforeASendIsNotRaisedAtItsStart(string how)
    {
        // SSH.NET encrypts a packet under a counter-mode cipher, then sends it: a kill or timeout raised at the start of
        // that send dropped a packet the cipher had counted, and the session, shared by other greenlets, broke for all.
        // It came in the yield the blocking monitor asks of a greenlet that held the baton too long (here: computing
        // while a ticker waits), taken at the start of the send. On a hub of its own, with the monitor on.
        bool sent = false, ended = false;
        string? got = null;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
            var (a, b) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            using (a)
            using (b)
            {
                ended = WriteAfterAKillOrTimeoutCameWhileComputing(how, () =>
                {
                    a.Send("packet"u8);
                    sent = true;
                });
                var buffer = new byte[16];
                b.ReceiveTimeout = 5000;
                try
                {
                    got = Encoding.ASCII.GetString(buffer, 0, b.Receive(buffer));
                }
                catch (SocketException e)
                {
                    got = e.SocketErrorCode.ToString(); // nothing came
                }
            }
        }) { IsBackground = true };
        runner.Start();
        Assert.That(runner.Join(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(ended, Is.True);
        Assert.That(sent, Is.True, "the send went out; the kill or timeout was raised at the sleep after it");
        Assert.That(got, Is.EqualTo("packet"));
    }

    /// <summary>On the current hub (its blocking monitor on), a worker greenlet computes for 300 ms, during which it is killed
    /// (from another thread) or its 20 ms timeout expires, then calls <paramref name="write"/> and sleeps, where the kill
    /// or timeout is raised; a ticker greenlet makes the monitor ask the worker to yield, which it does at its first send.
    /// Returns whether the worker ended.</summary>
    private static bool WriteAfterAKillOrTimeoutCameWhileComputing(string how, Action write)
    {
        var ticker = Green.Spawn(() => { while (true) Green.Sleep(5); });
        var worker = Green.Spawn(() =>
        {
            void Work()
            {
                var busy = Stopwatch.StartNew();
                while (busy.ElapsedMilliseconds < 300) { } // the kill or timeout comes while it computes
                write();
                Thread.Sleep(10_000);
            }
            if (how == "kill") Work();
            else Green.WithTimeout(TimeSpan.FromMilliseconds(20), Work);
        });
        if (how == "kill")
        {
            var killer = new Thread(() =>
            {
                Thread.Sleep(50);
                worker.Kill(block: false);
            });
            killer.Start();
        }
        bool ended = worker.Join(TimeSpan.FromSeconds(10));
        ticker.Kill();
        return ended;
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AKillOrTimeoutDoesNotCutAMessageWrittenInSeveralSends(string how)
    {
        // NATS.Client writes a message through a BufferedStream: the buffered header goes out as one send, the large
        // payload as the next. A kill or timeout raised at the start of the payload's send (it does not fit in the free
        // buffer) left the header alone on the connection, and the server read the next message as its payload: the
        // connection broke for every greenlet sharing it. Sends hold a kill or timeout back; the next blocking point that
        // is no send raises it. The kill or timeout comes as in the test above, in the yield the blocking monitor asks at
        // the start of the first send.
        const int header = 8, payload = 256 * 1024;
        bool ended = false, sentAll = false;
        long received = 0;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
            var (a, b) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            using (b)
            {
                a.SendBufferSize = 16 * 1024;
                var reader = new Thread(() =>
                {
                    var buffer = new byte[64 * 1024];
                    int n;
                    while ((n = b.Receive(buffer)) > 0) received += n;
                });
                reader.Start();
                using var stream = new BufferedStream(new NetworkStream(a, ownsSocket: false), 4096);
                ended = WriteAfterAKillOrTimeoutCameWhileComputing(how, () =>
                {
                    stream.Write(new byte[header]);  // buffered
                    stream.Write(new byte[payload]); // the header goes out as one send, this as the next
                    sentAll = true;
                });
                a.Shutdown(SocketShutdown.Send);
                reader.Join();
                a.Dispose();
            }
        }) { IsBackground = true };
        runner.Start();
        Assert.That(runner.Join(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(ended, Is.True);
        Assert.That(received, Is.EqualTo(header + payload), "the header's message went out whole");
        Assert.That(sentAll, Is.True, "the kill or timeout was raised at the sleep after the message");
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void ASendToAPeerThatReadsNothingStillEndsAfterAKill(string how)
    {
        // Sends hold a kill or timeout back (test above), but not for ever: one waiting with nothing of it sent, for a
        // reader that takes nothing, raises it once it has been held back for a second. A pipe, the same send loop as a
        // socket's: once full it takes no byte more until its reader reads (a socket's buffers may still move a little).
        using var pipe = new System.IO.Pipes.AnonymousPipeServerStream(System.IO.Pipes.PipeDirection.Out);
        using var reader = new System.IO.Pipes.AnonymousPipeClientStream(System.IO.Pipes.PipeDirection.In, pipe.ClientSafePipeHandle);
        pipe.Write(new byte[64 * 1024]); // the pipe's whole capacity: goes in at once
        bool wrote = false;
        var writer = Green.Spawn(() =>
        {
            void Write()
            {
                pipe.Write(new byte[4096]);
                wrote = true;
            }
            if (how == "kill") Write();
            else Green.WithTimeout(TimeSpan.FromMilliseconds(100), Write);
        });
        Green.Sleep(50);
        Assert.That(writer.WaitReason, Is.EqualTo(WaitReason.Socket), "waits for room, nothing of it written");
        if (how == "kill") writer.Kill(block: false);
        Assert.That(writer.Join(TimeSpan.FromSeconds(10)), Is.True, "the write ended although nobody reads");
        object? end = how == "kill" ? ((Greenlet)writer).Value : ((Greenlet)writer).Exception;
        Assert.That(end, how == "kill" ? Is.InstanceOf<GreenletExit>() : Is.InstanceOf<GreenTimeoutException>());
        Assert.That(wrote, Is.False);
    }

    /// <summary>The monitor SemaphoreSlim takes inside Wait and Release, to hold from another thread as CoreLib would.</summary>
    private static object InternalLockOf(SemaphoreSlim semaphore) =>
        typeof(SemaphoreSlim).GetField("m_lockObjAndDisposed", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!
            .GetValue(semaphore)!;

    [TestCase("kill from a hub callback")]
    [TestCase("timeout")]
    public void CancellingAWaitsTokenNeverWaitsForALockOnTheHub(string how)
    {
        // A kill from a hub callback (ASP.NET Core's RequestAborted) or a timeout's expiry cancelled the token a patched
        // SemaphoreSlim.Wait was given right there on the hub, and SemaphoreSlim's cancellation callback takes the
        // semaphore's lock. A greenlet that had won that lock in a released wait (inside Release) waited for the baton,
        // and the hub for the lock: the process stopped answering. The cancel now runs on a thread of the runtime's. On a
        // hub of its own thread with a deadline, so that a hang fails the test instead of stopping the run.
        Exception? failure = null;
        int released = 0;
        bool waiterEnded = false;
        var run = new Thread(() =>
        {
            try
            {
                using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
                var semaphore = new SemaphoreSlim(0);
                object internalLock = InternalLockOf(semaphore);
                using var held = new ManualResetEventSlim();
                var holder = new Thread(() =>
                {
                    lock (internalLock)
                    {
                        held.Set();
                        Thread.Sleep(300);
                    }
                });
                var waiter = Green.Spawn(() =>
                {
                    if (how == "timeout") Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => semaphore.Wait());
                    else semaphore.Wait();
                });
                Green.Sleep(20); // the waiter waits, its token linked
                holder.Start();
                held.Wait();
                var releaser = Green.Spawn(() =>
                {
                    semaphore.Release(); // waits for the internal lock with the baton released
                    released++;
                });
                Green.Sleep(20);
                if (how != "timeout") hub.Post(() => waiter.Kill(block: false)); // a kill made by hub code
                Green.JoinAll([waiter, releaser], TimeSpan.FromSeconds(10));
                waiterEnded = waiter.Dead;
                holder.Join();
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true };
        run.Start();
        Assert.That(run.Join(TimeSpan.FromSeconds(20)), Is.True, "the hub waited for the semaphore's lock with its baton held");
        Assert.That(failure, Is.Null);
        Assert.That(released, Is.EqualTo(1));
        Assert.That(waiterEnded, Is.True);
    }

    [Test]
    public void AShieldHoldsAKillBackFromAWaitGivenALinkedToken()
    {
        // The token a patched SemaphoreSlim.Wait gets is cancelled by a kill; inside Green.Shield the kill must wait for
        // the shield's end (Npgsql's shielded Open waits in such a SemaphoreSlim): it was raised inside the shield, as an
        // OperationCanceledException.
        var semaphore = new SemaphoreSlim(0);
        string? outcome = null;
        var g = Green.Spawn(() =>
        {
            using (Green.Shield()) semaphore.Wait();
            outcome = "acquired";
            Green.Sleep(10_000); // the kill is raised here
            outcome = "slept";
        });
        Green.Sleep(50);
        g.Kill(block: false);
        Green.Sleep(50);
        semaphore.Release();
        Assert.That(g.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(outcome, Is.EqualTo("acquired"));
        Assert.That(g.Successful, Is.True, () => $"ended with {g.Exception}");
    }

    [Test]
    public void AKillWaitsForALockWhoseObjectIsOfACoreLibType()
    {
        // The JIT inlines CoreLib methods such as SemaphoreSlim.Release into their callers, so the stack does not always
        // show that CoreLib is entering a lock; the lock object's type does (SemaphoreSlim's is a StrongBox<bool>). A
        // killed request's finally { pool.Release(); } threw there and leaked the permit, until no request got one.
        var list = new List<int>();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = new Thread(() =>
        {
            lock (list)
            {
                held.Set();
                release.Wait();
            }
        });
        holder.Start();
        held.Wait();
        bool entered = false;
        var waiter = Green.Spawn(() =>
        {
            lock (list) entered = true;
            Green.Sleep(10_000); // the kill is raised here
        });
        Green.Sleep(50);
        waiter.Kill(block: false);
        Green.Sleep(50);
        Assert.That(waiter.Dead, Is.False, "the kill waits for the lock, as on a thread");
        release.Set();
        holder.Join();
        Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(entered, Is.True);
        Assert.That(waiter.Successful, Is.True);
    }

    [Test]
    public void AKillDoesNotInterruptASystemThreadingLockThatCoreLibEnters()
    {
        // Disposing a CancellationTokenSource with a pending CancelAfter closes its timer under the timer queue's Lock.
        // Interrupted there, Dispose stopped half-way: a linked source (HttpClient makes one per Send) stayed registered
        // on its parent for good, holding the dead greenlet, one per killed request for the life of the client.
        var queues = (Array)typeof(object).Assembly.GetType("System.Threading.TimerQueue")!
            .GetProperty("Instances", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static)!.GetValue(null)!;
        var locks = queues.Cast<object>()
            .Select(q => (Lock)q.GetType().GetProperty("SharedLock", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(q)!)
            .ToList();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var sources = new List<CancellationTokenSource>();
        for (int i = 0; i < 4; i++)
        {
            var source = new CancellationTokenSource();
            source.CancelAfter(TimeSpan.FromMinutes(5)); // a timer on some queue, closed by Dispose
            sources.Add(source);
        }
        var holder = new Thread(() =>
        {
            foreach (var queueLock in locks) queueLock.Enter();
            held.Set();
            release.Wait();
            foreach (var queueLock in locks) queueLock.Exit();
        });
        holder.Start();
        held.Wait();
        int disposed = 0;
        var disposer = Green.Spawn(() =>
        {
            foreach (var source in sources)
            {
                source.Dispose(); // waits for the timer queue's Lock with the baton released
                disposed++;
            }
            Green.Sleep(10_000); // the kill is raised here
        });
        Green.Sleep(50);
        disposer.Kill(block: false);
        Green.Sleep(50);
        release.Set();
        holder.Join();
        Assert.That(disposer.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(disposed, Is.EqualTo(sources.Count), "every Dispose completed; the kill came at the next blocking point");
        Assert.That(disposer.Successful, Is.True, () => $"ended with {disposer.Exception}");
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AKillDoesNotInterruptALockThatCoreLibEnters(string how)
    {
        // SemaphoreSlim.Release takes the semaphore's internal lock. Interrupted there, the Release failed half-way, and
        // BlockingCollection.Add around it left the collection counting an adder that had gone (CompleteAdding spun for
        // ever). CoreLib's own lock waits are no cancellation point: the Release completes, the kill comes after it.
        var semaphore = new SemaphoreSlim(0);
        object internalLock = InternalLockOf(semaphore);
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = new Thread(() =>
        {
            lock (internalLock)
            {
                held.Set();
                release.Wait();
            }
        });
        holder.Start();
        held.Wait();
        string? reached = null;
        var releaser = Green.Spawn(() =>
        {
            void ReleaseThenBlock()
            {
                semaphore.Release(); // waits for the internal lock with the baton released
                reached = "released";
                Green.Sleep(10_000); // the next blocking point raises the kill or timeout
                reached = "slept";
            }
            if (how == "kill") ReleaseThenBlock();
            else Green.WithTimeout(TimeSpan.FromMilliseconds(30), ReleaseThenBlock);
        });
        Green.Sleep(50);
        if (how == "kill") releaser.Kill(block: false);
        else Green.Sleep(100); // the timeout expires while the greenlet waits for the lock
        Green.Sleep(20);
        release.Set();
        holder.Join();
        Assert.That(releaser.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(reached, Is.EqualTo("released"), "the Release completed, and the kill or timeout came at the next blocking point");
        Assert.That(semaphore.CurrentCount, Is.EqualTo(1));
        Assert.That(semaphore.Wait(0), Is.True, "the semaphore works on");
    }

    [TestCase(true)]
    [TestCase(false)]
    public void ATaskCancelledByTheGreenletsOwnKillGivesWayToTheKill(bool continuationsAsynchronously)
    {
        // The runtime cancels the token it gives HttpClient's calls when the greenlet is killed or times out, so the
        // call's task is cancelled as the wait ends: the caller must see the kill (or the timeout), not the task's
        // TaskCanceledException wrapped in an AggregateException.
        var options = continuationsAsynchronously ? TaskCreationOptions.RunContinuationsAsynchronously : TaskCreationOptions.None;
        for (int round = 0; round < 20; round++)
        {
            Exception? seen = null;
            var waiter = Green.Spawn(() =>
            {
                var call = new TaskCompletionSource<string>(options);
                using var registration = Green.Current.CancellationToken.Register(() => call.TrySetCanceled());
                try
                {
                    _ = call.Task.Result;
                }
                catch (Exception e)
                {
                    seen = e;
                    throw;
                }
            });
            Green.Sleep(5);
            waiter.Kill();
            Assert.That(seen, Is.InstanceOf<GreenletExit>(), $"round {round}");
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void ATaskCompletedJustBeforeAKillIsReceivedAndTheKillComesAtTheNextBlockingPoint(bool continuationsAsynchronously)
    {
        // SocketsHttpHandler hands a pooled connection to its queued waiter by completing the waiter's task. A kill that
        // came right after the hand-over was raised from the wait instead of its result, and the connection was lost for
        // good (the pool went on with one connection less). A thread whose token is cancelled a moment after the
        // hand-over receives the connection (and gives it back).
        var options = continuationsAsynchronously ? TaskCreationOptions.RunContinuationsAsynchronously : TaskCreationOptions.None;
        for (int round = 0; round < 20; round++)
        {
            var handOver = new TaskCompletionSource<string>(options);
            string? received = null;
            bool blockedAfter = false;
            var waiter = Green.Spawn(() =>
            {
                received = handOver.Task.GetAwaiter().GetResult();
                blockedAfter = true;
                Green.Sleep(10_000);
            });
            Green.Sleep(20);
            Assert.That(handOver.TrySetResult("connection"), Is.True);
            waiter.Kill(block: false);
            Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True);
            Assert.That(received, Is.EqualTo("connection"), $"round {round}: the completed task's result reached the waiter");
            Assert.That(blockedAfter, Is.True, "the kill was raised at the next blocking point");
            Assert.That(waiter.Successful, Is.True, "the greenlet ended killed");
        }
    }

    [TestCase(true)]
    [TestCase(false)]
    public void AKilledTaskWaitLetsTheCancelBegunOnAnotherThreadRunItsCallbacksBeforeUnwinding(bool continuationsAsynchronously)
    {
        // SocketsHttpHandler withdraws a request queued for a pooled connection through a callback on the request's token,
        // which the runtime cancels on a thread of its own when the greenlet is killed. Resuming with the kill, the
        // greenlet found that cancel begun, its callbacks not run yet, and unwound: unregistering the callback on the way,
        // so the request stayed queued and later took a connection for nobody. A thread leaves that wait only through the
        // callback. Here the cancelling thread is held inside an earlier callback while the greenlet resumes.
        var options = continuationsAsynchronously ? TaskCreationOptions.RunContinuationsAsynchronously : TaskCreationOptions.None;
        for (int round = 0; round < 5; round++)
        {
            var queued = new TaskCompletionSource<string>(options);
            using var cancelling = new ManualResetEventSlim();
            using var gate = new ManualResetEventSlim();
            var waiter = Green.Spawn(() =>
            {
                var token = GreenRuntime.LowLevel.Parking.LinkCancellation(CancellationToken.None, out var linked);
                using (linked)
                using (token.UnsafeRegister(_ => queued.TrySetCanceled(), null)) // runs after the one below (the last registered runs first)
                {
                    // Not disposed here: disposing a registration waits for its callback when it runs on another thread.
                    token.UnsafeRegister(_ =>
                    {
                        if (Hub.CurrentOrNull is not null) return; // cancelled on the hub or the greenlet: not the case here
                        cancelling.Set();
                        gate.Wait(TimeSpan.FromSeconds(10));
                    }, null);
                    _ = queued.Task.GetAwaiter().GetResult();
                }
            });
            Green.Sleep(20);
            waiter.Kill(block: false);
            // Hold the baton until the cancelling thread is inside the cancel, so the waiter resumes to find it begun.
            var held = Stopwatch.StartNew();
            while (!cancelling.IsSet && held.Elapsed < TimeSpan.FromSeconds(10)) Thread.SpinWait(100);
            Assert.That(cancelling.IsSet, Is.True, $"round {round}: the kill's cancel ran on the runtime's thread");
            Green.Sleep(100); // the waiter resumes with the kill meanwhile
            gate.Set();
            Assert.That(waiter.Join(TimeSpan.FromSeconds(10)), Is.True);
            Assert.That(queued.Task.IsCanceled, Is.True, $"round {round}: the queued wait was withdrawn by its callback");
            Assert.That(waiter.Successful, Is.True, "the greenlet ended killed");
        }
    }

    [Test]
    public void AKilledWaitForAnOperationGivenTheGreenletsOwnTokenLetsTheOperationEndBeforeUnwinding()
    {
        // docs/patching.md ("Sync over a library's async API") has code that waits synchronously for a library's async
        // call pass the greenlet's own token. Npgsql's query then sends its server a cancel request from the token's
        // callback and ends when the answer comes, a moment later. The kill ran that callback on the killer and unwound
        // the greenlet at once: the connection's Dispose read the socket the query still read, and waited the whole
        // command timeout for data the query had taken. A thread whose token is cancelled stays in its wait until the
        // query ends, and Dispose finds the connection quiet. Modelled here without a database.
        for (int round = 0; round < 3; round++)
        {
            var (client, server) = GreenRuntime.TestSupport.LoopbackPair.Connect();
            using (client)
            using (server)
            {
                var peer = ServeModelConnection(server);
                ModelConnection? connection = null;
                var victim = Green.Spawn(() =>
                {
                    using var c = connection = new ModelConnection(client);
                    c.Query = c.RunQuery(Green.Current.CancellationToken);
                    c.Query.GetAwaiter().GetResult();
                });
                Green.Sleep(50);
                victim.Kill(block: false);
                Assert.That(victim.Join(TimeSpan.FromSeconds(10)), Is.True, $"round {round}");
                Assert.That(victim.Successful, Is.True, "the greenlet ended killed");
                Assert.That(connection!.DisposedWhileQueryRan, Is.False, $"round {round}: Dispose waited for the query to end");
                Assert.That((char)connection.Goodbye, Is.EqualTo('B'), $"round {round}: Dispose read its own answer");
                Assert.That(connection.Query!.IsCanceled, Is.True, $"round {round}: the query ended through its token");
                Assert.That(connection.CancelledOn, Is.SameAs(victim), $"round {round}: the token's callback ran on the killed greenlet, not on its killer");
                client.Shutdown(SocketShutdown.Both);
                peer.Join(TimeSpan.FromSeconds(10));
            }
        }

        // The same on a thread, its token cancelled by another.
        var (threadClient, threadServer) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        using (threadClient)
        using (threadServer)
        {
            var peer = ServeModelConnection(threadServer);
            using var cts = new CancellationTokenSource();
            ModelConnection? connection = null;
            var thread = new Thread(() =>
            {
                try
                {
                    using var c = connection = new ModelConnection(threadClient);
                    c.Query = c.RunQuery(cts.Token);
                    c.Query.GetAwaiter().GetResult();
                }
                catch (OperationCanceledException)
                {
                }
            });
            thread.Start();
            Thread.Sleep(50);
            cts.Cancel();
            Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True);
            Assert.That((connection!.DisposedWhileQueryRan, connection.Query!.IsCanceled, (char)connection.Goodbye), Is.EqualTo((false, true, 'B')));
            threadClient.Shutdown(SocketShutdown.Both);
            peer.Join(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>A database connection as Npgsql's is, reduced: a query reads the socket asynchronously; its token's
    /// callback sends the server a cancel request, and the query ends when the server answers it ('X'); Dispose says
    /// goodbye ('Q') over the same socket and reads the answer ('B').</summary>
    private sealed class ModelConnection(Socket socket) : IDisposable
    {
        public Task? Query;
        public Greenlet? CancelledOn;
        public bool DisposedWhileQueryRan;
        public byte Goodbye;

        public async Task RunQuery(CancellationToken token)
        {
            var buffer = new byte[1];
            using (token.Register(() =>
            {
                CancelledOn = Hub.CurrentOrNull is { } hub ? hub.CurrentGreenlet : null;
                socket.Send("C"u8);
            }))
            {
                // No token: the driver reads with a timeout of its own.
                if (await socket.ReceiveAsync(buffer, SocketFlags.None) == 1 && buffer[0] == (byte)'X')
                    throw new OperationCanceledException(token);
            }
        }

        public void Dispose()
        {
            DisposedWhileQueryRan = Query is { IsCompleted: false };
            socket.Send("Q"u8);
            socket.ReceiveTimeout = 5000;
            var buffer = new byte[1];
            try
            {
                Goodbye = socket.Receive(buffer) == 1 ? buffer[0] : (byte)0;
            }
            catch (SocketException)
            {
            }
        }
    }

    /// <summary>The server of a <see cref="ModelConnection"/>, on a thread: answers a cancel request after 200 ms.</summary>
    private static Thread ServeModelConnection(Socket socket)
    {
        var thread = new Thread(() =>
        {
            var buffer = new byte[1];
            try
            {
                while (socket.Receive(buffer) == 1)
                {
                    if (buffer[0] == (byte)'C')
                    {
                        Thread.Sleep(200);
                        socket.Send("X"u8);
                    }
                    else if (buffer[0] == (byte)'Q')
                    {
                        socket.Send("B"u8);
                    }
                }
            }
            catch (SocketException)
            {
            }
        }) { IsBackground = true };
        thread.Start();
        return thread;
    }

    /// <summary>A synchronous GET the legacy way (HttpClient.Send, the body read from its stream).</summary>
    private static string SendGet(HttpClient http, string url)
    {
        using var response = http.Send(new HttpRequestMessage(HttpMethod.Get, url));
        using var reader = new StreamReader(response.Content.ReadAsStream());
        return reader.ReadToEnd();
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AGreenletEndedWhileQueuedForAPooledHttpConnectionGivesItsPlaceBack(string how)
    {
        // With MaxConnectionsPerServer reached, HttpClient.Send waits in the pool's queue. A kill or timeout that only
        // interrupted the wait left the queue entry: the pool handed the next free connection to the dead caller, and
        // every later request waited for ever.
        using var server = SlowServer.Http(TimeSpan.FromMilliseconds(300));
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1 });
        var url = $"http://127.0.0.1:{server.Port}/";
        string Get() => SendGet(http, url);
        var holder = Green.Spawn(Get);
        while (server.Connections == 0 && !holder.Dead) Green.Sleep(5);
        var queued = how == "kill"
            ? Green.Spawn(Get)
            : Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(50), Get, "timed out"));
        if (how == "kill")
        {
            // Killed once it waits in the pool's queue, however long the machine takes to get it there.
            while (queued.WaitReason != WaitReason.Task && !queued.Dead) Green.Sleep(5);
            queued.Kill();
        }
        Green.JoinAll([holder, queued], TimeSpan.FromSeconds(10));
        Assert.That(holder.Get(), Is.EqualTo("hello"));
        Assert.That(queued.Dead, Is.True);
        if (how == "timeout") Assert.That(queued.Get(), Is.EqualTo("timed out"), "the timeout, not the request's cancellation");
        var later = Green.Spawn(Get);
        Green.JoinAll([later], TimeSpan.FromSeconds(10));
        Assert.That(later.Ready, Is.True, "a later request got the connection");
        Assert.That(later.Get(), Is.EqualTo("hello"));
    }

    [Test]
    public void AGreenletKilledAsThePoolHandsItAConnectionDoesNotTakeTheConnectionWithIt()
    {
        // The kill lands after the pool handed the queued request a connection (the wait has returned, the greenlet waits
        // for the baton) but before the greenlet ran again. Raised in place of the wait's result, it left the connection
        // with nobody: the pool counted it as busy for ever and every later request waited. A thread whose token is
        // cancelled that late takes the connection, sees the cancellation on it, and closes it.
        using var server = SlowServer.Http(TimeSpan.Zero);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1 });
        var url = $"http://127.0.0.1:{server.Port}/";
        string Get() => SendGet(http, url);
        using var holding = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        // A thread, not a greenlet, holds the one connection: it gives it back while the hub's baton is held here.
        var holder = Task.Run(() =>
        {
            using var response = http.Send(new HttpRequestMessage(HttpMethod.Get, url), HttpCompletionOption.ResponseHeadersRead);
            holding.Set();
            release.Wait();
        });
        while (!holding.IsSet) Green.Sleep(5);
        var queued = Green.Spawn(Get);
        while (queued.WaitReason != WaitReason.Task && !queued.Dead) Green.Sleep(5);
        Assert.That(queued.Dead, Is.False, "the second request waits for the pool's connection");

        release.Set();
        // No cooperative call from here to the kill: the queued greenlet cannot run, whatever the pool hands it waits.
        var watch = Stopwatch.StartNew();
        while (server.Connections < 2 && watch.Elapsed < TimeSpan.FromSeconds(10)) Thread.SpinWait(100);
        Assert.That(server.Connections, Is.EqualTo(2), "the pool opened a connection for the queued request");
        HoldTheBaton(); // the connect completes and the pool hands the connection over
        queued.Kill();
        Assert.That(holder.Wait(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(queued.Dead, Is.True);

        var later = Green.Spawn(Get);
        Green.JoinAll([later], TimeSpan.FromSeconds(10));
        Assert.That(later.Ready, Is.True, "a later request got the connection");
        Assert.That(later.Get(), Is.EqualTo("hello"));
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AnAsyncHttpRequestWaitedForWithResultIsCancelledWithItsGreenlet(string how)
    {
        // Sync-over-async (GetStringAsync(url).Result, and WCF's synchronous calls): a kill or timeout ended the wait but
        // left the request queued for the pool's one connection, then on it until the server answered, so a later
        // request waited behind every abandoned one. Started on a stackful greenlet, the request now gets a token that
        // the greenlet's kill and timeouts cancel.
        var delay = TimeSpan.FromMilliseconds(400);
        using var server = SlowServer.Http(delay);
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1 });
        var url = $"http://127.0.0.1:{server.Port}/";
        string Get() => http.GetStringAsync(url).Result;
        var holder = Green.Spawn(Get);
        Green.Sleep(50);
        var abandoned = Enumerable.Range(0, 5).Select(_ => how == "kill"
            ? Green.Spawn(Get)
            : Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(50), Get, "timed out"))).ToList();
        Green.Sleep(100);
        if (how == "kill") Green.KillAll(abandoned);
        Green.JoinAll(abandoned, TimeSpan.FromSeconds(10));
        Assert.That(abandoned.All(g => g.Dead), Is.True);
        if (how == "timeout") Assert.That(abandoned.Select(g => g.Get()), Has.All.EqualTo("timed out"), "the timeout, not the request's cancellation");
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var later = Green.Spawn(Get);
        Assert.That(later.Get(TimeSpan.FromSeconds(20)), Is.EqualTo("hello"));
        Assert.That(holder.Get(), Is.EqualTo("hello"));
        // The holder's rest and one request of its own (≈ 0.65 s) when the abandoned ones are withdrawn; behind five
        // abandoned requests of 0.4 s each (≈ 2.6 s) when they are not.
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(1.5)), "the later request waited behind the abandoned ones");
    }

    [TestCase("kill", "Send")]
    [TestCase("timeout", "Send")]
    [TestCase("kill", "SendAsync")]
    [TestCase("timeout", "SendAsync")]
    public void RequestsOfAnHttpMessageInvokerEndedByAKillOrTimeoutGiveTheirConnectionBack(string how, string call)
    {
        // gRPC's channel, YARP and others send through an HttpMessageInvoker, not an HttpClient. Its requests got no token
        // of the greenlet's: one on a connection kept it (an HTTP/2 stream, for gRPC) until the server answered, for ever
        // here, and one queued for a pooled connection took the next free one for nobody; with MaxConnectionsPerServer
        // reached, every later request waited.
        using var server = SlowServer.HttpFirstNeverAnswered();
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler { MaxConnectionsPerServer = 1 });
        var url = $"http://127.0.0.1:{server.Port}/";
        string Get()
        {
            var request = new HttpRequestMessage(HttpMethod.Get, url);
            using var response = call == "Send" ? invoker.Send(request, CancellationToken.None) : invoker.SendAsync(request, CancellationToken.None).Result;
            return response.Content.ReadAsStringAsync().Result;
        }
        Greenlet Start(TimeSpan timeout) => how == "kill" ? Green.Spawn(Get) : Green.Spawn(() => Green.WithTimeout(timeout, Get, "timed out"));

        var holder = Start(TimeSpan.FromMilliseconds(600)); // on the one connection, which the server never answers
        while (server.Connections == 0 && !holder.Dead) Green.Sleep(5);
        Green.Sleep(50);
        var queued = Start(TimeSpan.FromMilliseconds(100)); // in the pool's queue
        if (how == "kill")
        {
            while (queued.WaitReason != WaitReason.Task && !queued.Dead) Green.Sleep(5);
            queued.Kill();
            holder.Kill();
        }
        Green.JoinAll([holder, queued], TimeSpan.FromSeconds(10));
        Assert.That(new[] { holder, queued }.Select(g => g.Successful), Has.All.True, "both ended by the kill or timeout");
        if (how == "timeout") Assert.That(new[] { holder, queued }.Select(g => g.Get()), Has.All.EqualTo("timed out"), "the timeout, not the request's cancellation");
        var later = Green.Spawn(Get);
        Green.JoinAll([later], TimeSpan.FromSeconds(10));
        Assert.That(later.Ready, Is.True, "a later request got the connection");
        Assert.That(later.Get(), Is.EqualTo("hello"));
    }

    [TestCase("kill")]
    [TestCase("timeout")]
    public void AnAsyncHttpRequestOtherGreenletsWaitForIsNotCancelledWithTheGreenletThatStartedIt(string how)
    {
        // A single-flight cache: the first caller starts the request, the others wait for the same task. The starter's
        // kill or timeout cancelled the task for every waiter (and poisoned the cache); on threads they get the result.
        using var server = SlowServer.Http(TimeSpan.FromMilliseconds(300));
        using var http = new HttpClient();
        var url = $"http://127.0.0.1:{server.Port}/";
        var shared = new Lazy<Task<string>>(() => http.GetStringAsync(url));
        var starter = how == "kill"
            ? Green.Spawn(() => shared.Value.Result)
            : Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => shared.Value.Result, "gave up"));
        Green.Sleep(20);
        var others = Enumerable.Range(0, 3).Select(_ => Green.Spawn(() => shared.Value.Result)).ToList();
        Green.Sleep(60);
        if (how == "kill") starter.Kill();
        Green.JoinAll([starter, .. others], TimeSpan.FromSeconds(10));
        Assert.That(others.Select(g => g.Get()), Has.All.EqualTo("hello"), "the other waiters got the response");
        Assert.That(shared.Value.Status, Is.EqualTo(TaskStatus.RanToCompletion));
        if (how == "timeout") Assert.That(starter.Get(), Is.EqualTo("gave up"));
    }

    [Test]
    public void ASemaphoreSlimWaitEndedByATimeoutLosesNoLaterWake()
    {
        // SemaphoreSlim counts the waiters a Release has pulsed; a wait ended by Thread.Interrupt after the pulse lost
        // that count, and every later Release woke nobody: the next waiter slept to its timeout with a count free.
        var semaphore = new SemaphoreSlim(0);
        for (int round = 0; round < 30; round++)
        {
            var timedOut = Green.Spawn(() =>
            {
                bool acquired = Green.WithTimeout(TimeSpan.FromMilliseconds(2), () =>
                {
                    semaphore.Wait();
                    return true;
                }, false); // the timeout races the release below
                if (acquired) semaphore.Release();
            });
            var releaser = Green.Spawn(() =>
            {
                Thread.Sleep(2);
                semaphore.Release();
            });
            Green.JoinAll([timedOut, releaser], raiseError: true);
            while (semaphore.Wait(0)) { }
            var watch = Stopwatch.StartNew();
            var waiter = Green.Spawn(() => semaphore.Wait(5000));
            var late = Green.Spawn(() =>
            {
                Thread.Sleep(10);
                semaphore.Release();
            });
            Green.JoinAll([waiter, late], raiseError: true);
            Assert.That(waiter.Get(), Is.True);
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(2.5)), $"round {round}: the Release woke the waiter (it slept to its timeout)");
            while (semaphore.Wait(0)) { }
        }
    }
}
