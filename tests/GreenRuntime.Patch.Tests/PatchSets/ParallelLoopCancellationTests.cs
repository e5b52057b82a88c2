using System.Diagnostics;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// <c>Parallel.For</c>, <c>ForEach</c> and <c>Invoke</c> in a greenlet that is killed, or whose timeout expires, while
/// part of the work runs on the greenlet and part on pool threads: as on a thread whose interrupt lands in its own
/// part, the call waits for the pool's part before it throws, and the kill or timeout ends the greenlet or the scope.
/// </summary>
[TestFixture]
public class ParallelLoopCancellationTests : PatchedHubTest
{
    /// <summary>What happened around one Parallel call.</summary>
    private sealed class Scene
    {
        public int PoolRunning;
        public int Running;
        public int FinishedAfterReturn;
        public int RunningAtReturn = -1;
        public bool Returned;
        public Exception? Thrown;

        /// <summary>One iteration (or action). On the greenlet: waits, shielded, until the pool runs an iteration too, then
        /// sleeps (patched) until the kill or timeout ends it. On a pool thread: a real 300 ms sleep.</summary>
        public void Iteration()
        {
            Interlocked.Increment(ref Running);
            bool onGreenlet = Parking.CurrentHub is not null;
            try
            {
                if (onGreenlet)
                {
                    var waited = Stopwatch.StartNew();
                    using (Green.Shield())
                    {
                        while (Volatile.Read(ref PoolRunning) == 0 && waited.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(5);
                    }
                    Thread.Sleep(10_000);
                }
                else
                {
                    Interlocked.Increment(ref PoolRunning);
                    try { Thread.Sleep(300); }
                    finally { Interlocked.Decrement(ref PoolRunning); }
                }
            }
            finally
            {
                Interlocked.Decrement(ref Running);
                if (Volatile.Read(ref Returned)) Interlocked.Increment(ref FinishedAfterReturn);
            }
        }

        public void Run(string loop)
        {
            try
            {
                var four = new ParallelOptions { MaxDegreeOfParallelism = 4 };
                Action[] actions = [Iteration, Iteration, Iteration];
                switch (loop)
                {
                    case "For": Parallel.For(0, 64, four, _ => Iteration()); break;
                    case "ForEach": Parallel.ForEach(Enumerable.Range(0, 64), four, _ => Iteration()); break;
                    case "Invoke": Parallel.Invoke(actions); break; // few actions: one task each, waited with Task.WaitAll
                    case "Invoke, bounded": Parallel.Invoke(new ParallelOptions { MaxDegreeOfParallelism = 2 }, actions); break; // replicas
                    default: throw new ArgumentOutOfRangeException(nameof(loop));
                }
            }
            catch (Exception e)
            {
                Thrown = e;
                throw;
            }
            finally
            {
                RunningAtReturn = Volatile.Read(ref Running);
                Volatile.Write(ref Returned, true);
            }
        }

        /// <summary>Lets iterations that outlived the call end, so that they are counted.</summary>
        public void Settle()
        {
            var watch = Stopwatch.StartNew();
            while (Volatile.Read(ref Running) > 0 && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(10);
        }
    }

    private static readonly string[] s_loops = ["For", "ForEach", "Invoke", "Invoke, bounded"];

    [TestCaseSource(nameof(s_loops))]
    public void AKilledGreenletsParallelCallWaitsForItsIterationsThenEndsAsKilled(string loop)
    {
        var scene = new Scene();
        var g = Green.Spawn(() => scene.Run(loop));
        var watch = Stopwatch.StartNew();
        while (Volatile.Read(ref scene.PoolRunning) == 0 && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(5);
        Assert.That(scene.PoolRunning, Is.GreaterThan(0), "scene: an iteration runs on the pool");
        g.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
        scene.Settle();

        Assert.That(scene.RunningAtReturn, Is.Zero, "iterations still running when the call returned");
        Assert.That(scene.FinishedAfterReturn, Is.Zero, "iterations that ended after the call returned");
        Assert.That(scene.Thrown, Is.InstanceOf<AggregateException>(), "the call throws as on a thread, after its iterations");
        Assert.That(((AggregateException)scene.Thrown!).InnerExceptions, Has.Some.InstanceOf<GreenletExit>());
        Assert.That((g.Successful, g.Exception), Is.EqualTo((true, (Exception?)null)), "the greenlet ends as killed");
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());
    }

    [TestCaseSource(nameof(s_loops))]
    public void AParallelCallWhoseTimeoutExpiresWaitsForItsIterationsThenTheTimeoutIsRaised(string loop)
    {
        var scene = new Scene();
        var outcome = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(200), () => { scene.Run(loop); return "returned"; }, "timed out"));
        Assert.That(outcome.Get(), Is.EqualTo("timed out"));
        scene.Settle();

        Assert.That(scene.RunningAtReturn, Is.Zero, "iterations still running when the call returned");
        Assert.That(scene.FinishedAfterReturn, Is.Zero, "iterations that ended after the call returned");
        Assert.That(scene.Thrown, Is.InstanceOf<AggregateException>(), "the call throws as on a thread, after its iterations");
        Assert.That(((AggregateException)scene.Thrown!).InnerExceptions, Has.Some.InstanceOf<GreenTimeoutException>());
    }

    [Test]
    public void AWaitOfTheLoopsBodyAfterAKillIsStillACancellationPoint()
    {
        // Only Parallel's own wait for its replicas is exempt: a task wait that the body makes on the greenlet, under
        // Parallel's frames, raises the pending kill at once. The iteration runs on the greenlet only when its wait
        // inlines the replica before a pool thread takes it; a round in which the pool took it is tried again.
        for (int round = 0; round < 20; round++)
        {
            var never = new TaskCompletionSource();
            bool? waitReturned = null;
            Exception? waitThrew = null;
            bool onGreenlet = false;
            using var started = new ManualResetEventSlim();
            var g = Green.Spawn(() =>
            {
                int greenletThread = Environment.CurrentManagedThreadId;
                Parallel.For(0, 1, _ =>
                {
                    onGreenlet = Environment.CurrentManagedThreadId == greenletThread;
                    started.Set();
                    if (!onGreenlet) return;
                    try
                    {
                        Thread.Sleep(10_000);
                    }
                    catch (GreenletExit)
                    {
                        try { waitReturned = never.Task.Wait(TimeSpan.FromSeconds(10)); }
                        catch (Exception e) { waitThrew = e; }
                    }
                });
            });
            var watch = Stopwatch.StartNew();
            while (!started.IsSet && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(5);
            if (!onGreenlet)
            {
                g.Join(TimeSpan.FromSeconds(10));
                continue;
            }
            g.Kill(timeout: TimeSpan.FromSeconds(30));
            Assert.That(waitReturned, Is.Null, "the body's own wait ran to its timeout");
            Assert.That(waitThrew, Is.InstanceOf<GreenletExit>());
            Assert.That(g.Successful, Is.True);
            return;
        }
        Assert.Fail("the loop's iteration never ran on the greenlet in 20 rounds");
    }
}
