using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.SideBySide;

/// <summary>
/// A closed-loop load generator that is the same for every server under test: each connection sends a request,
/// waits for the whole response, records the latency and repeats. It runs in its own process on the .NET thread
/// pool with async sockets — no hub, no <c>Patch.All()</c> — so it favours none of the systems it measures and
/// gevent, Go, GreenRuntime and the thread-pool server all see the same client.
/// </summary>
/// <remarks>
/// Protocol:
/// 1. Connect every connection (bounded by <see cref="ConnectTimeout"/>) before the clock starts, so a SYN dropped
///    by a full backlog — retransmitted a second later — does not land in the measured window.
/// 2. Warm-up: requests run but are not recorded (JIT, thread-pool growth, gevent's first imports).
/// 3. Measured window: a response that completes inside it counts, whenever its request started (as wrk does).
///    The window ends at the deadline, or earlier when every connection has sent its request cap.
/// 4. At the deadline pending operations are cancelled (not counted: in a closed loop nearly every connection has
///    a request in flight at that moment).
/// Errors (reset, refused, unannounced close, nonsense) are counted and the connection is reopened after 10 ms; a
/// close the server announced (<c>Connection: close</c>) is a reconnect, not an error.
/// Every loop is bounded: by the cap per connection and by the deadline; a client that still has not stopped
/// 10 s after the deadline exits with an error instead of hanging the harness.
/// </remarks>
internal static class LoadClient
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(15);

    /// <param name="protocol">the exchange, see <see cref="LoadProtocol"/></param>
    /// <param name="port">the server's port on 127.0.0.1</param>
    /// <param name="connections">concurrent connections, each with at most one request in flight</param>
    /// <param name="requestsPerConnection">cap on requests per connection, warm-up included</param>
    /// <param name="warmup">unrecorded time before the window</param>
    /// <param name="duration">the longest measured window</param>
    public static Dictionary<string, double> Run(LoadProtocol protocol, int port, int connections, int requestsPerConnection, TimeSpan warmup, TimeSpan duration)
    {
        if (connections < 1 || requestsPerConnection < 1) throw new ArgumentException("connections and requests per connection must be at least 1");
        var endPoint = new IPEndPoint(IPAddress.Loopback, port);
        var states = Enumerable.Range(0, connections).Select(_ => new Connection()).ToArray();

        // 1. Connect all; a connection that fails here retries inside its loop (and counts an error).
        var connectAll = Task.WhenAll(states.Select(c => c.ConnectAsync(endPoint)));
        if (!connectAll.Wait(ConnectTimeout)) throw new TimeoutException($"{connections} connections to port {port} did not open within {ConnectTimeout}");

        long start = Stopwatch.GetTimestamp();
        long measureFrom = start + (long)(warmup.TotalSeconds * Stopwatch.Frequency);
        long deadline = measureFrom + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        using var stop = new CancellationTokenSource(warmup + duration);
        var loops = states.Select(c => Task.Run(() => c.LoopAsync(protocol, endPoint, requestsPerConnection, measureFrom, deadline, stop.Token))).ToArray();
        if (!Task.WaitAll(loops, warmup + duration + TimeSpan.FromSeconds(10)))
            throw new TimeoutException("load connections did not stop within 10 s of the deadline");

        // Errors are counted in the JSON; the first one says what kind they were (stderr, shown when a run fails).
        if (states.Select(c => c.FirstError).FirstOrDefault(e => e != null) is { } first)
            Console.Error.WriteLine($"first of {states.Sum(c => c.Errors)} errors: {first.GetType().Name}: {first.Message}");
        long end = Math.Min(deadline, states.Max(c => c.FinishedAt));
        var seconds = Math.Max(end - measureFrom, 1) / (double)Stopwatch.Frequency;
        var latencies = states.SelectMany(c => c.Latencies).ToArray();
        Array.Sort(latencies);
        double Us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        double Q(double p) => latencies.Length == 0 ? double.NaN : Us(latencies[Math.Min(latencies.Length - 1, (int)(p * latencies.Length))]);
        var result = new Dictionary<string, double>
        {
            ["connections"] = connections,
            ["requests"] = latencies.Length,
            ["seconds"] = seconds,
            ["req_per_s"] = latencies.Length / seconds,
            ["errors"] = states.Sum(c => c.Errors),
            ["reconnects"] = states.Sum(c => c.Reconnects),
        };
        // No response in the window (a server whose thread pool is starved can answer none for many seconds): no
        // latencies to report, and JSON has no NaN.
        if (latencies.Length > 0)
        {
            result["p50_us"] = Q(0.50);
            result["p90_us"] = Q(0.90);
            result["p99_us"] = Q(0.99);
            result["p999_us"] = Q(0.999);
            result["max_us"] = Us(latencies[^1]);
        }
        return result;
    }

    /// <summary>One connection's state; touched only by its own loop until <see cref="Run"/> has joined the loops.</summary>
    private sealed class Connection
    {
        private Socket? _socket;
        public readonly List<long> Latencies = new();
        public int Errors;
        public int Reconnects;
        public Exception? FirstError;
        public long FinishedAt = long.MaxValue;

        public async Task ConnectAsync(IPEndPoint endPoint)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(endPoint);
                _socket = socket;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                Errors++;
                FirstError ??= e;
            }
        }

        public async Task LoopAsync(LoadProtocol protocol, IPEndPoint endPoint, int cap, long measureFrom, long deadline, CancellationToken stop)
        {
            var buffer = new byte[16 * 1024];
            int sent = 0;
            while (sent < cap && !stop.IsCancellationRequested)
            {
                try
                {
                    if (_socket == null)
                    {
                        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                        await _socket.ConnectAsync(endPoint, stop);
                    }
                    while (sent < cap)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        sent++;
                        await _socket.SendAsync(protocol.Request, SocketFlags.None, stop);
                        bool keepAlive = await protocol.ReadResponseAsync(_socket, buffer, stop);
                        long t1 = Stopwatch.GetTimestamp();
                        if (t1 >= deadline) break; // the window is over even if the cancellation timer has not fired yet
                        if (t1 >= measureFrom) Latencies.Add(t1 - t0);
                        if (!keepAlive)
                        {
                            // Announced close: reconnect (outside any request's latency), not an error.
                            Reconnects++;
                            _socket.Dispose();
                            _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                            await _socket.ConnectAsync(endPoint, stop);
                        }
                    }
                    if (sent >= cap) FinishedAt = Stopwatch.GetTimestamp();
                    break;
                }
                catch (Exception) when (stop.IsCancellationRequested)
                {
                    // Cancelled at the deadline (OperationCanceledException, or a socket error caused by it).
                }
                catch (Exception e) when (e is SocketException or IOException)
                {
                    Errors++;
                    FirstError ??= e;
                    _socket?.Dispose();
                    _socket = null;
                    try
                    {
                        await Task.Delay(10, stop);
                    }
                    catch (OperationCanceledException)
                    {
                    }
                }
            }
            _socket?.Dispose();
        }
    }
}
