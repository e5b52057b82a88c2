using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace GreenRuntime.SideBySide;

/// <summary>
/// The idle-connections workload's client, the same for every server: it opens many keep-alive connections that
/// each make one request and then stay open and silent, measures what they cost the server process (resident memory
/// and threads, read from <c>/proc</c>), then keeps 1,000 other connections requesting while the idle ones stay, and
/// finally checks that idle connections still answer. Runs on the thread pool with async sockets, no hub.
/// </summary>
/// <remarks>
/// gevent keeps a greenlet per connection (a few KiB of Python objects and C stack copies); Go a goroutine (an 8 KiB
/// stack at least); GreenRuntime's <c>HttpServer</c> a stackless greenlet and no thread. The kernel's socket
/// buffers are not in the process's resident memory, so the figure is the server's own cost per connection. The
/// number of connections is bounded by the file-descriptor limit of both processes (<c>ulimit -n</c>).
/// </remarks>
internal static partial class IdleClient
{
    private static readonly byte[] s_get = "GET /idle HTTP/1.1\r\nHost: bench\r\n\r\n"u8.ToArray();

    /// <param name="settleSeconds">pause between opening idle connections and measuring them (see below)</param>
    /// <remarks>
    /// The cost per connection is the slope between two measurements, a third of the connections open and all of
    /// them open, so what the server pays once (code compiled for the first requests, thread stacks and heap reserve
    /// of the opening burst) is not spread over the connections; the total per connection is reported beside it.
    /// </remarks>
    public static Dictionary<string, double> Run(int port, int idle, int active, double seconds, double settleSeconds)
    {
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        int pid = ServerPid(port);
        var (heapBefore, before) = Measure(endPoint, pid);

        var idleSockets = new Socket[idle];
        int third = idle / 3;
        OpenIdle(endPoint, idleSockets, 0, third);
        // Let the server settle: ours keeps a busy connection's greenlet for 100 ms, and carrier threads created for
        // the opening burst (200 requests at once) retire after 10 s idle; what stays is the idle connections' cost.
        Thread.Sleep(TimeSpan.FromSeconds(settleSeconds));
        var (heapThird, thirdStatus) = Measure(endPoint, pid);
        OpenIdle(endPoint, idleSockets, third, idle);
        Thread.Sleep(TimeSpan.FromSeconds(settleSeconds));
        var (heapIdle, idleStatus) = Measure(endPoint, pid);

        // 1,000 other connections request in a closed loop while the idle ones stay open.
        var latencies = new List<double>[active];
        int maxThreads = idleStatus.Threads;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        var load = Enumerable.Range(0, active).Select(i => Task.Run(async () =>
        {
            var mine = latencies[i] = new List<double>();
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await s.ConnectAsync(endPoint);
            while (!stop.IsCancellationRequested)
            {
                long t0 = Stopwatch.GetTimestamp();
                try
                {
                    await RequestAsync(s, stop.Token);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                mine.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
            }
        })).ToArray();
        var watch = Stopwatch.StartNew();
        while (!Task.WaitAll(load, 200)) maxThreads = Math.Max(maxThreads, Status(pid).Threads);
        double elapsed = watch.Elapsed.TotalSeconds;
        var all = latencies.SelectMany(l => l).Order().ToArray();

        // The idle connections still work.
        int sample = Math.Min(idle, 500), ok = 0;
        var check = Parallel.ForEachAsync(idleSockets.Take(sample), new ParallelOptions { MaxDegreeOfParallelism = 100 }, async (s, _) =>
        {
            await RequestAsync(s);
            Interlocked.Increment(ref ok);
        });
        check.Wait(TimeSpan.FromSeconds(60));
        foreach (var s in idleSockets) s.Dispose();

        var result = new Dictionary<string, double>
        {
            ["idle_connections"] = idle,
            ["kib_per_idle_conn"] = (idleStatus.RssKiB - thirdStatus.RssKiB) / (double)(idle - third),
            ["kib_total_per_idle_conn"] = (idleStatus.RssKiB - before.RssKiB) / (double)idle,
            ["threads_idle"] = idleStatus.Threads,
            ["threads_under_load"] = maxThreads,
            ["req_per_s"] = all.Length / elapsed,
            ["p99_us"] = all.Length == 0 ? double.NaN : all[(int)(all.Length * 0.99)],
            ["idle_still_answering"] = sample == 0 ? 1 : ok / (double)sample,
        };
        if (heapThird is { } h1 && heapIdle is { } h2) result["managed_kib_per_idle_conn"] = (h2 - h1) / 1024.0 / (idle - third);
        if (heapBefore is { } h0 && heapIdle is { } h3) result["managed_kib_total_per_idle_conn"] = (h3 - h0) / 1024.0 / idle;
        return result;
    }

    /// <summary>Opens idle connections [<paramref name="from"/>, <paramref name="to"/>), each after one request.</summary>
    private static void OpenIdle(IPEndPoint endPoint, Socket[] sockets, int from, int to)
    {
        var opening = Parallel.ForEachAsync(Enumerable.Range(from, to - from), new ParallelOptions { MaxDegreeOfParallelism = 200 }, async (i, _) =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await s.ConnectAsync(endPoint);
            await RequestAsync(s);
            sockets[i] = s;
        });
        if (!opening.Wait(TimeSpan.FromSeconds(120))) throw new TimeoutException($"{to - from} idle connections did not open within 120 s");
    }

    /// <summary>The server's managed heap (when it tells) and then its resident memory and threads: asking for the
    /// heap makes ours collect, so its resident memory is read with no garbage in it.</summary>
    private static (long? Heap, (long RssKiB, int Threads) Status) Measure(IPEndPoint endPoint, int pid)
    {
        long? heap = ManagedHeap(endPoint);
        return (heap, Status(pid));
    }

    /// <summary>The server's managed heap after a full collection, when it answers <c>/stats</c> with <c>heap=N</c>
    /// (GreenRuntime's server does; the others answer their usual body).</summary>
    private static long? ManagedHeap(IPEndPoint endPoint)
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Connect(endPoint);
        s.Send("GET /stats HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"u8);
        var all = new MemoryStream();
        var buffer = new byte[4096];
        int n;
        while ((n = s.Receive(buffer)) > 0) all.Write(buffer, 0, n);
        var match = Heap().Match(Encoding.ASCII.GetString(all.ToArray()));
        return match.Success ? long.Parse(match.Groups[1].Value) : null;
    }

    [GeneratedRegex(@"heap=(\d+)")]
    private static partial Regex Heap();

    private static async Task RequestAsync(Socket s, CancellationToken cancel = default)
    {
        await s.SendAsync(s_get, SocketFlags.None, cancel);
        var buffer = new byte[4096];
        int length = 0, headEnd;
        while ((headEnd = buffer.AsSpan(0, length).IndexOf("\r\n\r\n"u8)) < 0)
        {
            int n = await s.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancel);
            if (n == 0) throw new IOException("the server closed the connection");
            length += n;
        }
        var head = Encoding.Latin1.GetString(buffer, 0, headEnd);
        var match = ContentLength().Match(head);
        if (!head.StartsWith("HTTP/1.1 200", StringComparison.Ordinal) || !match.Success) throw new IOException($"unexpected response: {head}");
        int total = headEnd + 4 + int.Parse(match.Groups[1].Value);
        while (length < total)
        {
            int n = await s.ReceiveAsync(buffer.AsMemory(length), SocketFlags.None, cancel);
            if (n == 0) throw new IOException("the server closed the connection in the middle of a body");
            length += n;
        }
    }

    /// <summary>The pid of the process listening on <paramref name="port"/>, from <c>ss -ltnp</c>.</summary>
    private static int ServerPid(int port)
    {
        using var ss = Process.Start(new ProcessStartInfo("ss", $"-Hltnp sport = :{port}") { RedirectStandardOutput = true })!;
        string output = ss.StandardOutput.ReadToEnd();
        ss.WaitForExit();
        var match = Pid().Match(output);
        return match.Success ? int.Parse(match.Groups[1].Value) : throw new InvalidOperationException($"no process listens on port {port}: {output}");
    }

    private static (long RssKiB, int Threads) Status(int pid)
    {
        long rss = 0;
        int threads = 0;
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            else if (line.StartsWith("Threads:", StringComparison.Ordinal)) threads = int.Parse(line.Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        }
        return (rss, threads);
    }

    [GeneratedRegex(@"pid=(\d+)")]
    private static partial Regex Pid();

    [GeneratedRegex(@"(?im)^content-length:\s*(\d+)")]
    private static partial Regex ContentLength();
}
