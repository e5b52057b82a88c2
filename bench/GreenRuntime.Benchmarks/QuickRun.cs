using System.Diagnostics;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// The same workloads as bench/SideBySide/anchors/switch.py and spawn.py, timed the same way
/// (wall clock around joinall, best of 3), so the two can be run back to back and compared as ratios.
/// </summary>
internal static class QuickRun
{
    public static void Run(int switches)
    {
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
        Report("switch_sleep0_stackful", switches, "switches_per_s", () => Sleep0(switches));
        Report("switch_yield_stackless", switches, "switches_per_s", () => YieldStackless(switches));
        Report("spawn_join_noop", 100_000, "greenlets_per_s", () => SpawnJoin(100_000));
    }

    private static void Report(string name, int n, string unit, Action run)
    {
        run(); // warm-up: JIT and carrier pool
        var best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var watch = Stopwatch.StartNew();
            run();
            best = Math.Min(best, watch.Elapsed.TotalSeconds);
        }
        Console.WriteLine($"{{\"bench\": \"{name}\", \"N\": {n}, \"seconds\": {best:F4}, \"{unit}\": {n / best:F0}}}");
    }

    private static void Sleep0(int switches)
    {
        void Worker()
        {
            for (int i = 0; i < switches / 2; i++) Green.Sleep(0);
        }
        Green.JoinAll([Green.Spawn(Worker), Green.Spawn(Worker)]);
    }

    private static void YieldStackless(int switches)
    {
        async Task Worker()
        {
            for (int i = 0; i < switches / 2; i++) await Task.Yield();
        }
        Green.JoinAll([Green.SpawnAsync(Worker), Green.SpawnAsync(Worker)]);
    }

    private static void SpawnJoin(int n)
    {
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++) all[i] = Green.Spawn(static () => { });
        Green.JoinAll(all);
    }
}
