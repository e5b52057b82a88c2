using System.Diagnostics;
using System.Globalization;

namespace GreenRuntime.SideBySide;

/// <summary>One server in a sweep: a column label and how to start it on a port (it prints READY).</summary>
/// <param name="Start">starts the server; null result: it did not come up</param>
/// <param name="Missing">why this column cannot run on this machine, or null when it can</param>
internal sealed record SweepSystem(string Label, Func<Anchors, int, Process?> Start, Func<Anchors, string?> Missing);

/// <summary>
/// Throughput against concurrency: every system's server is loaded by the same neutral <see cref="LoadClient"/>
/// (a process of its own) at each connection count, a fresh server process per measurement.
/// </summary>
/// <param name="Protocol">the <see cref="LoadProtocol"/> name</param>
/// <param name="Levels">connection counts</param>
/// <param name="Warmup">unrecorded seconds before each measured window</param>
/// <param name="Duration">measured seconds per point (the bound on each point's requests)</param>
/// <param name="LatencyLevel">the connection count whose percentiles get the latency chart</param>
/// <param name="RatioAgainst">labels of the systems GreenRuntime's figure is divided by in the table</param>
/// <param name="CapPerConnection">requests one connection may send in a point: a bound besides the time, far above
/// what a point of the real sweeps reaches (the smoke test sets it low, so a point ends by count in milliseconds)</param>
internal sealed record Sweep(
    string Name, string Title, string Protocol, int[] Levels, double Warmup, double Duration,
    SweepSystem[] Systems, int LatencyLevel, string[] RatioAgainst, int CapPerConnection = 1_000_000)
{
    public const string Ours = "GreenRuntime";

    // Warm-up of 2 s: GreenRuntime's servers start a carrier thread for each connection's greenlet when it first
    // blocks; at 1000 connections that takes over a second (measured: echo p99 1.2 s with a 0.5 s warm-up, 80 ms
    // once warm). That is start-up, not the steady state the other figures measure; gevent and Go have nothing to warm.
    public static readonly Sweep[] All =
    [
        new("echo_concurrency", "echo, 64 B round trips, the neutral load client against each server", "echo",
            [10, 100, 1000], Warmup: 2, Duration: 3,
            [
                new(Ours, (_, port) => Harness.StartOurs($"echo_server {port}"), _ => null),
                new("gevent", (a, port) => a.StartGevent("echo_server.py", $"streamserver {port}"), a => a.GeventDir == null ? a.GeventMissing : null),
                new("Go", (a, port) => a.StartGo($"server {port}"), a => a.GoBinary == null ? a.GoMissing : null),
            ],
            LatencyLevel: 100, RatioAgainst: ["gevent"]),
        new("http_concurrency", $"HTTP keep-alive GETs, blocking handler ({HttpWorkloads.HandlerSleepMs} ms sleep + {HttpWorkloads.Body.Length} B body), the neutral load client against each server", "http",
            [10, 100, 1000], Warmup: 2, Duration: 5,
            [
                new(Ours, (_, port) => Harness.StartOurs($"http_server {port}"), _ => null),
                new("thread pool", (_, port) => Harness.StartOurs($"http_threads_server {port}"), _ => null),
                new("gevent", (a, port) => a.StartLocalGevent("http_server.py", port.ToString(CultureInfo.InvariantCulture)), a => a.HasGevent ? null : a.GeventMissing),
                new("Go", (a, port) => a.StartGoHttp(port.ToString(CultureInfo.InvariantCulture)), a => a.GoHttpBinary == null ? a.GoMissing ?? "the Go HTTP server did not build" : null),
            ],
            LatencyLevel: 1000, RatioAgainst: ["thread pool", "gevent"]),
    ];

    /// <summary>The load client's worker arguments for one point.</summary>
    public string LoadArguments(int port, int connections) => string.Create(CultureInfo.InvariantCulture,
        $"load {Protocol} {port} {connections} {CapPerConnection} {Warmup} {Duration}");

    /// <summary>
    /// Runs every point: rounds outermost, then connection counts, then systems, so the systems alternate and a noisy
    /// moment of the machine does not hit one system's whole series. The best round of each point (by requests/s) counts.
    /// </summary>
    public SweepResult Run(Anchors anchors, int rounds)
    {
        var result = new SweepResult(this);
        foreach (var system in Systems)
            if (system.Missing(anchors) is { } why) result.Notes[system.Label] = why;
        for (int round = 1; round <= rounds; round++)
            foreach (var level in Levels)
                foreach (var system in Systems.Where(s => !result.Notes.ContainsKey(s.Label)))
                {
                    Console.Write($"\r{Name}: round {round}/{rounds}, {level} connections, {system.Label}...            ");
                    var point = Harness.ParseJson(Harness.WithServer(anchors, port => system.Start(anchors, port),
                        (_, port) => Harness.RunOurs(LoadArguments(port, level))));
                    if (point != null && point["requests"] > 0
                        && (!result.Points.TryGetValue((system.Label, level), out var best) || point["req_per_s"] > best["req_per_s"]))
                        result.Points[(system.Label, level)] = point;
                }
        Console.WriteLine($"\r{Name}: " + string.Join(", ", Systems.Select(s =>
            $"{s.Label} {string.Join("/", Levels.Select(l => result.Points.TryGetValue((s.Label, l), out var p) ? Report.Format(p["req_per_s"]) : "—"))}"))
            + $" req/s at {string.Join("/", Levels)} connections            ");
        return result;
    }
}

/// <summary>A sweep's best point per (system, connections), and why skipped columns were skipped.</summary>
internal sealed class SweepResult(Sweep sweep)
{
    public Sweep Sweep { get; } = sweep;
    public Dictionary<(string System, int Connections), Dictionary<string, double>> Points { get; } = new();
    public Dictionary<string, string> Notes { get; } = new();

    public double Get(string system, int connections, string key) =>
        Points.TryGetValue((system, connections), out var p) && p.TryGetValue(key, out var v) ? v : double.NaN;
}
