using System.Diagnostics;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// What a garbage collection costs while stackful greenlets are suspended: every suspended stackful greenlet keeps
/// a parked carrier thread, and every collection walks the stack of every thread. N greenlets loop "allocate a
/// 10 KB buffer, sleep 20 ms" (a blocking request handler in miniature) for 5 s; printed are the collections, the
/// mean pause per gen-0 collection and the share of wall time the hub spent paused, for N = 0 (only the allocating
/// greenlet) and for the given counts. Compare runs of the same process settings (workstation or server GC).
/// </summary>
internal static class GcPauseWithParkedCarriers
{
    /// <summary>Where each buffer goes, so that the JIT cannot allocate it on the stack or drop it.</summary>
    private static byte[]? s_last;

    private static int Allocate() => (s_last = new byte[10_000]).Length;

    public static void Run(IReadOnlyList<int> counts)
    {
        foreach (int n in counts)
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
            var stop = new Event();
            long allocated = 0;
            var greenlets = new List<Greenlet>();
            for (int i = 0; i < n; i++)
            {
                greenlets.Add(Green.Spawn(() =>
                {
                    while (!stop.IsSet)
                    {
                        allocated += Allocate();
                        Green.Sleep(20);
                    }
                }));
            }
            // Keeps the allocation rate up when N is small, so every count sees collections.
            greenlets.Add(Green.Spawn(() =>
            {
                while (!stop.IsSet)
                {
                    for (int k = 0; k < 100; k++) allocated += Allocate();
                    Green.Sleep(1);
                }
            }));
            Green.Sleep(2_000); // every greenlet parked at least once, the carriers created
            int collections0 = GC.CollectionCount(0);
            var paused0 = GC.GetTotalPauseDuration();
            var watch = Stopwatch.StartNew();
            Green.Sleep(5_000);
            double seconds = watch.Elapsed.TotalSeconds;
            int collections = GC.CollectionCount(0) - collections0;
            double pausedMs = (GC.GetTotalPauseDuration() - paused0).TotalMilliseconds;
            stop.Set();
            Green.JoinAll(greenlets);
            Console.WriteLine(
                $"{{\"bench\": \"gc_pause_parked_carriers\", \"greenlets\": {n}, \"server_gc\": {(System.Runtime.GCSettings.IsServerGC ? "true" : "false")}, " +
                $"\"collections\": {collections}, \"ms_per_collection\": {pausedMs / Math.Max(1, collections):F2}, " +
                $"\"paused_share\": {pausedMs / 1000 / seconds:F3}, \"allocated_mb\": {allocated / 1e6:F0}}}");
        }
    }
}
