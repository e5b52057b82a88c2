using System.Diagnostics;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// Cross-hub queue throughput: items through one bounded GreenQueue, producers on some hubs of a HubGroup and
/// consumers on the others (every hand-off that finds a waiter of another hub wakes it through that hub's inbox),
/// against the same greenlets on one hub.
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- quick-hubs [items]
/// </summary>
public static class HubGroupThroughput
{
    public static void Run(int items)
    {
        foreach (var hubs in new[] { 1, 2, 4 })
        {
            using var group = new HubGroup(hubs, new HubOptions { MaxBlockingTime = null });
            Measure(group, items, 0); // warm-up
            var best = double.MaxValue;
            for (int i = 0; i < 3; i++) best = Math.Min(best, Measure(group, items, i));
            Console.WriteLine($"{{\"bench\": \"queue_across_hubs\", \"hubs\": {hubs}, \"N\": {items}, \"seconds\": {best:F4}, \"items_per_s\": {items / best:F0}}}");
        }
    }

    /// <summary>Two producers and two consumers per pair of hubs; with one hub all four share it.</summary>
    private static double Measure(HubGroup group, int items, int round)
    {
        int hubs = group.Hubs.Count;
        var q = new GreenQueue<int>(maxSize: 256);
        const int producers = 4, consumers = 4;
        int each = items / producers;
        long sum = 0;
        var watch = Stopwatch.StartNew();
        var all = new List<Greenlet>();
        for (int p = 0; p < producers; p++)
            all.Add(group.SpawnOn(hubs == 1 ? 0 : p % (hubs / 2), () => { for (int i = 0; i < each; i++) q.Put(i); }));
        for (int c = 0; c < consumers; c++)
            all.Add(group.SpawnOn(hubs == 1 ? 0 : hubs / 2 + c % (hubs / 2), () =>
            {
                long local = 0;
                for (int i = 0; i < each; i++) local += q.Get();
                Interlocked.Add(ref sum, local);
            }));
        foreach (var g in all) g.Join();
        var seconds = watch.Elapsed.TotalSeconds;
        long expected = (long)each * (each - 1) / 2 * producers;
        if (sum != expected) throw new InvalidOperationException($"round {round}: lost or duplicated items (sum {sum}, expected {expected})");
        return seconds;
    }
}
