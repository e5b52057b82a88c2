using System.Runtime.InteropServices;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
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
            "http_server_hubs" => HttpWorkloads.GreenServerOnEveryCore(Int(0, 0), Int(1, 0), args.Length > 2 && args[2] == "pinned"),
            // Kestrel's threads must be plain thread-pool threads, not a hub's (the greenlets way makes its own HubGroup).
            "aspnet_server" => AspNetCoreWorkloads.Server(Int(0, 0), args[1], args[2], Int(3, 0)),
            "aspnet_upstream" => AspNetCoreWorkloads.Upstream(Int(0, 0)),
            // The kernel's floor for the in-process echo rows: no runtime at all.
            "echo_inproc_floor" => EchoWorkloads.InProcessFloor(Int(0, 100), Int(1, 1000)),
            // The floor of the stackful sleeper rows: thread wakes alone, nothing else on the path.
            "wake_chain" => WakeChain.Run(Int(0, 10_000), args.Length > 1 && args[1] == "pinned"),
            "idle_client" => IdleClient.Run(Int(0, 0), Int(1, 15_000), Int(2, 1_000), args.Length > 3 ? Seconds(3) : 5, args.Length > 4 ? Seconds(4) : 12),
            "load" => LoadClient.Run(LoadProtocol.Parse(args[0]), Int(1, 0), Int(2, 1), Int(3, 1), TimeSpan.FromSeconds(Seconds(4)), TimeSpan.FromSeconds(Seconds(5))),
            _ => null,
        };
        if (neutral != null) return JsonSerializer.Serialize(neutral);

        // "<workload>_pinned" runs the same workload on a hub with PinCarriersToOneCpu; "<workload>_prestarted" on a hub
        // that creates PrestartedCarriers carriers before it starts (the time that takes is reported as hub_start_s).
        bool pinned = StripSuffix(ref name, "_pinned");
        bool prestarted = StripSuffix(ref name, "_prestarted");
        var hubStart = Stopwatch.StartNew();
        using var hub = new Hub(new HubOptions { MaxBlockingTime = null, PinCarriersToOneCpu = pinned, PrestartCarriers = prestarted ? PrestartedCarriers : 0 });
        double hubStartSeconds = hubStart.Elapsed.TotalSeconds;
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
            "echo_inproc_async" => EchoWorkloads.InProcessAsync(Int(0, 100), Int(1, 1000)),
            "echo_inproc_async_engine" => EchoWorkloads.InProcessAsync(Int(0, 100), Int(1, 1000), patched: false),
            "echo_client_async" => EchoWorkloads.ClientAsync(Int(0, 0), Int(1, 100), Int(2, 1000)),
            "echo_server_async" => ServeAsync(Int(0, 0)),
            "echo_server_async_group" => ServeAsyncGroup(Int(0, 0)),
            "http_server" => HttpWorkloads.GreenServer(Int(0, 0)),
            "timers" => WarmedUp(() => Timers(Math.Min(1_000, Int(0, 10_000))), () => Timers(Int(0, 10_000))),
            "timers_cold" => Timers(Int(0, 10_000)),
            "sleep_mem_warm" => WarmedUp(() => SleepersStackless(1_000), () => SleepersStackless(Int(0, 100_000))),
            "sleepers_stackful" => SleepersStackful(Int(0, 10_000)),
            "sleepers_stackful_warm" => WarmedUp(() => SleepersStackful(Int(0, 10_000)), () => SleepersStackful(Int(0, 10_000))),
            "sleepers_stackful_warm_contended" => WarmedUp(() => SleepersStackful(Int(0, 10_000)), () => BesideBusyThreads(() => SleepersStackful(Int(0, 10_000)))),
            "run_blocking" => RunBlocking(Int(0, 20)),
            _ => throw new ArgumentException($"unknown workload '{name}'"),
        };
        if (prestarted) result["hub_start_s"] = hubStartSeconds;
        return JsonSerializer.Serialize(result);
    }

    private static Dictionary<string, double> Serve(int port)
    {
        EchoWorkloads.Server(port);
        return new();
    }

    private static Dictionary<string, double> ServeAsync(int port)
    {
        EchoWorkloads.ServerAsync(port);
        return new();
    }

    private static Dictionary<string, double> ServeAsyncGroup(int port)
    {
        EchoWorkloads.ServerAsyncGroup(port);
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
            Green.JoinAll([Green.SpawnAsync(Worker), Green.SpawnAsync(Worker)]);
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

    /// <remarks>Phases (reported, not compared): <c>spawn_s</c> ends the spawn loop; <c>started_s</c> is when every
    /// greenlet has run up to its await (the main greenlet yields once, so it resumes behind all the starts);
    /// the wall is about <c>started_s</c> + 1 s, since the last sleeper's timer starts last.</remarks>
    private static Dictionary<string, double> SleepersStackless(int n)
    {
        GC.Collect();
        var baseKb = PeakRssKb();
        var gcPause = GC.GetTotalPauseDuration();
        var watch = Stopwatch.StartNew();
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++) all[i] = Green.SpawnAsync(static async () => await Green.SleepAsync(TimeSpan.FromSeconds(1)));
        var spawned = watch.Elapsed.TotalSeconds;
        Green.Yield();
        var started = watch.Elapsed.TotalSeconds;
        Green.JoinAll(all);
        var wall = watch.Elapsed.TotalSeconds;
        return new()
        {
            ["wall_s"] = wall,
            ["bytes_per_greenlet"] = (PeakRssKb() - baseKb) * 1024.0 / n,
            ["spawn_s"] = spawned,
            ["started_s"] = started,
            ["gc_pause_s"] = (GC.GetTotalPauseDuration() - gcPause).TotalSeconds,
        };
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

    /// <summary>Removes <paramref name="suffix"/> from the end of <paramref name="name"/>; whether it was there.</summary>
    private static bool StripSuffix(ref string name, string suffix)
    {
        if (!name.EndsWith(suffix, StringComparison.Ordinal)) return false;
        name = name[..^suffix.Length];
        return true;
    }

    /// <summary>Carriers a "_prestarted" hub creates before it starts: more than the 10k random sleepers keep suspended at
    /// once in a cold process (1,300–1,700), fewer than the 20k need.</summary>
    private const int PrestartedCarriers = 2_000;

    /// <summary>N stackful greenlets each sleeping a random 0–49 ms (seeded like gevent's side), then ending.</summary>
    private static Dictionary<string, double> SleepersStackful(int n)
    {
        var random = new Random(42);
        var delays = Enumerable.Range(0, n).Select(_ => random.Next(50)).ToArray();
        var poolBefore = Hub.Current.GetRunInfo().Carriers;
        int threadsBefore = poolBefore.Threads;
        long allocated = GC.GetTotalAllocatedBytes();
        var switches = ContextSwitches();
        var watch = Stopwatch.StartNew();
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++)
        {
            int ms = delays[i];
            all[i] = Green.Spawn(() => Green.Sleep(ms));
        }
        var spawned = watch.Elapsed.TotalSeconds;
        var gcPause = GC.GetTotalPauseDuration();
        int gcCount = GC.CollectionCount(0);
        Green.JoinAll(all);
        var wall = watch.Elapsed.TotalSeconds;
        var (voluntary, involuntary) = ContextSwitches();
        var info = Hub.Current.GetRunInfo().Carriers;
        return new()
        {
            ["wall_s"] = wall,
            ["spawn_s"] = spawned,
            ["gc_pause_s"] = (GC.GetTotalPauseDuration() - gcPause).TotalSeconds,
            ["gcs"] = GC.CollectionCount(0) - gcCount,
            ["allocated_per_greenlet"] = (GC.GetTotalAllocatedBytes() - allocated) / (double)n,
            ["failed"] = all.Count(g => !g.Successful),
            ["threads_created"] = Math.Max(0, info.Threads - threadsBefore),
            // Made while the hub waited (a rent found the pool empty) against made beside it by the pool's refill thread.
            ["made_on_demand"] = info.MadeOnDemand - poolBefore.MadeOnDemand,
            ["made_by_refill"] = info.MadeByRefill - poolBefore.MadeByRefill,
            ["carrier_limit"] = info.Limit,
            // Each baton hand-off to a sleeping carrier puts the giver to sleep: the round's cost in thread hops.
            ["voluntary_switches_per_greenlet"] = (voluntary - switches.Voluntary) / (double)n,
            ["involuntary_switches_per_greenlet"] = (involuntary - switches.Involuntary) / (double)n,
        };
    }

    [DllImport("libc", EntryPoint = "usleep")]
    private static extern int USleep(uint microseconds);

    /// <summary>20 greenlets each blocking 200 ms in native code inside Green.RunBlocking, and a 5 ms ticker.</summary>
    private static Dictionary<string, double> RunBlocking(int n)
    {
        static double Round(int n, out double longestGapMs)
        {
            bool done = false;
            double longest = 0;
            var ticker = Green.Spawn(() =>
            {
                var last = Stopwatch.GetTimestamp();
                while (!done)
                {
                    Green.Sleep(5);
                    var now = Stopwatch.GetTimestamp();
                    longest = Math.Max(longest, Stopwatch.GetElapsedTime(last, now).TotalMilliseconds);
                    last = now;
                }
            });
            var watch = Stopwatch.StartNew();
            Green.JoinAll(Enumerable.Range(0, n).Select(_ => Green.Spawn(() => Green.RunBlocking(() => USleep(200_000)))).ToList());
            var wall = watch.Elapsed.TotalSeconds;
            done = true;
            ticker.Join();
            longestGapMs = longest;
            return wall;
        }
        Round(n, out _); // warms the carriers and the code up, as gevent's side warms its pool
        var seconds = Round(n, out var gap);
        return new() { ["wall_s"] = seconds, ["max_gap_ms"] = gap };
    }

    private static Dictionary<string, double> Timers(int n)
    {
        var random = new Random(42);
        var delays = Enumerable.Range(0, n).Select(_ => random.NextDouble() * 0.1).ToArray();
        var lateness = new double[n];
        var gcPause = GC.GetTotalPauseDuration();
        var watch = Stopwatch.StartNew();
        var all = new Greenlet[n];
        for (int i = 0; i < n; i++)
        {
            int k = i;
            all[i] = Green.SpawnAsync(async () =>
            {
                var start = Stopwatch.GetTimestamp();
                await Green.SleepAsync(TimeSpan.FromSeconds(delays[k]));
                lateness[k] = Stopwatch.GetElapsedTime(start).TotalSeconds - delays[k];
            });
        }
        var spawned = watch.Elapsed.TotalSeconds;
        Green.Yield();
        var started = watch.Elapsed.TotalSeconds;
        Green.JoinAll(all);
        var wall = watch.Elapsed.TotalSeconds;
        Array.Sort(lateness);
        return new()
        {
            ["wall_s"] = wall,
            ["ideal_s"] = delays.Max(),
            ["spawn_s"] = spawned,
            ["started_s"] = started,
            ["gc_pause_s"] = (GC.GetTotalPauseDuration() - gcPause).TotalSeconds,
            ["lateness_ms_p50"] = lateness[n / 2] * 1e3,
            ["lateness_ms_p99"] = lateness[n * 99 / 100] * 1e3,
        };
    }

    /// <summary>Runs a small copy first, the way <see cref="WarmUp"/> does, so the figures do not include JIT
    /// compilation (gevent has none, Go is compiled ahead of time). A single small run just before is not
    /// enough: the tiered JIT publishes optimized code ~100 ms after the last new method, i.e. in the middle of
    /// a 0.15 s measurement (10k timers: 0.15-0.17 s half-tiered vs 0.12 s fully optimized on a quiet machine).</summary>
    private static Dictionary<string, double> WarmedUp(Func<Dictionary<string, double>> warmUp, Func<Dictionary<string, double>> run)
    {
        WarmUp(() => warmUp());
        return run();
    }

    /// <summary>
    /// Runs <paramref name="run"/> while one CPU-bound thread per CPU spins beside it (ordinary threads of this process,
    /// default priority), as on a machine that other work keeps busy. Every hand-off of the baton is a thread wake; a
    /// scheduling trick that only pays on an idle machine shows here: carriers under SCHED_BATCH, whose wakes never
    /// preempt, made the warm 10k sleepers 5.2–8.0 s beside two CPU-bound processes instead of 0.30–0.39 s
    /// (docs/internals.md).
    /// </summary>
    private static Dictionary<string, double> BesideBusyThreads(Func<Dictionary<string, double>> run)
    {
        int count = Environment.ProcessorCount;
        var stop = new StrongBox<bool>();
        var threads = Enumerable.Range(0, count).Select(i => new Thread(() =>
        {
            while (!Volatile.Read(ref stop.Value)) { }
        }) { IsBackground = true, Name = $"busy #{i}" }).ToList();
        threads.ForEach(t => t.Start());
        try
        {
            var result = run();
            result["busy_threads"] = count;
            return result;
        }
        finally
        {
            Volatile.Write(ref stop.Value, true);
            threads.ForEach(t => t.Join());
        }
    }

    /// <summary>Runs the workload small a few times with pauses, so the tiered JIT has published optimized code
    /// (it compiles in the background after a 100 ms quiet delay, and with dynamic PGO a hot method is promoted
    /// twice: tier 0, then instrumented, then optimized), and the timed run measures steady state, as gevent's and
    /// Go's do. Two rounds were not enough for the 10k-timer run (0.14-0.15 s instead of 0.11 s).</summary>
    private static void WarmUp(Action small)
    {
        for (int round = 0; round < 4; round++)
        {
            small();
            Thread.Sleep(250);
        }
    }

    private static double Time(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalSeconds;
    }

    /// <summary>The context switches of every thread of this process so far (getrusage: a thread that blocks counts a
    /// voluntary one, a thread the kernel preempts an involuntary one).</summary>
    private static (long Voluntary, long Involuntary) ContextSwitches() =>
        GetRUsage(0 /* RUSAGE_SELF */, out var usage) == 0 ? (usage.VoluntarySwitches, usage.InvoluntarySwitches) : (0, 0);

    [StructLayout(LayoutKind.Sequential)]
    private struct RUsage
    {
        public long UserSeconds, UserMicroseconds, SystemSeconds, SystemMicroseconds;
        public long MaxRss, SharedText, UnsharedData, UnsharedStack, MinorFaults, MajorFaults, Swaps, BlockInputs,
            BlockOutputs, MessagesSent, MessagesReceived, Signals, VoluntarySwitches, InvoluntarySwitches;
    }

    [DllImport("libc", EntryPoint = "getrusage")]
    private static extern int GetRUsage(int who, out RUsage usage);

    /// <summary>The process's peak resident set (VmHWM), the same quantity as ru_maxrss used by the anchors.</summary>
    private static long PeakRssKb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        return 0;
    }
}
