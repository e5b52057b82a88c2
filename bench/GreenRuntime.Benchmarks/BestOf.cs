using System.Diagnostics;

namespace GreenRuntime.Benchmarks;

/// <summary>The best of several timed runs of a loop, in nanoseconds per call: the least disturbed run on a shared machine.</summary>
internal static class BestOf
{
    /// <param name="calls">Calls one run of <paramref name="run"/> makes.</param>
    /// <param name="run">The loop; it runs once untimed first (JIT, caches).</param>
    /// <param name="rounds">Timed runs.</param>
    /// <param name="settle">After the warm-up, let the tiering thread install optimized code (200 ms) and run once more,
    /// so that hot-path figures are tier-1 figures. Not on a hub: a patched sleep would park instead.</param>
    public static double NsPerCall(int calls, Action run, int rounds, bool settle)
    {
        run();
        if (settle)
        {
            Thread.Sleep(200);
            run();
        }
        double best = double.MaxValue;
        for (int i = 0; i < rounds; i++)
        {
            var watch = Stopwatch.StartNew();
            run();
            best = Math.Min(best, watch.Elapsed.TotalNanoseconds / calls);
        }
        return best;
    }
}
