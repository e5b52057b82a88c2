using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace GreenRuntime.Benchmarks;

/// <summary>
/// What <c>Patch.All()</c> costs at start-up: each run is a fresh process that calls it once, cold, and reports
/// the call's wall time with its breakdown (<see cref="PatchTimings"/>); the parent prints every run and the
/// median.
/// </summary>
/// <remarks>
///   dotnet run -c Release --project bench/GreenRuntime.Benchmarks -- patch-startup [runs=10]
/// </remarks>
internal static class PatchStartup
{
    private const string ChildMode = "patch-startup-child";

    public static void Run(int runs)
    {
        string self = typeof(PatchStartup).Assembly.Location;
        string dotnet = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var totals = new List<double>();
        var lines = new List<Dictionary<string, double>>();
        for (int i = 0; i < runs; i++)
        {
            var start = new ProcessStartInfo(dotnet, [self, ChildMode]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var child = Process.Start(start)!;
            string output = child.StandardOutput.ReadToEnd();
            string errors = child.StandardError.ReadToEnd();
            child.WaitForExit();
            if (child.ExitCode != 0)
                throw new InvalidOperationException($"run {i + 1} exited with {child.ExitCode}: {errors}{output}");
            var line = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last();
            var figures = JsonSerializer.Deserialize<Dictionary<string, double>>(line)!;
            Console.WriteLine(line);
            totals.Add(figures["patch_all_ms"]);
            lines.Add(figures);
        }

        double Median(IEnumerable<double> values)
        {
            var sorted = values.Order().ToList();
            return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
        }

        var summary = lines[0].Keys.ToDictionary(k => k, k => Math.Round(Median(lines.Select(l => l[k])), 1));
        Console.WriteLine($"{{\"bench\": \"patch_all_cold_median\", \"runs\": {runs}, " +
            string.Join(", ", summary.Select(kv => $"\"{kv.Key}\": {kv.Value.ToString(CultureInfo.InvariantCulture)}")) +
            $", \"min_ms\": {totals.Min().ToString("F1", CultureInfo.InvariantCulture)}, \"max_ms\": {totals.Max().ToString("F1", CultureInfo.InvariantCulture)}}}");
    }

    /// <summary>The child: one cold <c>Patch.All()</c>, one JSON line.</summary>
    public static void Child()
    {
        TimeSpan cpu = Process.GetCurrentProcess().TotalProcessorTime;
        TimeSpan jit = System.Runtime.JitInfo.GetCompilationTime();
        long methods = System.Runtime.JitInfo.GetCompiledMethodCount();
        var watch = Stopwatch.StartNew();
        PatchReport report = Patch.All();
        double total = watch.Elapsed.TotalMilliseconds;
        cpu = Process.GetCurrentProcess().TotalProcessorTime - cpu;
        jit = System.Runtime.JitInfo.GetCompilationTime() - jit;
        methods = System.Runtime.JitInfo.GetCompiledMethodCount() - methods;
        PatchTimings t = Patch.LastTimings!;
        var figures = new Dictionary<string, double>
        {
            ["patch_all_ms"] = total,
            ["patched"] = report.Patched.Count,
            ["refused"] = report.Refused.Count,
            ["process_cpu_ms"] = cpu.TotalMilliseconds,
            ["jit_ms"] = jit.TotalMilliseconds,
            ["jit_methods"] = methods,
            ["lookup_ms"] = t.Lookup.TotalMilliseconds,
            ["engine_gate_ms"] = t.Support.TotalMilliseconds,
            ["checks_ms"] = t.Checks.TotalMilliseconds,
            ["staging_ms"] = t.Engine.Staging.TotalMilliseconds,
            ["finishing_while_diverted_ms"] = t.Engine.Finishing.TotalMilliseconds,
            ["slept_ms"] = t.Engine.Slept.TotalMilliseconds,
            ["writing_ms"] = t.Engine.Writing.TotalMilliseconds,
            ["rediverted"] = t.Engine.Rediverted,
            ["under_lock_ms"] = t.Total.TotalMilliseconds,
        };
        Console.WriteLine("{" + string.Join(", ", figures.Select(kv => $"\"{kv.Key}\": {kv.Value.ToString("0.#", CultureInfo.InvariantCulture)}")) + "}");
    }

    public static bool IsChild(string[] args) => args is [ChildMode, ..];
}
