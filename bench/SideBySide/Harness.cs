using System.Diagnostics;
using System.Text.Json;

namespace GreenRuntime.SideBySide;

/// <summary>One workload: how each system runs it and which of its JSON fields are compared.</summary>
/// <param name="Ours">runs GreenRuntime's side (null: no such column)</param>
/// <param name="Gevent">runs gevent's side; needs the gevent anchors</param>
/// <param name="Go">runs Go's side; needs the Go anchor</param>
/// <param name="NeedsGevent">Ours or Go also use a gevent program (cross runs)</param>
/// <param name="Metric">the compared field, in GreenRuntime's JSON</param>
/// <param name="GeventMetric">the same quantity in gevent's JSON</param>
/// <param name="GoMetric">the same quantity in Go's JSON</param>
/// <param name="HigherIsBetter">rates: true; times and bytes: false</param>
/// <param name="Extra">secondary fields reported as they are (per-system names)</param>
internal sealed record Workload(
    string Name, string Title, string Unit, string Target,
    Func<Anchors, ProcessResult>? Ours, Func<Anchors, ProcessResult>? Gevent, Func<Anchors, ProcessResult>? Go,
    string Metric, string GeventMetric, string GoMetric, bool HigherIsBetter,
    (string Ours, string Gevent, string Go, string Label)[] Extra, bool NeedsGevent = false);

internal sealed class Result
{
    public required Workload Workload { get; init; }
    public Dictionary<string, double>? Ours, Gevent, Go;
    public string? OursNote, GeventNote, GoNote;
}

internal static class Harness
{
    public static Func<Anchors, ProcessResult> Mine(string workload, string args = "") => _ => RunOurs($"{workload} {args}".Trim());
    private static Func<Anchors, ProcessResult> Gevent(string script, string args) => a => a.RunGevent(script, args);
    private static Func<Anchors, ProcessResult> Go(string args) => a => a.RunGo(args);
    private static Func<Anchors, ProcessResult> LocalGevent(string script, string args) => a => a.RunLocalGevent(script, args);

    private static readonly (string Ours, string Gevent, string Go, string Label)[] Latency =
        [("p50_us", "p50_us", "p50_us", "p50 latency µs"), ("p99_us", "p99_us", "p99_us", "p99 latency µs")];

    private static readonly (string Ours, string Gevent, string Go, string Label)[] EchoLatency =
        [.. Latency, ("ctxt_per_req", "", "", "context switches per request (ours, client process)")];

    private const string EchoClients = "100 1000";

    private static readonly (string Ours, string Gevent, string Go, string Label)[] HttpRows =
    [
        ("p50_us", "p50_us", "p50_us", "p50 latency µs"), ("p99_us", "p99_us", "p99_us", "p99 latency µs"),
        ("ctx_switches_per_req", "ctx_switches_per_req", "ctx_switches_per_req", "server context switches per request"),
        ("errors", "errors", "errors", "errors"),
    ];

    // Echo across processes: a server (started first, it prints READY) and a client whose JSON is the result.
    private static Func<Anchors, ProcessResult> OurServer(Func<Anchors, int, ProcessResult> client) =>
        a => WithServer(a, port => StartOurs($"echo_server {port}"), client);
    private static Func<Anchors, ProcessResult> GeventServer(Func<Anchors, int, ProcessResult> client) =>
        a => WithServer(a, port => a.StartGevent("echo_server.py", $"streamserver {port}"), client);
    private static Func<Anchors, ProcessResult> GoServer(Func<Anchors, int, ProcessResult> client) =>
        a => WithServer(a, port => a.StartGo($"server {port}"), client);
    private static Func<Anchors, ProcessResult> OurAsyncServer(Func<Anchors, int, ProcessResult> client) =>
        a => WithServer(a, port => StartOurs($"echo_server_async {port}"), client);
    private static Func<Anchors, ProcessResult> OurAsyncGroupServer(Func<Anchors, int, ProcessResult> client) =>
        a => WithServer(a, port => StartOurs($"echo_server_async_group {port}"), client);
    private static readonly Func<Anchors, int, ProcessResult> OurAsyncClient = (_, port) => RunOurs($"echo_client_async {port} {EchoClients}");
    private static readonly Func<Anchors, int, ProcessResult> OurClient = (_, port) => RunOurs($"echo_client {port} {EchoClients}");
    private static readonly Func<Anchors, int, ProcessResult> GeventClient = (a, port) => a.RunGevent("echo_client.py", $"{port} {EchoClients}");
    private static readonly Func<Anchors, int, ProcessResult> GoClient = (a, port) => a.RunGo($"client {port} {EchoClients}");

    /// <summary>Idle connections of the idle_conns row: as many as the file-descriptor limit of this machine (20,000,
    /// not raisable here) leaves room for, with the 1,000 active ones, in the client and in the server process.</summary>
    private const int IdleConnections = 15_000;

    /// <summary>The idle-connections client against a server: ours (<paramref name="start"/>) or a local gevent script.</summary>
    private static Func<Anchors, ProcessResult> IdleLoad(Func<int, Process?>? start, string? geventScript = null) =>
        a => WithServer(a, port => start != null ? start(port) : a.StartLocalGevent(geventScript!, port.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            (_, port) => RunOurs($"idle_client {port} {IdleConnections} 1000 5"));

    /// <summary>A row of 10k random 0–49 ms stackful sleepers: ours in worker <paramref name="worker"/>, gevent's sleepers.py.</summary>
    private static Workload Sleepers10k(string name, string title, string target, string worker) =>
        new(name, title, "s", target, Mine(worker, "10000"), LocalGevent("sleepers.py", "10000"), null,
            "wall_s", "wall_s", "", false, SleeperExtras);

    // Declared before All, whose initializer reads it.
    private static readonly (string, string, string, string)[] SleeperExtras =
    [
        ("threads_created", "", "", "carrier threads created"),
        ("voluntary_switches_per_greenlet", "", "", "thread sleeps per greenlet (hand-offs)"),
    ];

    private const string AspNet = "ASP.NET Core, 1,000 keep-alive connections, ";

    private static Workload AspNetRow(string name, string title, string target, string way, string endpoint, double warmup, double seconds) =>
        new(name, AspNet + title, "req/s", target, AspNetCoreWorkloads.Measure(way, endpoint, 1000, warmup, seconds), null, null,
            "req_per_s", "", "", true, [("p99_us", "", "", "p99 latency µs"), ("errors", "", "", "errors")]);

    public static readonly Workload[] All =
    [
        // ASP.NET Core three ways (AspNetCoreWorkloads.cs): the blocking endpoint on plain Kestrel, the same endpoint
        // under UseGreenlets(), and the async rewrite. "First 20 s" is a cold server process measured from its first
        // request; "steady" skips the first 5 s (plain Kestrel: the first 20 s, while its thread pool grows).
        AspNetRow("aspnet_sleep_plain_first20s", "`Thread.Sleep(20)` endpoint, plain Kestrel, cold: first 20 s", "(the baseline)", "plain", "sleep", 0, 20),
        AspNetRow("aspnet_sleep_greenlets_first20s", "`Thread.Sleep(20)` endpoint, `UseGreenlets()`, cold: first 20 s", "≥ 10× plain", "greenlets", "sleep", 0, 20),
        AspNetRow("aspnet_sleep_plain_steady", "`Thread.Sleep(20)` endpoint, plain Kestrel: seconds 20–30", "(the baseline)", "plain", "sleep", 20, 10),
        AspNetRow("aspnet_sleep_greenlets_steady", "`Thread.Sleep(20)` endpoint, `UseGreenlets()`: steady", "≥ 0.8× async, p99 ≤ 2× async", "greenlets", "sleep", 5, 10),
        AspNetRow("aspnet_sleep_async_steady", "`await Task.Delay(20)` rewrite, plain Kestrel: steady", "(the rewrite)", "async", "sleep", 5, 10),
        AspNetRow("aspnet_upstream_plain_first20s", "`GetStringAsync(upstream).Result` (20 ms upstream), plain Kestrel, cold: first 20 s", "(the baseline)", "plain", "upstream", 0, 20),
        AspNetRow("aspnet_upstream_greenlets_first20s", "`GetStringAsync(upstream).Result`, `UseGreenlets()`, cold: first 20 s", "≥ 10× plain", "greenlets", "upstream", 0, 20),
        AspNetRow("aspnet_upstream_greenlets_steady", "`GetStringAsync(upstream).Result`, `UseGreenlets()`: steady", "≥ 0.8× async, p99 ≤ 2× async", "greenlets", "upstream", 5, 10),
        AspNetRow("aspnet_upstream_async_steady", "`await GetStringAsync(upstream)` rewrite, plain Kestrel: steady", "(the rewrite)", "async", "upstream", 5, 10),
        AspNetRow("aspnet_hello_plain", "non-blocking \"hello\", plain Kestrel: steady", "(the baseline)", "plain", "hello", 3, 10),
        AspNetRow("aspnet_hello_greenlets", "non-blocking \"hello\", `UseGreenlets()`: steady", "≥ 0.85× plain", "greenlets", "hello", 3, 10),
        new("switch_stackless", "switch rate, stackless (`await Task.Yield()` ping-pong; gevent `sleep(0)`), 1M", "switches/s", "≥ 20× gevent",
            Mine("switch_stackless"), Gevent("switch.py", "sleep0 1000000"), Go("switch_gosched"),
            "switches_per_s", "switches_per_s", "switches_per_s", true, []),
        new("switch_stackful", "switch rate, stackful (`Green.Sleep(0)` ping-pong), 1M", "switches/s", "≤ 1.3 futex hand-offs (≈ 3 µs each)",
            Mine("switch_stackful"), Gevent("switch.py", "sleep0 1000000"), Go("switch_gosched"),
            "switches_per_s", "switches_per_s", "switches_per_s", true, []),
        new("switch_stackful_pinned", "switch rate, stackful, hub with `PinCarriersToOneCpu`, 1M", "switches/s", "≤ 1.3 futex hand-offs (≈ 3 µs each)",
            Mine("switch_stackful_pinned"), Gevent("switch.py", "sleep0 1000000"), Go("switch_gosched"),
            "switches_per_s", "switches_per_s", "switches_per_s", true, []),
        new("spawn_join", "spawn + join, 100k empty greenlets", "greenlets/s", "≥ 10× gevent",
            Mine("spawn_join"), Gevent("spawn.py", "spawn_join"), Go("spawn_join"),
            "greenlets_per_s", "greenlets_per_s", "goroutines_per_s", true, []),
        new("sleep_mem", "100k greenlets sleeping 1 s (ours stackless, warmed up like the rows above): wall", "s", "≤ 1.5 s, ≤ 1 KiB each",
            Mine("sleep_mem_warm"), Gevent("spawn.py", "sleep_mem"), Go("sleep_mem"),
            "wall_s", "wall_s", "wall_s", false,
            [("bytes_per_greenlet", "bytes_per_greenlet", "bytes_per_goroutine", "bytes per greenlet"),
             ("spawn_s", "spawn_s", "spawn_s", "spawn loop s")]),
        new("sleep_mem_cold", "100k sleepers as above, ours in a cold process (JIT included): wall", "s", "≤ 1.5 s, ≤ 1 KiB each",
            Mine("sleep_mem"), Gevent("spawn.py", "sleep_mem"), Go("sleep_mem"),
            "wall_s", "wall_s", "wall_s", false,
            [("bytes_per_greenlet", "bytes_per_greenlet", "bytes_per_goroutine", "bytes per greenlet")]),
        new("blocked_mem", "10k blocked stackful greenlets (a parked thread each): wall", "s", "memory per greenlet reported",
            Mine("blocked_mem"), null, null,
            "wall_s", "", "", false,
            [("bytes_per_greenlet", "", "", "bytes per greenlet")]),
        Sleepers10k("sleepers_10k_cold", "10k stackful greenlets each sleeping a random 0–49 ms (seeded), ours in a cold process: wall", "≤ gevent", "sleepers_stackful"),
        Sleepers10k("sleepers_10k_warm", "10k random sleepers as above, ours warmed up (a second round in the process): wall", "≤ 0.5× gevent", "sleepers_stackful_warm"),
        new("sleepers_10k_warm_contended", "10k random sleepers as above, warmed up, beside one CPU-bound thread per CPU (default priority, in the same process): wall", "s", "no hand-off waits for a busy thread's time slice (compare the warm row)",
            Mine("sleepers_stackful_warm_contended", "10000"), null, null,
            "wall_s", "", "", false, SleeperExtras),
        Sleepers10k("sleepers_10k_cold_pinned", "10k random sleepers as above, cold process, hub with `PinCarriersToOneCpu`: wall", "as above (the option's effect)", "sleepers_stackful_pinned"),
        new("sleepers_10k_cold_prestarted", "10k random sleepers as above, cold process, hub with `PrestartCarriers = 2000` (threads made before the clock starts): wall", "s", "as above (the option's effect)",
            Mine("sleepers_stackful_prestarted", "10000"), LocalGevent("sleepers.py", "10000"), null,
            "wall_s", "wall_s", "", false, [.. SleeperExtras, ("hub_start_s", "", "", "hub constructor s (making the carriers)")]),
        Sleepers10k("sleepers_10k_warm_pinned", "10k random sleepers as above, warmed up, hub with `PinCarriersToOneCpu`: wall", "as above (the option's effect)", "sleepers_stackful_warm_pinned"),
        new("wake_chain_10k", "the floor of the 10k sleeper rows: 10,000 parked threads woken one after another, each by the one before (one futex wake and one switch per hop, nothing else on the path; gevent: its 10k sleepers)", "s", "the least 10,000 resumes of thread-backed greenlets cost here",
            Mine("wake_chain", "10000"), LocalGevent("sleepers.py", "10000"), null,
            "chain_s", "wall_s", "", false, [("us_per_hop", "", "", "µs per hop")]),
        new("wake_chain_10k_pinned", "the same wake chain with every thread on one CPU (as `PinCarriersToOneCpu` keeps a hub's carriers)", "s", "as above, pinned",
            Mine("wake_chain", "10000 pinned"), LocalGevent("sleepers.py", "10000"), null,
            "chain_s", "wall_s", "", false, [("us_per_hop", "", "", "µs per hop")]),
        new("sleepers_20k_cold", "20k random 0–49 ms stackful sleepers, cold process: wall (all must succeed on default kernel limits)", "s", "≤ gevent, none fails",
            Mine("sleepers_stackful", "20000"), LocalGevent("sleepers.py", "20000"), null,
            "wall_s", "wall_s", "", false, [("failed", "", "", "greenlets failed"), ("threads_created", "", "", "carrier threads created")]),
        new("run_blocking", "20 greenlets each calling native usleep(200 ms) through P/Invoke in `Green.RunBlocking` (gevent: `threadpool.apply`): wall", "s", "≈ 0.2 s, ticker gap ≤ 20 ms",
            Mine("run_blocking"), LocalGevent("run_blocking.py", "20"), null,
            "wall_s", "wall_s", "", false, [("max_gap_ms", "max_gap_ms", "", "longest ticker gap ms")]),
        new("idle_conns", $"{IdleConnections:N0} idle keep-alive HTTP connections (one request each) while 1,000 others keep requesting the 20 ms blocking handler: server memory per idle connection", "KiB", "≤ 4 KiB, < 2,000 threads",
            IdleLoad(port => StartOurs($"http_server {port}")), IdleLoad(null, "http_server.py"), null,
            "kib_per_idle_conn", "kib_per_idle_conn", "", false,
            [("managed_kib_per_idle_conn", "", "", "of which managed heap, KiB"), ("threads_idle", "threads_idle", "", "server threads, idle"), ("threads_under_load", "threads_under_load", "", "server threads under load"),
             ("req_per_s", "req_per_s", "", "req/s of the 1,000 active"), ("idle_still_answering", "idle_still_answering", "", "idle ones still answering")]),
        new("timers", "10k timers, random 0–100 ms (ours warmed up): wall", "s", "≤ 0.15 s",
            Mine("timers"), Gevent("timers.py", ""), Go("timers"),
            "wall_s", "wall_s", "wall_s", false,
            [("lateness_ms_p99", "lateness_ms_p99", "lateness_ms_p99", "p99 lateness ms")]),
        new("timers_cold", "10k timers as above, ours in a cold process (JIT included): wall", "s", "≤ 0.15 s",
            Mine("timers_cold"), Gevent("timers.py", ""), Go("timers"),
            "wall_s", "wall_s", "wall_s", false,
            [("lateness_ms_p99", "lateness_ms_p99", "lateness_ms_p99", "p99 lateness ms")]),
        new("echo_inproc", "echo 100 conns × 1,000 × 64 B, server and clients in one process (ours: plain blocking sockets + Patch.All)", "req/s", "≥ 2× gevent, p99 no worse",
            Mine("echo_inproc"), Gevent("echo_inproc.py", ""), Go("inproc"),
            "req_per_s", "req_per_s", "req_per_s", true, EchoLatency),
        new("echo_inproc_pinned", "echo in one process as above, hub with `PinCarriersToOneCpu`", "req/s", "≥ 2× gevent, p99 no worse",
            Mine("echo_inproc_pinned"), Gevent("echo_inproc.py", ""), Go("inproc"),
            "req_per_s", "req_per_s", "req_per_s", true, EchoLatency),
        new("echo_own_client", "echo, separate processes, each system's own client against its own server", "req/s", "≥ 2× gevent, p99 no worse",
            OurServer(OurClient), GeventServer(GeventClient), GoServer(GoClient),
            "req_per_s", "req_per_s", "req_per_s", true, EchoLatency),
        new("echo_async_inproc", "echo 100 conns × 1,000 × 64 B in one process, ours: stackless client and server greenlets on one hub (`await ReceiveAsync/SendAsync` + Patch.All: the hub's reactor)", "req/s", "≥ 3× gevent",
            Mine("echo_inproc_async"), Gevent("echo_inproc.py", ""), Go("inproc"),
            "req_per_s", "req_per_s", "req_per_s", true, EchoLatency),
        new("echo_inproc_floor", "echo in one process, the kernel's floor: the same 100 conns × 1,000 × 64 B served by one thread that makes only the four system calls of each round trip (straight to libc: no runtime layer, no hub, no patching; on loopback nothing ever waits)", "req/s", "the most a one-thread echo can reach here",
            Mine("echo_inproc_floor"), Gevent("echo_inproc.py", ""), null,
            "req_per_s", "req_per_s", "", true, []),
        new("echo_async_procs", "echo, separate processes, each system's own client against its own server; ours: async handler and client on one hub per process (stackless, the hub's reactor)", "req/s", "≥ 2× gevent, ≥ 0.8× Go, p99 ≤ gevent",
            OurAsyncServer(OurAsyncClient), GeventServer(GeventClient), GoServer(GoClient),
            "req_per_s", "req_per_s", "req_per_s", true, EchoLatency),
        new("echo_async_group_procs", "echo across processes as above, our server on a `HubGroup` (one hub per CPU, a SO_REUSEPORT listener each), our async client on one hub", "req/s", "≥ 2× gevent, ≥ 0.8× Go, p99 ≤ gevent",
            OurAsyncGroupServer(OurAsyncClient), GeventServer(GeventClient), GoServer(GoClient),
            "req_per_s", "req_per_s", "req_per_s", true, EchoLatency),
        new("echo_gevent_client", "echo: gevent's client against each server (columns = server)", "req/s", "our server ≥ 2× gevent's",
            OurServer(GeventClient), GeventServer(GeventClient), GoServer(GeventClient),
            "req_per_s", "req_per_s", "req_per_s", true, Latency, NeedsGevent: true),
        // HTTP on every core: the 20 ms blocking handler at 1,000 connections, ours on a group of one hub per CPU and on
        // one hub, Go with GOMAXPROCS = all CPUs; the neutral load client and wrk, each with context switches per request.
        new("http_every_core_hubs", $"HTTP 20 ms blocking handler, {HttpEveryCore.Connections:N0} conns, neutral load client: ours `HttpServer` on a `HubGroup` of {Environment.ProcessorCount} (`PinHubsToCpus`); Go GOMAXPROCS={Environment.ProcessorCount}", "req/s", "≥ 1.0× Go, ≥ 1.6× one hub, p99 ≤ Go's",
            HttpEveryCore.Neutral(HttpEveryCore.Ours(0)), HttpEveryCore.Neutral(HttpEveryCore.Gevent), HttpEveryCore.Neutral(HttpEveryCore.GoAllCpus),
            "req_per_s", "req_per_s", "req_per_s", true, HttpRows),
        new("http_every_core_unpinned", $"HTTP as above, ours on a `HubGroup` of {Environment.ProcessorCount} without `PinHubsToCpus`; Go GOMAXPROCS={Environment.ProcessorCount}", "req/s", "—",
            HttpEveryCore.Neutral(HttpEveryCore.Ours(0, pinned: false)), null, HttpEveryCore.Neutral(HttpEveryCore.GoAllCpus),
            "req_per_s", "req_per_s", "req_per_s", true, HttpRows),
        new("http_every_core_onehub", $"HTTP as above, ours on one hub (the ratio's base); Go GOMAXPROCS={Environment.ProcessorCount}", "req/s", "—",
            HttpEveryCore.Neutral(HttpEveryCore.Ours(1)), HttpEveryCore.Neutral(HttpEveryCore.Gevent), HttpEveryCore.Neutral(HttpEveryCore.GoAllCpus),
            "req_per_s", "req_per_s", "req_per_s", true, HttpRows),
        new("http_every_core_wrk_hubs", $"HTTP as above with wrk (`-t2 -c1000 -d10s --latency`, after 3 s of unmeasured wrk): ours on a `HubGroup` of {Environment.ProcessorCount} (`PinHubsToCpus`); Go GOMAXPROCS={Environment.ProcessorCount}", "req/s", "≥ Go's, p99 ≤ 1.5× Go's",
            HttpEveryCore.Wrk(HttpEveryCore.Ours(0)), HttpEveryCore.Wrk(HttpEveryCore.Gevent), HttpEveryCore.Wrk(HttpEveryCore.GoAllCpus),
            "req_per_s", "req_per_s", "req_per_s", true, HttpRows),
        new("http_every_core_wrk_onehub", $"HTTP with wrk as above, ours on one hub; Go GOMAXPROCS={Environment.ProcessorCount}", "req/s", "—",
            HttpEveryCore.Wrk(HttpEveryCore.Ours(1)), HttpEveryCore.Wrk(HttpEveryCore.Gevent), HttpEveryCore.Wrk(HttpEveryCore.GoAllCpus),
            "req_per_s", "req_per_s", "req_per_s", true, HttpRows),
        new("echo_our_client", "echo: GreenRuntime's client against each server (columns = server)", "req/s", "—",
            OurServer(OurClient), GeventServer(OurClient), GoServer(OurClient),
            "req_per_s", "req_per_s", "req_per_s", true, Latency),
    ];

    public static List<Result> RunAll(Anchors anchors, int rounds, string? only) =>
        Run(All.Where(w => only == null || w.Name.Contains(only, StringComparison.OrdinalIgnoreCase)), anchors, rounds);

    /// <summary>Runs the given workloads, systems alternating within each round; the best round of each counts.</summary>
    public static List<Result> Run(IEnumerable<Workload> workloads, Anchors anchors, int rounds)
    {
        var results = new List<Result>();
        foreach (var w in workloads)
        {
            var r = new Result { Workload = w };
            for (int round = 1; round <= rounds; round++)
            {
                if (w.Ours != null)
                {
                    if (w.NeedsGevent && anchors.GeventDir == null) r.OursNote = anchors.GeventMissing;
                    else r.Ours = Better(w, w.Metric, r.Ours, Step(w, round, rounds, "GreenRuntime", () => w.Ours(anchors)));
                }
                if (w.Gevent != null)
                {
                    if (anchors.GeventDir == null) r.GeventNote = anchors.GeventMissing;
                    else r.Gevent = Better(w, w.GeventMetric, r.Gevent, Step(w, round, rounds, "gevent", () => w.Gevent(anchors)));
                }
                if (w.Go != null)
                {
                    if (anchors.GoBinary == null || (w.NeedsGevent && anchors.GeventDir == null)) r.GoNote = anchors.GoMissing ?? anchors.GeventMissing;
                    else r.Go = Better(w, w.GoMetric, r.Go, Step(w, round, rounds, "Go", () => w.Go(anchors)));
                }
            }
            Console.WriteLine($"\r{w.Name}: GreenRuntime {Show(r.Ours, w.Metric)}, gevent {Show(r.Gevent, w.GeventMetric)}, Go {Show(r.Go, w.GoMetric)} ({w.Unit})            ");
            results.Add(r);
        }
        return results;
    }

    public static List<SweepResult> RunSweeps(Anchors anchors, int rounds, string? only) =>
        Sweep.All.Where(s => only == null || s.Name.Contains(only, StringComparison.OrdinalIgnoreCase))
            .Select(s => s.Run(anchors, rounds)).ToList();

    private static Dictionary<string, double>? Step(Workload w, int round, int rounds, string system, Func<ProcessResult> run)
    {
        Console.Write($"\r{w.Name}: round {round}/{rounds} {system}...            ");
        return ParseJson(run());
    }

    private static string Show(Dictionary<string, double>? d, string key) =>
        d != null && d.TryGetValue(key, out var v) ? Report.Format(v) : "—";

    private static Dictionary<string, double>? Better(Workload w, string key, Dictionary<string, double>? best, Dictionary<string, double>? next)
    {
        if (next == null || !next.ContainsKey(key)) return best;
        if (best == null) return next;
        return (next[key] > best[key]) == w.HigherIsBetter ? next : best;
    }

    /// <summary>
    /// How to start a GreenRuntime worker: this program again in "worker" mode. Run as the harness, that is the
    /// apphost (or dotnet + this dll); run from the smoke test's host, it is always dotnet + this dll.
    /// </summary>
    private static (string File, string Args) OursCommand(string workload)
    {
        var self = Environment.ProcessPath!;
        var dll = typeof(Harness).Assembly.Location;
        var args = $"worker {workload}";
        if (Path.GetFileNameWithoutExtension(self) == Path.GetFileNameWithoutExtension(dll)) return (self, args);
        var dotnet = Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : DotnetHost();
        return (dotnet, $"\"{dll}\" {args}");
    }

    /// <summary>The dotnet host that runs this process's runtime: <c>&lt;root&gt;/shared/Microsoft.NETCore.App/&lt;version&gt;/</c> is three levels below it.</summary>
    private static string DotnetHost()
    {
        var root = Path.GetFullPath(Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        var host = Path.Combine(root, "dotnet");
        return File.Exists(host) ? host : "dotnet";
    }

    /// <summary>Runs a GreenRuntime worker to completion (bounded: 3 minutes).</summary>
    public static ProcessResult RunOurs(string workload)
    {
        var (file, args) = OursCommand(workload);
        return Run(file, args, Environment.CurrentDirectory, TimeSpan.FromMinutes(3));
    }

    /// <summary>Starts a GreenRuntime server worker and waits for its READY line.</summary>
    public static Process? StartOurs(string workload)
    {
        var (file, args) = OursCommand(workload);
        return StartServer(file, args, Environment.CurrentDirectory);
    }

    /// <summary>Starts a server program and waits (up to 60 s) for its READY line; null if it never came.</summary>
    public static Process? StartServer(string file, string args, string workingDirectory, params (string Name, string Value)[] env)
    {
        var info = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (name, value) in env) info.Environment[name] = value;
        var process = Process.Start(info)!;
        var ready = new TaskCompletionSource();
        process.OutputDataReceived += (_, e) => { if (e.Data?.Trim() == "READY") ready.TrySetResult(); };
        process.ErrorDataReceived += (_, _) => { };
        process.Exited += (_, _) => ready.TrySetResult();
        process.EnableRaisingEvents = true;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (ready.Task.Wait(TimeSpan.FromSeconds(60)) && !process.HasExited) return process;
        Stop(process);
        return null;
    }

    /// <summary>Starts a server on a free port, runs the client against it, and always stops the server.</summary>
    public static ProcessResult WithServer(Anchors anchors, Func<int, Process?> start, Func<Anchors, int, ProcessResult> client)
    {
        int port = EchoWorkloads.FreePort();
        var server = start(port);
        if (server == null) return new ProcessResult(-1, "", "the server did not print READY");
        try
        {
            return client(anchors, port);
        }
        finally
        {
            Stop(server);
        }
    }

    /// <summary>Stops a server process started with <see cref="StartServer"/>.</summary>
    internal static void Stop(Process process)
    {
        try
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.WaitForExit(10_000);
        }
        catch (InvalidOperationException)
        {
        }
        process.Dispose();
    }

    /// <summary>The numeric fields of the last JSON line a run printed; null (and a message) if it failed.</summary>
    public static Dictionary<string, double>? ParseJson(ProcessResult run)
    {
        var line = run.Output.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{'));
        if (run.ExitCode != 0 || line == null)
        {
            Console.WriteLine($"\n  ! run failed (exit {run.ExitCode}): {run.Error.Trim().Split('\n').LastOrDefault()}");
            return null;
        }
        using var doc = JsonDocument.Parse(line);
        return doc.RootElement.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Number)
            .ToDictionary(p => p.Name, p => p.Value.GetDouble());
    }

    public static ProcessResult Run(string file, string args, string workingDirectory, TimeSpan timeout, params (string Name, string Value)[] env)
    {
        var info = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (name, value) in env) info.Environment[name] = value;
        try
        {
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                return new ProcessResult(-1, stdout.Result, $"timed out after {timeout}");
            }
            return new ProcessResult(process.ExitCode, stdout.Result, stderr.Result);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return new ProcessResult(-1, "", e.Message);
        }
    }

    public static bool Succeeds(string file, string args) => Run(file, args, "/", TimeSpan.FromSeconds(30)).ExitCode == 0;

    public static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "GreenRuntime.sln"))) return dir.FullName;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "GreenRuntime.sln"))) return dir.FullName;
        throw new InvalidOperationException("Run the harness from inside the GreenRuntime repository (GreenRuntime.sln not found).");
    }
}
