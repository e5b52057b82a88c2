using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Cleanup that a kill or timeout runs as it unwinds (a <c>Dispose</c> or <c>finally</c> that blocks) completes, as it does
/// on a thread, whose interrupt is raised once: only the raise inside a <c>catch</c> handler and in the try body repeats.
/// Legacy drivers swallowed the repeated raise in their Dispose and skipped returning the connection to its pool.
/// </summary>
[TestFixture]
public class UnwindingCleanupTests : PatchedHubTest
{
    /// <summary>A peer on a plain thread that answers each byte after a pause, so the receive of the answer must wait.</summary>
    private sealed class SlowEchoPeer : IDisposable
    {
        private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly Thread _thread;

        public SlowEchoPeer()
        {
            _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            _listener.Listen();
            _thread = new Thread(Serve) { IsBackground = true };
            _thread.Start();
        }

        public EndPoint EndPoint => _listener.LocalEndPoint!;

        private void Serve()
        {
            try
            {
                while (true)
                {
                    using var peer = _listener.Accept();
                    var one = new byte[1];
                    while (peer.Receive(one) == 1)
                    {
                        Thread.Sleep(50);
                        peer.Send(one);
                    }
                }
            }
            catch (SocketException) { } // disposed
            catch (ObjectDisposedException) { }
        }

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>A driver's transaction: its Dispose sends a rollback and waits for the answer.</summary>
    private sealed class RoundTripOnDispose(Socket socket) : IDisposable
    {
        public bool Answered { get; private set; }
        public Exception? Failed { get; private set; }

        public void Dispose()
        {
            try
            {
                socket.Send([42]);
                var one = new byte[1];
                Answered = socket.Receive(one) == 1 && one[0] == 42;
            }
            catch (Exception e)
            {
                Failed = e; // as drivers do in Close: swallowed, and the rest of the cleanup skipped
            }
        }
    }

    private static Socket Connect(EndPoint endPoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Connect(endPoint);
        return socket;
    }

    private static void UsingStatement(RoundTripOnDispose tx)
    {
        using (tx) Thread.Sleep(10_000);
    }

    private static void UsingDeclaration(RoundTripOnDispose tx)
    {
        using var disposed = tx;
        Thread.Sleep(10_000);
    }

    private static void TwoFramesDeep(RoundTripOnDispose tx)
    {
        using var disposed = tx;
        SleepInTry();
    }

    private static void SleepInTry()
    {
        try
        {
            Thread.Sleep(10_000);
        }
        finally
        {
            Green.Sleep(0); // a finally of its own on the way
        }
    }

    private static readonly Dictionary<string, Action<RoundTripOnDispose>> Shapes = new()
    {
        ["using"] = UsingStatement,
        ["using var"] = UsingDeclaration,
        ["two frames deep"] = TwoFramesDeep,
    };

    [TestCase("using")]
    [TestCase("using var")]
    [TestCase("two frames deep")]
    public void ADisposeThatMakesASocketRoundTripAfterAKillCompletesIt(string shape)
    {
        using var peer = new SlowEchoPeer();
        using var socket = Connect(peer.EndPoint);
        var tx = new RoundTripOnDispose(socket);
        var g = Green.Spawn(() => Shapes[shape](tx));
        Green.Sleep(20);
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(tx.Failed, Is.Null, "the rollback's round trip was not interrupted again");
        Assert.That(tx.Answered, Is.True);
    }

    [Test]
    public void ADisposeThatMakesASocketRoundTripAfterAThreadInterruptCompletesIt()
    {
        // The same code on a plain thread: the interrupt is raised once, and the cleanup completes.
        using var peer = new SlowEchoPeer();
        using var socket = Connect(peer.EndPoint);
        var tx = new RoundTripOnDispose(socket);
        Exception? ended = null;
        var thread = new Thread(() =>
        {
            try { UsingDeclaration(tx); }
            catch (ThreadInterruptedException e) { ended = e; }
        });
        thread.Start();
        Thread.Sleep(50);
        thread.Interrupt();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(ended, Is.Not.Null);
        Assert.That(tx.Failed, Is.Null);
        Assert.That(tx.Answered, Is.True);
    }

    [Test]
    public void ADisposeThatMakesASocketRoundTripAfterAnExpiredTimeoutCompletesIt()
    {
        using var peer = new SlowEchoPeer();
        using var socket = Connect(peer.EndPoint);
        var tx = new RoundTripOnDispose(socket);
        var outcome = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(20), () => { UsingDeclaration(tx); return "slept"; }, "timed out")).Get();
        Assert.That(outcome, Is.EqualTo("timed out"));
        Assert.That(tx.Failed, Is.Null);
        Assert.That(tx.Answered, Is.True);
    }

    [Test]
    public void ALockTakenInAFinallyAfterAKillIsHeldAcrossItsBlockingCall()
    {
        var gate = new object();
        bool cleanedUp = false;
        var holder = Green.Spawn(() =>
        {
            lock (gate) Thread.Sleep(100);
        });
        var g = Green.Spawn(() =>
        {
            try
            {
                Thread.Sleep(10_000);
            }
            finally
            {
                lock (gate) // contended: the holder sleeps in it
                {
                    Thread.Sleep(20);
                    cleanedUp = true;
                }
            }
        });
        Green.Sleep(20);
        g.Kill();
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(cleanedUp, Is.True);
        holder.Join();
        Assert.That(Monitor.TryEnter(gate), Is.True, "the lock was released");
        Monitor.Exit(gate);
    }

    [Test]
    public void ACatchEverythingLoopWhoseDisposeBlocksStillEndsOnTheSleepInItsCatch()
    {
        int swallowed = 0, disposed = 0;
        var g = Green.Spawn(() =>
        {
            while (true)
            {
                try
                {
                    Transaction(() => disposed++);
                }
                catch (Exception)
                {
                    swallowed++;
                    Thread.Sleep(100);
                }
            }
        });
        Green.Sleep(170); // inside the second Sleep(100) of the try body
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(swallowed, Is.EqualTo(1));
        Assert.That(disposed, Is.EqualTo(2), "the Dispose run by the kill slept to its end");
    }

    private static void Transaction(Action done)
    {
        using (new SleepOnDispose(done)) Thread.Sleep(100);
    }

    private sealed class SleepOnDispose(Action done) : IDisposable
    {
        public void Dispose()
        {
            Thread.Sleep(20);
            done();
        }
    }

    private static async Task AsyncMethodRunSynchronously(Action done)
    {
        using (new SleepOnDispose(done))
            Thread.Sleep(10_000); // killed here, before any await: the method runs on the greenlet's own stack
        await Task.Yield();
    }

    private static async Task AsyncMethodThatCatches(Action caught)
    {
        try
        {
            using (new SleepOnDispose(static () => { }))
                Thread.Sleep(10_000);
        }
        catch (GreenletExit)
        {
            Thread.Sleep(10_000); // the method's own catch takes the kill: its handler raises it again
            caught();
        }
        await Task.Yield();
    }

    [Test]
    public void AnAsyncMethodsDisposeRunSynchronouslyAfterAKillCompletesItsBlockingCall()
    {
        // The compiler wraps an async method's body in a catch that hands the exception to its task, so the kill lands in
        // the method's own frame, and its using's Dispose looked like a handler of the catch that takes the kill.
        bool disposed = false, caughtThenSlept = false;
        var worker = Green.Spawn(() => AsyncMethodRunSynchronously(() => disposed = true).GetAwaiter().GetResult());
        Green.Sleep(20);
        worker.Kill();
        Assert.That(disposed, Is.True, "the Dispose's blocking call completed");
        var catcher = Green.Spawn(() => AsyncMethodThatCatches(() => caughtThenSlept = true).GetAwaiter().GetResult());
        Green.Sleep(20);
        catcher.Kill(timeout: TimeSpan.FromSeconds(5));
        Assert.That((catcher.Dead, caughtThenSlept), Is.EqualTo((true, false)), "a catch of the method's own code still raises the kill");
    }

    [Test]
    public void ASecondKillInterruptsACleanupThatBlocks()
    {
        bool cleanedUp = false;
        var g = Green.Spawn(() =>
        {
            try
            {
                Thread.Sleep(10_000);
            }
            finally
            {
                Thread.Sleep(10_000);
                cleanedUp = true;
            }
        });
        Green.Sleep(20);
        g.Kill(block: false);
        Green.Sleep(20);
        Assert.That(g.Dead, Is.False, "the cleanup waits");
        g.Kill();
        Assert.That(g.Dead, Is.True);
        Assert.That(cleanedUp, Is.False);
    }
    /// <summary>Lucene.Net's UninterruptableMonitor.Enter: a lock enter that catches the interrupt and retries.</summary>
    private static void UninterruptableEnter(object gate)
    {
        while (true)
        {
            try
            {
                Monitor.Enter(gate);
                return;
            }
            catch (Exception e) when (e is ThreadInterruptedException)
            {
            }
        }
    }

    [Test]
    public void AKillDuringALockEnterThatRetriesInterruptsTakesTheLockAndIsRaisedAtTheNextBlockingCall()
    {
        var gate = new object();
        bool entered = false, sleptAfter = false;
        var holder = Green.Spawn(() =>
        {
            lock (gate) Thread.Sleep(100);
        });
        var waiter = Green.Spawn(() =>
        {
            UninterruptableEnter(gate); // contended: the holder sleeps in it
            try
            {
                entered = true;
            }
            finally
            {
                Monitor.Exit(gate);
            }
            Thread.Sleep(10_000);
            sleptAfter = true;
        });
        Green.Sleep(20);
        waiter.Kill();
        Assert.That(waiter.Value, Is.InstanceOf<GreenletExit>());
        Assert.That(entered, Is.True, "the enter waited for the lock instead of failing");
        Assert.That(sleptAfter, Is.False, "the kill was raised at the next blocking call");
        holder.Join();
    }
}
