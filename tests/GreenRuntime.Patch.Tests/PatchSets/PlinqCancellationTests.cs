using System.Diagnostics;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// PLINQ queries in a greenlet that is killed, or whose timeout expires, while part of the query runs on pool threads:
/// as on a thread whose interrupt lands in the query, the query waits for its work on the pool before it throws
/// (a <c>ForAll</c>, <c>ToList</c>, <c>ToArray</c>, <c>Sum</c> or fully buffered <c>foreach</c> with the
/// <see cref="AggregateException"/> holding the kill; a pipelined <c>foreach</c>, whose consumer's wait for data raised
/// it, with the kill itself once the enumerator's <c>Dispose</c> has waited), and the kill or timeout ends the greenlet or
/// the scope. PLINQ's wait for data stays a cancellation point.
/// </summary>
[TestFixture]
public class PlinqCancellationTests : PatchedHubTest
{
    private const int Elements = 8; // range-partitioned over 4 partitions: 2 each

    /// <summary>Makes <paramref name="query"/> in <paramref name="scene"/>, each element one piece of its work.</summary>
    private static void Run(SplitWorkScene scene, string query) =>
        scene.Run(() => Query(query, i => { scene.Work(); return i; }));

    /// <summary>Runs <paramref name="query"/> over 0..<see cref="Elements"/> with <paramref name="element"/>; returns the
    /// elements it produced, in the order it produced them.</summary>
    private static List<int> Query(string query, Func<int, int> element)
    {
        var source = Enumerable.Range(0, Elements).AsParallel().WithDegreeOfParallelism(4);
        var ordered = Enumerable.Range(0, Elements).AsParallel().AsOrdered().WithDegreeOfParallelism(4);
        var seen = new List<int>();
        switch (query)
        {
            case "ForAll": source.ForAll(i => element(i)); break;
            case "ToList": seen.AddRange(source.Select(element).ToList()); break;
            case "ToArray": seen.AddRange(source.Select(element).ToArray()); break;
            case "Sum": seen.Add(source.Select(element).Sum()); break;
            case "AsOrdered ToList": seen.AddRange(ordered.Select(element).ToList()); break;
            case "foreach, fully buffered":
                foreach (var x in source.WithMergeOptions(ParallelMergeOptions.FullyBuffered).Select(element)) seen.Add(x);
                break;
            case "foreach, pipelined":
                foreach (var x in source.Select(element)) seen.Add(x);
                break;
            case "foreach, pipelined, AsOrdered":
                foreach (var x in ordered.Select(element)) seen.Add(x);
                break;
            default: throw new ArgumentOutOfRangeException(nameof(query));
        }
        return seen;
    }

    private static readonly string[] s_queries =
        ["ForAll", "ToList", "ToArray", "Sum", "AsOrdered ToList", "foreach, fully buffered", "foreach, pipelined", "foreach, pipelined, AsOrdered"];

    /// <summary>A pipelined query's consumer raised the kill in its wait for the next element, as a thread's interrupt is
    /// thrown there, and its <c>MoveNext</c> throws it as it is; every other query throws the
    /// <see cref="AggregateException"/> of the partition that met it.</summary>
    private static void AssertThrownHolds<TCancel>(string query, Exception? thrown)
        where TCancel : Exception
    {
        if (query.StartsWith("foreach, pipelined", StringComparison.Ordinal))
        {
            Assert.That(thrown, Is.InstanceOf<TCancel>(), "a pipelined query's consumer throws the kill, as a thread's throws its interrupt");
            return;
        }
        Assert.That(thrown, Is.InstanceOf<AggregateException>(), "the query throws as on a thread, after its work");
        Assert.That(((AggregateException)thrown!).Flatten().InnerExceptions, Has.Some.InstanceOf<TCancel>());
    }

    [TestCaseSource(nameof(s_queries))]
    public void AKilledGreenletsQueryWaitsForItsWorkThenEndsAsKilled(string query)
    {
        var scene = new SplitWorkScene();
        var g = Green.Spawn(() => Run(scene, query));
        var watch = Stopwatch.StartNew();
        while (Volatile.Read(ref scene.PoolRunning) == 0 && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(5);
        Assert.That(scene.PoolRunning, Is.GreaterThan(0), "scene: an element runs on the pool");
        g.Kill(timeout: TimeSpan.FromSeconds(10));
        Assert.That(g.Dead, Is.True);
        scene.Settle();

        Assert.That(scene.RunningAtReturn, Is.Zero, "elements still running when the query returned");
        Assert.That(scene.FinishedAfterReturn, Is.Zero, "elements that ended after the query returned");
        AssertThrownHolds<GreenletExit>(query, scene.Thrown);
        Assert.That((g.Successful, g.Exception), Is.EqualTo((true, (Exception?)null)), "the greenlet ends as killed");
        Assert.That(g.Value, Is.InstanceOf<GreenletExit>());

        var next = Green.Spawn(() => Query(query, i => { Thread.Sleep(20); return i; }));
        Assert.That(next.Get(), Has.Count.EqualTo(query == "Sum" ? 1 : query == "ForAll" ? 0 : Elements), "a later query in another greenlet");
    }

    [TestCaseSource(nameof(s_queries))]
    public void AQueryWhoseTimeoutExpiresWaitsForItsWorkThenTheTimeoutIsRaised(string query)
    {
        var scene = new SplitWorkScene();
        var outcome = Green.Spawn(() => Green.WithTimeout(TimeSpan.FromMilliseconds(200), () => { Run(scene, query); return "returned"; }, "timed out"));
        Assert.That(outcome.Get(), Is.EqualTo("timed out"));
        scene.Settle();

        Assert.That(scene.RunningAtReturn, Is.Zero, "elements still running when the query returned");
        Assert.That(scene.FinishedAfterReturn, Is.Zero, "elements that ended after the query returned");
        AssertThrownHolds<GreenTimeoutException>(query, scene.Thrown);
    }

    [Test]
    public void APipelinedQuerysWaitForDataIsStillACancellationPoint()
    {
        // Only PLINQ's waits for its own tasks are exempt. Its consumer's wait for the next element is not: a kill there
        // ends the enumeration, the enumerator's Dispose stops the partitions after the elements under way, and the rest
        // never start. Were that wait shielded too, the loop would go on consuming every element of the query.
        const int many = 16; // 4 rounds of 300 ms on each of 4 partitions
        int started = 0, consumed = 0;
        Exception? thrown = null;
        var g = Green.Spawn(() =>
        {
            try
            {
                foreach (var _ in Enumerable.Range(0, many).AsParallel().WithDegreeOfParallelism(4).Select(i =>
                         {
                             Interlocked.Increment(ref started);
                             Thread.Sleep(300);
                             return i;
                         }))
                {
                    consumed++;
                }
            }
            catch (Exception e)
            {
                thrown = e;
                throw;
            }
        });
        var watch = Stopwatch.StartNew();
        while (Volatile.Read(ref started) == 0 && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(5);
        g.Kill(timeout: TimeSpan.FromSeconds(10));

        Assert.That(g.Dead, Is.True);
        Assert.That(thrown, Is.InstanceOf<GreenletExit>());
        Assert.That(started, Is.LessThan(many), "the query stopped: not every element started");
        Assert.That(consumed, Is.LessThan(many));
    }

    private static readonly string[] s_failingQueries = ["ForAll", "ToList", "Sum", "foreach, pipelined", "foreach, fully buffered"];

    [TestCaseSource(nameof(s_failingQueries))]
    public void AnElementsExceptionSurfacesAsOnAThread(string query)
    {
        static int Failing(int i)
        {
            Thread.Sleep(5);
            return i == 3 ? throw new InvalidOperationException("element " + i) : i;
        }

        static Exception? Thrown(string query)
        {
            try
            {
                Query(query, Failing);
                return null;
            }
            catch (Exception e)
            {
                return e;
            }
        }

        Exception? onThread = null;
        var thread = new Thread(() => onThread = Thrown(query));
        thread.Start();
        thread.Join();
        var onGreenlet = Green.Spawn(() => Thrown(query)).Get();

        Assert.That(onThread, Is.InstanceOf<AggregateException>(), "scene: PLINQ's exception on a thread");
        Assert.That(onGreenlet, Is.InstanceOf<AggregateException>());
        Assert.That(((AggregateException)onGreenlet!).InnerExceptions.Select(e => (e.GetType(), e.Message)),
            Is.EqualTo(((AggregateException)onThread!).InnerExceptions.Select(e => (e.GetType(), e.Message))));
    }

    [Test]
    public void AnOrderedQueryOnAGreenletGivesItsElementsInOrder()
    {
        static int Element(int i)
        {
            if (i % 3 == 0) Thread.Sleep(i % 2 == 0 ? 15 : 1); // patched: other greenlets and partitions go on
            return i * 2;
        }

        var expected = Enumerable.Range(0, Elements).Select(i => i * 2).ToList();
        var greenlets = Enumerable.Range(0, 3)
            .Select(_ => Green.Spawn(() => (Query("AsOrdered ToList", Element), Query("foreach, pipelined, AsOrdered", Element))))
            .ToList();
        Green.JoinAll(greenlets, raiseError: true);
        foreach (var g in greenlets)
        {
            Assert.That(g.Get().Item1, Is.EqualTo(expected));
            Assert.That(g.Get().Item2, Is.EqualTo(expected));
        }
    }
}
