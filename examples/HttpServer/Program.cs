// The seed's promise: deploy unmodified blocking web code on a greenlet server and get several times the
// throughput. One "legacy" handler (a 20 ms Thread.Sleep standing for a database call, plus a small file read)
// is served two ways:
//   green   — GreenRuntime's HttpServer with Patch.All() so Thread.Sleep and File reads yield; on every core by
//             default (a HubGroup of one hub per CPU, each pinned to its CPU and accepting on its own SO_REUSEPORT
//             listener), or on N hubs with --hubs N (--hubs 1: one hub, one logical thread);
//   threads — a conventional HttpListener server that runs each request on a thread-pool thread.
//
//   dotnet run -c Release --project examples/HttpServer -- green 8080      # serve until Ctrl+C
//   dotnet run -c Release --project examples/HttpServer -- green 8080 --hubs 1
//   dotnet run -c Release --project examples/HttpServer -- threads 8081
//   dotnet run -c Release --project examples/HttpServer -- bench [connections] [seconds]
//
// "bench" starts each server in a child process and loads it from this process with a small keep-alive load
// generator (C#), printing requests/s and p50/p99 latency for both. wrk works too: wrk -c 1000 -d 10s -t 2 URL.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime;
using GreenRuntime.Servers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var mode = args.Length > 0 ? args[0] : "bench";
switch (mode)
{
    case "green":
        ServeGreen(PortArg(1, 8080), HubsArg());
        break;
    case "threads":
        ServeThreads(PortArg(1, 8081));
        break;
    case "hello-green":
        ServeHelloGreen(PortArg(1, 8082));
        break;
    case "hello-kestrel":
        ServeHelloKestrel(PortArg(1, 8083));
        break;
    case "bench":
        Bench(args.Length > 1 ? int.Parse(args[1]) : 1000, args.Length > 2 ? int.Parse(args[2]) : 10);
        break;
    default:
        Console.Error.WriteLine("usage: HttpServerExample green [port] [--hubs N] | threads|hello-green|hello-kestrel [port] | bench [connections] [seconds]");
        Environment.Exit(2);
        break;
}

int PortArg(int index, int fallback) => args.Length > index && !args[index].StartsWith("--", StringComparison.Ordinal) ? int.Parse(args[index]) : fallback;

// --hubs N: hubs to serve on; 0 (the default) is one per CPU, as a server is expected to use the whole machine.
int HubsArg()
{
    int at = Array.IndexOf(args, "--hubs");
    if (at < 0) return 0;
    if (at + 1 < args.Length && int.TryParse(args[at + 1], out int hubs) && hubs >= 0) return hubs;
    Console.Error.WriteLine("--hubs takes a number of hubs: 1 or more, or 0 for one per CPU");
    Environment.Exit(2);
    return 0;
}

static void ServeGreen(int port, int hubs)
{
    ApplyPatchAll();
    // Warnings and errors (a handler that failed, a connection that broke mid-request) go to the console, as a
    // production server's would: without a LoggerFactory the runtime writes only errors, to standard error.
    var logging = LoggerFactory.Create(b => b.AddSimpleConsole(c => c.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
    var options = new HubOptions { MaxBlockingTime = null, LoggerFactory = logging };
    static void Handle(GreenRuntime.Servers.HttpContext ctx)
    {
        var body = LegacyApp.Handle(ctx.Request.Path);
        ctx.Response.ContentType = "text/plain; charset=utf-8";
        ctx.Response.Write(body);
    }
    if (hubs == 1)
    {
        using var hub = new Hub(options);
        var server = new HttpServer(new IPEndPoint(IPAddress.Loopback, port), Handle);
        StartOrExplain(server.Start, port);
        Console.WriteLine($"green server on http://{server.LocalEndPoint}/ (one hub)");
        server.ServeForever();
        return;
    }
    // Every core: a hub per CPU, each accepting on its own listener; the main thread only waits for Ctrl+C. Each hub
    // and its carrier threads stay on one CPU (PinHubsToCpus): a blocking handler's park and resume are hand-offs
    // between carriers, and a hand-off on one CPU costs about half of one across CPUs (twice the throughput here).
    using var group = new HubGroup(new HubGroupOptions { HubCount = hubs, PinHubsToCpus = true, Hub = options });
    using var wide = new HttpServer(new IPEndPoint(IPAddress.Loopback, port), Handle, new HttpServerOptions { Hubs = group });
    Console.CancelKeyPress += (_, e) =>
    {
        e.Cancel = true;
        wide.Stop(); // from any thread: every hub finishes its requests in progress
    };
    StartOrExplain(wide.Start, port);
    Console.WriteLine($"green server on http://{wide.LocalEndPoint}/ ({group.Hubs.Count} hubs)");
    wide.ServeForever();
}

// A second instance on the same port is refused by the kernel: say so in one line rather than with a stack trace.
static void StartOrExplain(Action start, int port)
{
    try
    {
        start();
    }
    catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
    {
        Console.Error.WriteLine($"port {port} is in use (is another server running on it?): stop that one, or pass another port");
        Environment.Exit(1);
    }
}

// A handler that does not block, for comparing the server's own cost with Kestrel's.
static void ServeHelloGreen(int port)
{
    using var hub = new Hub(new HubOptions { MaxBlockingTime = null });
    var server = new HttpServer(new IPEndPoint(IPAddress.Loopback, port), ctx =>
    {
        ctx.Response.ContentType = "text/plain";
        ctx.Response.Write("Hello, World!");
    });
    server.Start();
    Console.WriteLine($"hello (green) on http://{server.LocalEndPoint}/");
    server.ServeForever();
}

static void ServeHelloKestrel(int port)
{
    var builder = WebApplication.CreateSlimBuilder();
    builder.Logging.ClearProviders();
    builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, port));
    var app = builder.Build();
    app.Run((RequestDelegate)(ctx =>
    {
        ctx.Response.ContentType = "text/plain";
        return ctx.Response.WriteAsync("Hello, World!");
    }));
    app.Start(); // listening from here: the line below is what a load client waits for
    Console.WriteLine($"hello (Kestrel) on http://127.0.0.1:{port}/");
    app.WaitForShutdown();
}

static void ServeThreads(int port)
{
    using var listener = new HttpListener();
    listener.Prefixes.Add($"http://127.0.0.1:{port}/");
    listener.Start();
    Console.WriteLine($"thread-pool server on http://127.0.0.1:{port}/");
    while (true)
    {
        var ctx = listener.GetContext();
        ThreadPool.UnsafeQueueUserWorkItem(c =>
        {
            var body = Encoding.UTF8.GetBytes(LegacyApp.Handle(c.Request.Url!.AbsolutePath));
            c.Response.ContentType = "text/plain; charset=utf-8";
            c.Response.ContentLength64 = body.Length;
            c.Response.OutputStream.Write(body);
            c.Response.Close();
        }, ctx, preferLocal: false);
    }
}

static void ApplyPatchAll()
{
    var watch = Stopwatch.StartNew();
    var report = Patch.All();
    Console.WriteLine($"Patch.All() applied in {watch.ElapsedMilliseconds} ms: {report.Patched.Count + report.AlreadyPatched.Count} methods patched, {report.Refused.Count} refused");
    foreach (var refused in report.Refused.Where(r => r.LosesCooperation)) Console.WriteLine($"  not cooperative: {refused.Description}");
}

static void Bench(int connections, int seconds)
{
    var results = new List<string>();
    foreach (var (name, port) in new[] { ("green", 18080), ("threads", 18081) })
    {
        using var server = StartChild(name, port);
        WaitForServer(port);
        var r = LoadGenerator.Run(new IPEndPoint(IPAddress.Loopback, port), connections, TimeSpan.FromSeconds(seconds));
        results.Add($"{name,-8} {connections} connections, {seconds} s: {r}");
        Console.WriteLine(results[^1]);
        server.Kill(entireProcessTree: true);
        server.WaitForExit();
    }
}

static Process StartChild(string mode, int port)
{
    var self = Environment.ProcessPath!;
    var psi = self.EndsWith("dotnet", StringComparison.Ordinal)
        ? new ProcessStartInfo(self, [System.Reflection.Assembly.GetEntryAssembly()!.Location, mode, port.ToString()])
        : new ProcessStartInfo(self, [mode, port.ToString()]);
    psi.RedirectStandardOutput = true;
    var p = Process.Start(psi)!;
    p.OutputDataReceived += (_, e) => { if (e.Data != null) Console.WriteLine($"  [{mode}] {e.Data}"); };
    p.BeginOutputReadLine();
    return p;
}

static void WaitForServer(int port)
{
    for (int i = 0; i < 100; i++)
    {
        try
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            s.Connect(IPAddress.Loopback, port);
            return;
        }
        catch (SocketException)
        {
            Thread.Sleep(100);
        }
    }
    throw new InvalidOperationException($"No server came up on port {port}.");
}

/// <summary>The "legacy" code: plain blocking calls, no knowledge of greenlets.</summary>
internal static class LegacyApp
{
    private static readonly string DataFile = CreateDataFile();

    public static string Handle(string path)
    {
        Thread.Sleep(20);                           // stands for a database query
        var template = File.ReadAllText(DataFile);  // a small file read
        return template.Replace("{path}", path, StringComparison.Ordinal);
    }

    private static string CreateDataFile()
    {
        var file = Path.Combine(Path.GetTempPath(), $"greenruntime-example-{Environment.ProcessId}.txt");
        File.WriteAllText(file, "Hello from {path}\n" + new string('.', 1000) + "\n");
        AppDomain.CurrentDomain.ProcessExit += (_, _) => File.Delete(file);
        return file;
    }
}

/// <summary>
/// A closed-loop keep-alive load generator: each connection sends a GET, reads the whole response, repeats.
/// Latency is measured per request; connections that fail are reopened and counted as errors.
/// </summary>
internal static class LoadGenerator
{
    public sealed record Result(long Requests, long Errors, double Seconds, double P50Ms, double P99Ms)
    {
        public override string ToString() => $"{Requests / Seconds,9:0} req/s  p50 {P50Ms:0.0} ms  p99 {P99Ms:0.0} ms  errors {Errors}";
    }

    public static Result Run(IPEndPoint endPoint, int connections, TimeSpan duration)
    {
        ThreadPool.GetMinThreads(out _, out int io);
        ThreadPool.SetMinThreads(Math.Max(Environment.ProcessorCount, 8), io);
        var request = Encoding.ASCII.GetBytes($"GET /bench HTTP/1.1\r\nHost: {endPoint}\r\n\r\n");
        var latencies = new List<double>[connections];
        long errors = 0;
        var stop = DateTime.UtcNow + duration;
        var started = Stopwatch.StartNew();
        var tasks = Enumerable.Range(0, connections).Select(async i =>
        {
            var mine = latencies[i] = new List<double>();
            var buffer = new byte[8192];
            while (DateTime.UtcNow < stop)
            {
                using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await s.ConnectAsync(endPoint);
                    while (DateTime.UtcNow < stop)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        await s.SendAsync(request);
                        await ReadResponse(s, buffer);
                        mine.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                    }
                }
                catch (Exception e) when (e is SocketException or IOException)
                {
                    Interlocked.Increment(ref errors);
                    await Task.Delay(10);
                }
            }
        }).ToArray();
        Task.WaitAll(tasks);
        var all = latencies.SelectMany(l => l).Order().ToArray();
        double Pct(double p) => all.Length == 0 ? double.NaN : all[Math.Min(all.Length - 1, (int)(p * all.Length))];
        return new Result(all.Length, errors, started.Elapsed.TotalSeconds, Pct(0.50), Pct(0.99));
    }

    /// <summary>Reads one response with a Content-Length body (both servers send one for this handler).</summary>
    private static async Task ReadResponse(Socket s, byte[] buffer)
    {
        int have = 0;
        while (true)
        {
            int n = await s.ReceiveAsync(buffer.AsMemory(have));
            if (n == 0) throw new IOException("The server closed the connection.");
            have += n;
            var span = buffer.AsSpan(0, have);
            int headEnd = span.IndexOf("\r\n\r\n"u8);
            if (headEnd < 0) continue;
            var head = Encoding.ASCII.GetString(span[..headEnd]);
            int at = head.IndexOf("Content-Length:", StringComparison.OrdinalIgnoreCase);
            if (at < 0) throw new IOException("The response has no Content-Length.");
            int lineEnd = head.IndexOf('\r', at);
            int length = int.Parse(head[(at + 15)..(lineEnd < 0 ? head.Length : lineEnd)].Trim());
            int total = headEnd + 4 + length;
            while (have < total)
            {
                n = await s.ReceiveAsync(buffer.AsMemory(have));
                if (n == 0) throw new IOException("The server closed the connection.");
                have += n;
            }
            return;
        }
    }
}
