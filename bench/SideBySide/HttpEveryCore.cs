using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace GreenRuntime.SideBySide;

/// <summary>
/// The HTTP rows on every core: the 20 ms blocking handler at 1,000 keep-alive connections, GreenRuntime's
/// <c>HttpServer</c> on a <c>HubGroup</c> of one hub per CPU (and on one hub, for the ratio), gevent's pywsgi (one process),
/// and Go's net/http with GOMAXPROCS = all CPUs. Each is loaded twice: by the harness's neutral load client and by wrk
/// (a client nobody here wrote). Every point also reports the server's context switches per request: the sum of
/// voluntary and involuntary switches of all its threads (/proc/PID/task/*/status) over the measured window.
/// </summary>
internal static partial class HttpEveryCore
{
    public const int Connections = 1000;
    private const double Warmup = 2, Duration = 5;
    private const int WrkSeconds = 10;

    /// <summary>An unmeasured wrk run before the measured one, for every system alike (the neutral client's warm-up):
    /// the rows are the steady state; a cold server under wrk is bench/ColdStart's subject.</summary>
    private const int WrkWarmupSeconds = 3;

    /// <summary>GreenRuntime's server on a group of <paramref name="hubs"/> hubs (0: one per CPU), each hub and its carriers
    /// pinned to one CPU or not; 1 is the one-hub server of the other HTTP rows.</summary>
    public static Func<Anchors, int, Process?> Ours(int hubs, bool pinned = true) =>
        (_, port) => Harness.StartOurs(hubs == 1 ? $"http_server {port}" : $"http_server_hubs {port} {hubs}{(pinned ? " pinned" : "")}");

    public static readonly Func<Anchors, int, Process?> Gevent =
        (a, port) => a.StartLocalGevent("http_server.py", port.ToString(CultureInfo.InvariantCulture));

    public static readonly Func<Anchors, int, Process?> GoAllCpus =
        (a, port) => a.StartGoHttp(port.ToString(CultureInfo.InvariantCulture), Environment.ProcessorCount);

    /// <summary>The neutral load client against a server, with the server's context switches per request.</summary>
    public static Func<Anchors, ProcessResult> Neutral(Func<Anchors, int, Process?> start) => a =>
    {
        int port = EchoWorkloads.FreePort();
        var server = start(a, port);
        if (server == null) return new ProcessResult(-1, "", "the server did not print READY");
        try
        {
            // The switches are sampled when the warm-up ends and when the client has finished.
            long before = -1;
            using var sampler = new Timer(_ => Volatile.Write(ref before, ContextSwitches(server.Id)), null, TimeSpan.FromSeconds(Warmup) + ConnectAllowance, Timeout.InfiniteTimeSpan);
            var run = Harness.RunOurs(string.Create(CultureInfo.InvariantCulture, $"load http {port} {Connections} 1000000 {Warmup} {Duration}"));
            long after = ContextSwitches(server.Id);
            var fields = Harness.ParseJson(run);
            if (fields == null) return run;
            long start0 = Volatile.Read(ref before);
            if (start0 >= 0 && after >= start0 && fields["requests"] > 0)
                fields["ctx_switches_per_req"] = (after - start0) / fields["requests"];
            return new ProcessResult(0, JsonSerializer.Serialize(fields), run.Error);
        }
        finally
        {
            Harness.Stop(server);
        }
    };

    /// <summary>The time the load client takes to open its connections before its warm-up starts (generous: they open in well under a second).</summary>
    private static readonly TimeSpan ConnectAllowance = TimeSpan.FromSeconds(0.5);

    /// <summary><c>wrk -t2 -c1000 -d10s --latency</c> against a server (after a 3 s warm-up run), with the server's context switches per request.</summary>
    public static Func<Anchors, ProcessResult> Wrk(Func<Anchors, int, Process?> start) => a =>
    {
        if (!File.Exists("/usr/bin/wrk")) return new ProcessResult(-1, "", "wrk is not installed (apt-get install wrk)");
        int port = EchoWorkloads.FreePort();
        var server = start(a, port);
        if (server == null) return new ProcessResult(-1, "", "the server did not print READY");
        try
        {
            Harness.Run("/usr/bin/wrk", $"-t2 -c{Connections} -d{WrkWarmupSeconds}s http://127.0.0.1:{port}/", "/", TimeSpan.FromSeconds(WrkWarmupSeconds + 60));
            long before = ContextSwitches(server.Id);
            var run = Harness.Run("/usr/bin/wrk", $"-t2 -c{Connections} -d{WrkSeconds}s --latency http://127.0.0.1:{port}/", "/", TimeSpan.FromSeconds(WrkSeconds + 60));
            long after = ContextSwitches(server.Id);
            if (run.ExitCode != 0) return run;
            var fields = ParseWrk(run.Output);
            if (fields == null) return new ProcessResult(-1, "", "wrk printed no Requests/sec line: " + run.Output);
            if (fields["requests"] > 0) fields["ctx_switches_per_req"] = (after - before) / fields["requests"];
            return new ProcessResult(0, JsonSerializer.Serialize(fields), run.Error);
        }
        finally
        {
            Harness.Stop(server);
        }
    };

    /// <summary>Requests/s, p50/p99 (µs), requests and errors from wrk's --latency report; null when it has none.</summary>
    internal static Dictionary<string, double>? ParseWrk(string output)
    {
        var rate = RequestsPerSecond().Match(output);
        if (!rate.Success) return null;
        var fields = new Dictionary<string, double> { ["req_per_s"] = double.Parse(rate.Groups[1].Value, CultureInfo.InvariantCulture) };
        foreach (Match m in Percentile().Matches(output))
        {
            double value = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) * m.Groups[3].Value switch
            {
                "us" => 1, "ms" => 1e3, "s" => 1e6, "m" => 60e6, _ => double.NaN,
            };
            if (m.Groups[1].Value == "50") fields["p50_us"] = value;
            if (m.Groups[1].Value == "99") fields["p99_us"] = value;
        }
        var total = Total().Match(output);
        fields["requests"] = total.Success ? double.Parse(total.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
        var errors = SocketErrors().Match(output);
        fields["errors"] = errors.Success ? errors.Groups.Values.Skip(1).Sum(g => double.Parse(g.Value, CultureInfo.InvariantCulture)) : 0;
        var non2xx = Non2xx().Match(output);
        if (non2xx.Success) fields["errors"] += double.Parse(non2xx.Groups[1].Value, CultureInfo.InvariantCulture);
        return fields;
    }

    /// <summary>Voluntary plus involuntary context switches of every live thread of process <paramref name="pid"/>.</summary>
    internal static long ContextSwitches(int pid)
    {
        long sum = 0;
        try
        {
            foreach (var task in Directory.GetDirectories($"/proc/{pid}/task"))
            {
                try
                {
                    foreach (var line in File.ReadLines(Path.Combine(task, "status")))
                        if (line.StartsWith("voluntary_ctxt_switches:", StringComparison.Ordinal) || line.StartsWith("nonvoluntary_ctxt_switches:", StringComparison.Ordinal))
                            sum += long.Parse(line[(line.IndexOf(':') + 1)..].Trim(), CultureInfo.InvariantCulture);
                }
                catch (IOException)
                {
                    // the thread ended meanwhile
                }
            }
        }
        catch (IOException)
        {
            return -1;
        }
        return sum;
    }

    [GeneratedRegex(@"Requests/sec:\s+([0-9.]+)")]
    private static partial Regex RequestsPerSecond();

    [GeneratedRegex(@"^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$", RegexOptions.Multiline)]
    private static partial Regex Percentile();

    [GeneratedRegex(@"(\d+) requests in")]
    private static partial Regex Total();

    [GeneratedRegex(@"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")]
    private static partial Regex SocketErrors();

    [GeneratedRegex(@"Non-2xx or 3xx responses: (\d+)")]
    private static partial Regex Non2xx();
}
