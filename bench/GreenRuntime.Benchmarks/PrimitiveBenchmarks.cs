using System.Diagnostics;
using BenchmarkDotNet.Attributes;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// Primitive hand-off costs, shaped like bench/SideBySide/anchors/switch.py (event, queue, channel modes): two
/// greenlets ping-pong, and each benchmark reports the time per switch (one greenlet-to-greenlet transfer) through
/// OperationsPerInvoke. Pool.Map maps 100k items through a pool of 100 and reports the time per item.
/// </summary>
[MemoryDiagnoser]
public class PrimitiveBenchmarks
{
    internal const int Switches = 100_000;
    internal const int MapItems = 100_000;
    private Hub _hub = null!;

    [GlobalSetup]
    public void Setup() => _hub = new Hub(new HubOptions { MaxBlockingTime = null });

    [GlobalCleanup]
    public void Cleanup() => _hub.Dispose();

    /// <summary>A sets eb and waits ea; B waits eb and sets ea (gevent's "event" mode), stackful.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void EventPingPongStackful() => PrimitiveWorkloads.EventStackful(Switches);

    /// <summary>The same with stackless greenlets and WaitAsync.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void EventPingPongStackless() => PrimitiveWorkloads.EventStackless(Switches);

    /// <summary>A puts into q1 and gets from q2; B echoes (gevent's "queue" mode), stackful.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void QueuePingPongStackful() => PrimitiveWorkloads.QueueStackful(Switches);

    /// <summary>The same with stackless greenlets and GetAsync/PutAsync.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void QueuePingPongStackless() => PrimitiveWorkloads.QueueStackless(Switches);

    /// <summary>gevent's "channel" mode: the queue ping-pong through two zero-capacity channels, stackful.</summary>
    [Benchmark(OperationsPerInvoke = Switches)]
    public void ChannelPingPongStackful() => PrimitiveWorkloads.ChannelStackful(Switches);

    /// <summary>GreenPool(100).Map over 100k items (each a tiny stackful greenlet).</summary>
    [Benchmark(OperationsPerInvoke = MapItems)]
    public int PoolMap100k() => PrimitiveWorkloads.PoolMap(MapItems);
}

/// <summary>The workloads behind <see cref="PrimitiveBenchmarks"/>, also timed by <c>quick-prims</c> (best of 3).</summary>
internal static class PrimitiveWorkloads
{
    public static void EventStackful(int switches)
    {
        int rounds = switches / 2;
        var ea = new Event();
        var eb = new Event();
        void A() { for (int i = 0; i < rounds; i++) { eb.Set(); ea.Wait(); ea.Clear(); } }
        void B() { for (int i = 0; i < rounds; i++) { eb.Wait(); eb.Clear(); ea.Set(); } }
        Green.JoinAll([Green.Spawn(B), Green.Spawn(A)]);
    }

    public static void EventStackless(int switches)
    {
        int rounds = switches / 2;
        var ea = new Event();
        var eb = new Event();
        async Task A() { for (int i = 0; i < rounds; i++) { eb.Set(); await ea.WaitAsync(); ea.Clear(); } }
        async Task B() { for (int i = 0; i < rounds; i++) { await eb.WaitAsync(); eb.Clear(); ea.Set(); } }
        Green.JoinAll([Green.SpawnAsync(B), Green.SpawnAsync(A)]);
    }

    public static void QueueStackful(int switches)
    {
        int rounds = switches / 2;
        var q1 = new GreenQueue<int>();
        var q2 = new GreenQueue<int>();
        void A() { for (int i = 0; i < rounds; i++) { q1.Put(i); q2.Get(); } }
        void B() { for (int i = 0; i < rounds; i++) q2.Put(q1.Get()); }
        Green.JoinAll([Green.Spawn(B), Green.Spawn(A)]);
    }

    public static void QueueStackless(int switches)
    {
        int rounds = switches / 2;
        var q1 = new GreenQueue<int>();
        var q2 = new GreenQueue<int>();
        async Task A() { for (int i = 0; i < rounds; i++) { await q1.PutAsync(i); await q2.GetAsync(); } }
        async Task B() { for (int i = 0; i < rounds; i++) await q2.PutAsync(await q1.GetAsync()); }
        Green.JoinAll([Green.SpawnAsync(B), Green.SpawnAsync(A)]);
    }

    public static void ChannelStackful(int switches)
    {
        int rounds = switches / 2;
        var c1 = new GreenChannel<int>();
        var c2 = new GreenChannel<int>();
        void A() { for (int i = 0; i < rounds; i++) { c1.Put(i); c2.Get(); } }
        void B() { for (int i = 0; i < rounds; i++) c2.Put(c1.Get()); }
        Green.JoinAll([Green.Spawn(B), Green.Spawn(A)]);
    }

    public static int PoolMap(int items)
    {
        var pool = new GreenPool(100);
        return pool.Map(static x => x & 1, Enumerable.Range(0, items)).Count;
    }

    /// <summary>Prints one JSON line per workload, like the gevent anchors in bench/SideBySide/anchors (best of 3 after a warm-up).</summary>
    public static void QuickRun(int switches)
    {
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
        Report("switch_event_stackful", switches, "switches_per_s", () => EventStackful(switches));
        Report("switch_event_stackless", switches, "switches_per_s", () => EventStackless(switches));
        Report("switch_queue_stackful", switches, "switches_per_s", () => QueueStackful(switches));
        Report("switch_queue_stackless", switches, "switches_per_s", () => QueueStackless(switches));
        Report("switch_channel_stackful", switches, "switches_per_s", () => ChannelStackful(switches));
        Report("pool_map_100k", PrimitiveBenchmarks.MapItems, "items_per_s", () => PoolMap(PrimitiveBenchmarks.MapItems));
    }

    private static void Report(string name, int n, string unit, Action run)
    {
        run();
        var best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var watch = Stopwatch.StartNew();
            run();
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }
        Console.WriteLine($"{{\"bench\": \"{name}\", \"N\": {n}, \"seconds\": {best:F4}, \"{unit}\": {n / best:F0}}}");
    }
}
