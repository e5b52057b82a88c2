using System.Diagnostics;
using System.Text.Json;

namespace GreenRuntime.SideBySide;

/// <summary>One workload: how each system runs it and which of its JSON fields are compared.</summary>
/// <param name="Metric">the compared field, in GreenRuntime's JSON</param>
/// <param name="GeventMetric">the same quantity in gevent's JSON</param>
/// <param name="GoMetric">the same quantity in Go's JSON</param>
/// <param name="HigherIsBetter">rates: true; times and bytes: false</param>
/// <param name="Extra">secondary fields reported as they are (same names for all systems, or per-system aliases)</param>
internal sealed record Workload(
    string Name, string Title, string Unit, string Target,
    string Ours, (string Script, string Args)? Gevent, string? Go,
    string Metric, string GeventMetric, string GoMetric, bool HigherIsBetter,
    (string Ours, string Gevent, string Go, string Label)[] Extra);

internal sealed class Result
{
    public required Workload Workload { get; init; }
    public Dictionary<string, double>? Ours, Gevent, Go;
    public string? GeventNote, GoNote;
}

internal static class Harness
{
    public static readonly Workload[] All =
    [
        new("switch_stackless", "switch rate, stackless (`await Task.Yield()` ping-pong; gevent `sleep(0)`), 1M", "switches/s", "≥ 20× gevent",
            "switch_stackless", ("bench_switch.py", "sleep0 1000000"), "switch_gosched",
            "switches_per_s", "switches_per_s", "switches_per_s", true, []),
        new("switch_stackful", "switch rate, stackful (`Green.Sleep(0)` ping-pong), 1M", "switches/s", "≤ 1.3 futex hand-offs (≈ 3 µs each)",
            "switch_stackful", ("bench_switch.py", "sleep0 1000000"), "switch_gosched",
            "switches_per_s", "switches_per_s", "switches_per_s", true, []),
        new("spawn_join", "spawn + join, 100k empty greenlets", "greenlets/s", "≥ 10× gevent",
            "spawn_join", ("bench_spawn.py", "spawn_join"), "spawn_join",
            "greenlets_per_s", "greenlets_per_s", "goroutines_per_s", true, []),
        new("sleep_mem", "100k greenlets sleeping 1 s (ours stackless): wall", "s", "≤ 1.5 s, ≤ 1 KiB each",
            "sleep_mem", ("bench_spawn.py", "sleep_mem"), "sleep_mem",
            "wall_s", "wall_s", "wall_s", false,
            [("bytes_per_greenlet", "bytes_per_greenlet", "bytes_per_goroutine", "bytes per greenlet")]),
        new("blocked_mem", "10k blocked stackful greenlets (a parked thread each): wall", "s", "memory per greenlet reported",
            "blocked_mem", null, null,
            "wall_s", "", "", false,
            [("bytes_per_greenlet", "", "", "bytes per greenlet")]),
        new("timers", "10k timers, random 0–100 ms: wall", "s", "≤ 0.15 s",
            "timers", ("bench_timers.py", ""), "timers",
            "wall_s", "wall_s", "wall_s", false,
            [("lateness_ms_p99", "lateness_ms_p99", "lateness_ms_p99", "p99 lateness ms")]),
    ];

    public static List<Result> RunAll(Anchors anchors, int rounds, string? only)
    {
        var results = new List<Result>();
        foreach (var w in All.Where(w => only == null || w.Name.Contains(only, StringComparison.OrdinalIgnoreCase)))
        {
            var r = new Result { Workload = w };
            for (int round = 1; round <= rounds; round++)
            {
                Console.Write($"\r{w.Name}: round {round}/{rounds} GreenRuntime...   ");
                r.Ours = Better(w, w.Metric, r.Ours, Parse(RunOurs(w.Ours)));
                if (w.Gevent is { } gv)
                {
                    if (anchors.GeventDir == null) r.GeventNote = anchors.GeventMissing;
                    else
                    {
                        Console.Write($"\r{w.Name}: round {round}/{rounds} gevent...         ");
                        r.Gevent = Better(w, w.GeventMetric, r.Gevent, Parse(anchors.RunGevent(gv.Script, gv.Args)));
                    }
                }
                if (w.Go is { } go)
                {
                    if (anchors.GoBinary == null) r.GoNote = anchors.GoMissing;
                    else
                    {
                        Console.Write($"\r{w.Name}: round {round}/{rounds} Go...             ");
                        r.Go = Better(w, w.GoMetric, r.Go, Parse(anchors.RunGo(go)));
                    }
                }
            }
            Console.WriteLine($"\r{w.Name}: GreenRuntime {Show(r.Ours, w.Metric)}, gevent {Show(r.Gevent, w.GeventMetric)}, Go {Show(r.Go, w.GoMetric)} ({w.Unit})");
            results.Add(r);
        }
        return results;
    }

    private static string Show(Dictionary<string, double>? d, string key) =>
        d != null && d.TryGetValue(key, out var v) ? Report.Format(v) : "—";

    private static Dictionary<string, double>? Better(Workload w, string key, Dictionary<string, double>? best, Dictionary<string, double>? next)
    {
        if (next == null || !next.ContainsKey(key)) return best;
        if (best == null) return next;
        return (next[key] > best[key]) == w.HigherIsBetter ? next : best;
    }

    private static ProcessResult RunOurs(string workload)
    {
        var self = Environment.ProcessPath!;
        var args = $"worker {workload}";
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
            args = $"\"{typeof(Harness).Assembly.Location}\" {args}";
        return Run(self, args, Environment.CurrentDirectory, TimeSpan.FromMinutes(3));
    }

    private static Dictionary<string, double>? Parse(ProcessResult run)
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
