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
    /// <summary>Makes the Parallel call named <paramref name="loop"/> in <paramref name="scene"/>.</summary>
    private static void Run(SplitWorkScene scene, string loop)
    {
        var four = new ParallelOptions { MaxDegreeOfParallelism = 4 };
        Action[] actions = [scene.Work, scene.Work, scene.Work];
        scene.Run(() =>
        {
            switch (loop)
            {
                case "For": Parallel.For(0, 64, four, _ => scene.Work()); break;
                case "ForEach": Parallel.ForEach(Enumerable.Range(0, 64), four, _ => scene.Work()); break;
                case "Invoke": Parallel.Invoke(actions); break; // few actions: one task each, waited with Task.WaitAll
                case "Invoke, bounded": Parallel.Invoke(new ParallelOptions { MaxDegreeOfParallelism = 2 }, actions); break; // replicas
                default: throw new ArgumentOutOfRangeException(nameof(loop));
            }
        });
    }

    private static readonly string[] s_loops = ["For", "ForEach", "Invoke", "Invoke, bounded"];

    [TestCaseSource(nameof(s_loops))]
    public void AKilledGreenletsParallelCallWaitsForItsIterationsThenEndsAsKilled(string loop)
    {
        var scene = new SplitWorkScene();
        var g = Green.Spawn(() => Run(scene, loop));
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
        var scene = new SplitWorkScene();
        var outcome = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(200), () => { Run(scene, loop); return "returned"; }, "timed out"));
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
