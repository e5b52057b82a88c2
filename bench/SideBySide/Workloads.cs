using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace GreenRuntime.SideBySide;

/// <summary>GreenRuntime's side of each workload, run in a child process ("worker" mode) that prints one JSON line.</summary>
internal static class Workloads
{
    /// <summary>
    /// Runs one workload and returns its JSON line. Arguments after the name override the sizes (the defaults are
    /// the sizes; the smoke test passes tiny ones through this same path).
    /// </summary>
    public static string RunWorker(string name, string[] args)
    {
        int Int(int i, int fallback) => args.Length > i ? int.Parse(args[i], CultureInfo.InvariantCulture) : fallback;
        double Seconds(int i) => double.Parse(args[i], CultureInfo.InvariantCulture);

        // These two must not run on a hub nor under Patch.All(): the thread-pool server is the "without
        // GreenRuntime" column, and the load client must be the same neutral client for every system.
        var neutral = name switch
        {
            "http_threads_server" => HttpWorkloads.ThreadPoolServer(Int(0, 0)),
            "load" => LoadClient.Run(LoadProtocol.Parse(args[0]), Int(1, 0), Int(2, 1), Int(3, 1), TimeSpan.FromSeconds(Seconds(4)), TimeSpan.FromSeconds(Seconds(5))),
            _ => null,
        };
        if (neutral != null) return JsonSerializer.Serialize(neutral);

        // "<workload>_pinned" runs the same workload on a hub with PinCarriersToOneCpu.
        bool pinned = name.EndsWith("_pinned", StringComparison.Ordinal);
        if (pinned) name = name[..^"_pinned".Length];
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null, PinCarriersToOneCpu = pinned });
        var result = name switch
        {
            "switch_stackful" => SwitchStackful(Int(0, 1_000_000)),
            "switch_stackless" => SwitchStackless(Int(0, 1_000_000)),
            "spawn_join" => SpawnJoin(Int(0, 100_000)),
            "sleep_mem" => SleepersStackless(Int(0, 100_000)),
            "blocked_mem" => BlockedStackful(Int(0, 10_000)),
            "echo_inproc" => EchoWorkloads.InProcess(Int(0, 100), Int(1, 1000)),
            "echo_client" => EchoWorkloads.Client(Int(0, 0), Int(1, 100), Int(2, 1000)),
            "echo_server" => Serve(Int(0, 0)),
            "http_server" => HttpWorkloads.GreenServer(Int(0, 0)),
            "timers" => WarmedUp(() => Timers(Math.Min(1_000, Int(0, 10_000))), () => Timers(Int(0, 10_000))),
            "sleep_mem_warm" => WarmedUp(() => SleepersStackless(1_000), () => SleepersStackless(Int(0, 100_000))),
            _ => throw new ArgumentException($"unknown workload '{name}'"),
        };
        return JsonSerializer.Serialize(result);
    }

    private static Dictionary<string, double> Serve(int port)
    {
        EchoWorkloads.Server(port);
        return new();
    }

    private static Dictionary<string, double> SwitchStackful(int n)
    {
        static void Run(int switches)
        {
            void Worker()
            {
                for (int i = 0; i < switches / 2; i++) Green.Sleep(0);
            }
            Green.JoinAll([Green.Spawn(Worker), Green.Spawn(Worker)]);
        }
        WarmUp(() => Run(Math.Min(200_000, n / 5)));
        var seconds = Time(() => Run(n));
        return new() { ["seconds"] = seconds, ["switches_per_s"] = n / seconds };
    }

    private static Dictionary<string, double> SwitchStackless(int n)
    {
        static void Run(int switches)
        {
            async Task Worker()
            {
                for (int i = 0; i < switches / 2; i++) await Task.Yield();
            }
            Green.JoinAll([Green.Spawn(Worker), Green.Spawn(Worker)]);
        }
        WarmUp(() => Run(Math.Min(200_000, n / 5)));
        var seconds = Time(() => Run(n));
        return new() { ["seconds"] = seconds, ["switches_per_s"] = n / seconds };
    }

    private static Dictionary<string, double> SpawnJoin(int n)
    {
        static void Run(int count)
        {
            var all = new Greenlet[count];
            for (int i = 0; i < count; i++) all[i] = Green.Spawn(static () => { });
            Green.JoinAll(all);
        }
        WarmUp(() => Run(Math.Min(10_000, n / 10)));
        var seconds = Time(() => Run(n));
        return new() { ["seconds"] = seconds, ["greenlets_per_s"] = n / seconds };
    }

    private static Dictionary<string, double> SleepersStackless(int n)
    {
        GC.Collect();
        var baseKb = PeakRssKb();
        var watch = Stopwatch.StartNew();
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++) all[i] = Green.Spawn(static async () => await Green.SleepAsync(TimeSpan.FromSeconds(1)));
        Green.JoinAll(all);
        var wall = watch.Elapsed.TotalSeconds;
        return new() { ["wall_s"] = wall, ["bytes_per_greenlet"] = (PeakRssKb() - baseKb) * 1024.0 / n };
    }

    private static Dictionary<string, double> BlockedStackful(int n)
    {
        GC.Collect();
        var baseKb = PeakRssKb();
        var watch = Stopwatch.StartNew();
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++) all[i] = Green.Spawn(static () => Green.Sleep(1000));
        Green.JoinAll(all);
        var wall = watch.Elapsed.TotalSeconds;
        return new() { ["wall_s"] = wall, ["bytes_per_greenlet"] = (PeakRssKb() - baseKb) * 1024.0 / n };
    }

    private static Dictionary<string, double> Timers(int n)
    {
        var random = new Random(42);
        var delays = Enumerable.Range(0, n).Select(_ => random.NextDouble() * 0.1).ToArray();
        var lateness = new double[n];
        var watch = Stopwatch.StartNew();
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++)
        {
            int k = i;
            all[i] = Green.Spawn(async () =>
            {
                var start = Stopwatch.GetTimestamp();
                await Green.SleepAsync(TimeSpan.FromSeconds(delays[k]));
                lateness[k] = Stopwatch.GetElapsedTime(start).TotalSeconds - delays[k];
            });
        }
        Green.JoinAll(all);
        var wall = watch.Elapsed.TotalSeconds;
        Array.Sort(lateness);
        return new()
        {
            ["wall_s"] = wall,
            ["ideal_s"] = delays.Max(),
            ["lateness_ms_p50"] = lateness[n / 2] * 1e3,
            ["lateness_ms_p99"] = lateness[n * 99 / 100] * 1e3,
        };
    }

    /// <summary>Runs a small copy first so the figures do not include JIT compilation (gevent has none, Go is compiled ahead of time).</summary>
    private static Dictionary<string, double> WarmedUp(Func<Dictionary<string, double>> warmUp, Func<Dictionary<string, double>> run)
    {
        warmUp();
        return run();
    }

    /// <summary>Runs the workload small, then waits for the tiered JIT to publish optimized code (it compiles in the
    /// background after a 100 ms delay), so the timed run measures steady state, as gevent's and Go's do.</summary>
    private static void WarmUp(Action small)
    {
        small();
        Thread.Sleep(300);
        small();
    }

    private static double Time(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalSeconds;
    }

    /// <summary>The process's peak resident set (VmHWM), the same quantity as ru_maxrss used by the anchors.</summary>
    private static long PeakRssKb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        return 0;
    }
}
