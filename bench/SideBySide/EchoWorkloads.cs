using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace GreenRuntime.SideBySide;

/// <summary>
/// The echo workload with plain blocking socket code — no GreenRuntime type inside the handler or the client
/// loop — made concurrent by <see cref="Patch.All"/>, one greenlet per connection: the same shape as gevent's
/// echo_server.py / echo_client.py under monkey.patch_all().
/// </summary>
internal static partial class EchoWorkloads
{
    private const int MessageSize = 64;

    /// <summary>Serves until killed (or 120 s, like the anchors), printing READY once listening.</summary>
    public static void Server(int port) => Serve(port, listener => Green.Spawn(() => AcceptLoop(listener)));

    /// <summary>Patch.All, listen, READY, then the accept loop <paramref name="spawnAcceptor"/> starts, for 120 s at most.</summary>
    private static void Serve(int port, Func<Socket, Greenlet> spawnAcceptor)
    {
        Patch.All();
        var listener = Listen(port);
        Console.WriteLine("READY");
        Console.Out.Flush();
        var acceptor = spawnAcceptor(listener);
        Green.Sleep(TimeSpan.FromSeconds(120));
        acceptor.Kill();
    }

    public static Dictionary<string, double> Client(int port, int clients, int rounds)
    {
        Patch.All();
        return RunClients(port, clients, rounds);
    }

    public static Dictionary<string, double> InProcess(int clients, int rounds)
    {
        Patch.All();
        var listener = Listen(0);
        var acceptor = Green.Spawn(() => AcceptLoop(listener));
        var result = RunClients(((IPEndPoint)listener.LocalEndPoint!).Port, clients, rounds);
        acceptor.Kill();
        listener.Dispose();
        return result;
    }

    /// <summary>
    /// The kernel's floor for the in-process echo rows: the same connections, but one thread that makes only the four
    /// system calls of a round trip (client send, server receive, server send, client receive), straight to libc: no
    /// runtime layer, no hub, no patching. On loopback a send delivers its bytes before it returns, so nothing ever waits:
    /// no one-thread echo, in any runtime, serves more round trips per second on this machine.
    /// </summary>
    public static unsafe Dictionary<string, double> InProcessFloor(int clients, int rounds)
    {
        using var listener = Listen(0);
        var sockets = new List<Socket>();
        var pairs = new (int Client, int Server)[clients];
        for (int i = 0; i < clients; i++)
        {
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            client.Connect(listener.LocalEndPoint!);
            var server = listener.Accept();
            server.NoDelay = true;
            sockets.Add(client);
            sockets.Add(server);
            pairs[i] = ((int)client.Handle, (int)server.Handle);
        }
        var buffer = new byte[4096];
        double seconds;
        fixed (byte* b = buffer)
        {
            RoundTrips(pairs, b, Math.Min(rounds, 100)); // warm-up: compiled code and the sockets' buffers
            var watch = Stopwatch.StartNew();
            RoundTrips(pairs, b, rounds);
            seconds = watch.Elapsed.TotalSeconds;
        }
        foreach (var socket in sockets) socket.Dispose();
        long requests = (long)clients * rounds;
        return new()
        {
            ["clients"] = clients,
            ["rounds"] = rounds,
            ["requests"] = requests,
            ["seconds"] = seconds,
            ["req_per_s"] = requests / seconds,
            ["us_per_round_trip"] = seconds * 1e6 / requests,
        };
    }

    private static unsafe void RoundTrips((int Client, int Server)[] pairs, byte* buffer, int rounds)
    {
        for (int r = 0; r < rounds; r++)
            foreach (var (client, server) in pairs)
            {
                Check(LibC.send(client, buffer, MessageSize, 0));
                nint n = Check(LibC.recv(server, buffer, 4096, 0));
                Check(LibC.send(server, buffer, n, 0));
                for (nint got = 0; got < MessageSize; ) got += Check(LibC.recv(client, buffer + got, MessageSize - got, 0));
            }

        static nint Check(nint result) =>
            result > 0 ? result : throw new IOException($"the floor's system call failed (result {result}, errno {Marshal.GetLastPInvokeError()})");
    }

    private static unsafe partial class LibC
    {
        [LibraryImport("libc", SetLastError = true)]
        public static partial nint send(int fd, byte* buffer, nint length, int flags);

        [LibraryImport("libc", SetLastError = true)]
        public static partial nint recv(int fd, byte* buffer, nint length, int flags);
    }

    private static Socket Listen(int port, bool reusePort = false)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        if (reusePort) listener.SetRawSocketOption(1 /* SOL_SOCKET */, 15 /* SO_REUSEPORT */, BitConverter.GetBytes(1));
        listener.Bind(new IPEndPoint(IPAddress.Loopback, port));
        listener.Listen(1024);
        return listener;
    }

    private static void AcceptLoop(Socket listener)
    {
        while (true)
        {
            var connection = listener.Accept(); // patched: parks this greenlet only
            Green.Spawn(() => Handle(connection));
        }
    }

    /// <summary>Legacy-style blocking echo handler: nothing here knows about greenlets.</summary>
    private static void Handle(Socket connection)
    {
        using (connection)
        {
            connection.NoDelay = true;
            var buffer = new byte[4096];
            while (true)
            {
                int n = connection.Receive(buffer);
                if (n == 0) return;
                connection.Send(buffer, 0, n, SocketFlags.None);
            }
        }
    }

    private static Dictionary<string, double> RunClients(int port, int clients, int rounds)
    {
        var latencies = new List<double>(clients * rounds);
        long switches = ContextSwitches(), poolItems = ThreadPool.CompletedWorkItemCount;
        var watch = Stopwatch.StartNew();
        var all = Enumerable.Range(0, clients).Select(_ => Green.Spawn(() => latencies.AddRange(OneClient(port, rounds)))).ToList();
        return Summarize(all, latencies, watch, switches, poolItems, clients, rounds);
    }

    private static Dictionary<string, double> Summarize(List<Greenlet> all, List<double> latencies, Stopwatch watch, long switchesBefore, long poolItemsBefore, int clients, int rounds)
    {
        var done = Green.JoinAll(all, timeout: TimeSpan.FromSeconds(60), raiseError: true);
        if (done.Count < all.Count)
        {
            // Bounded in time like every loop of the harness; say where it is stuck instead of hanging.
            Console.Error.WriteLine($"echo clients stuck after 60 s ({done.Count}/{all.Count} done):");
            Console.Error.WriteLine(Hub.Current.FormatRunInfo());
            Environment.Exit(3);
        }
        var seconds = watch.Elapsed.TotalSeconds;
        long switches = ContextSwitches() - switchesBefore;
        latencies.Sort();
        double Q(double p) => latencies[Math.Min(latencies.Count - 1, (int)(p * latencies.Count))] * 1e6;
        return new()
        {
            ["clients"] = clients,
            ["rounds"] = rounds,
            ["requests"] = latencies.Count,
            ["seconds"] = seconds,
            ["req_per_s"] = latencies.Count / seconds,
            ["p50_us"] = Q(0.5),
            ["p90_us"] = Q(0.9),
            ["p99_us"] = Q(0.99),
            ["p999_us"] = Q(0.999),
            ["max_us"] = latencies[^1] * 1e6,
            ["ctxt_per_req"] = switches / (double)latencies.Count,
            ["pool_items_per_req"] = (ThreadPool.CompletedWorkItemCount - poolItemsBefore) / (double)latencies.Count,
        };
    }

    /// <summary>This process's context switches so far: voluntary + involuntary, summed over its live threads
    /// (/proc/self/task/*/status; /proc/self/status counts the main thread only). 0 where there is no /proc.</summary>
    public static long ContextSwitches()
    {
        if (!Directory.Exists("/proc/self/task")) return 0;
        long total = 0;
        foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
        {
            try
            {
                foreach (var line in File.ReadLines(Path.Combine(task, "status")))
                    if (line.Contains("ctxt_switches:", StringComparison.Ordinal))
                        total += long.Parse(line[(line.IndexOf(':') + 1)..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                // the thread ended meanwhile
            }
        }
        return total;
    }

    /// <summary>Legacy-style blocking client: send 64 bytes, read 64 back, R times.</summary>
    private static List<double> OneClient(int port, int rounds)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Connect(new IPEndPoint(IPAddress.Loopback, port));
        socket.NoDelay = true;
        var message = new byte[MessageSize];
        var reply = new byte[MessageSize];
        var mine = new List<double>(rounds);
        for (int i = 0; i < rounds; i++)
        {
            long start = Stopwatch.GetTimestamp();
            socket.Send(message);
            int got = 0;
            while (got < MessageSize)
            {
                int n = socket.Receive(reply, got, MessageSize - got, SocketFlags.None);
                if (n == 0) throw new EndOfStreamException("the echo server closed the connection");
                got += n;
            }
            mine.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return mine;
    }

    /// <summary>The async server: the same echo written with <c>await ReceiveAsync/SendAsync</c> in stackless greenlets (one hub),
    /// which Patch.All completes on the hub's reactor. Serves until killed (or 120 s), printing READY once listening.</summary>
    public static void ServerAsync(int port) => Serve(port, listener => Green.SpawnAsync(() => AcceptLoopAsync(listener)));

    /// <summary>The async server on a <see cref="HubGroup"/> (one hub per CPU): each hub accepts on its own listener bound to
    /// the same port with SO_REUSEPORT (the kernel spreads the connections), and serves its connections itself.</summary>
    public static void ServerAsyncGroup(int port)
    {
        Patch.All();
        using var group = new HubGroup();
        var listeners = group.Hubs.Select(_ => Listen(port, reusePort: true)).ToList();
        Console.WriteLine("READY");
        Console.Out.Flush();
        var acceptors = listeners.Select((listener, i) => group.SpawnOnAsync(i, () => AcceptLoopAsync(listener))).ToList();
        Green.Sleep(TimeSpan.FromSeconds(120));
        foreach (var acceptor in acceptors) acceptor.Kill(block: false);
    }

    public static Dictionary<string, double> ClientAsync(int port, int clients, int rounds)
    {
        Patch.All();
        return RunClientsAsync(port, clients, rounds);
    }

    /// <param name="patched">false: without Patch.All, the same async code completes through .NET's socket engine (its epoll
    /// thread and the thread pool), and its continuations reach the hub through the inbox.</param>
    public static Dictionary<string, double> InProcessAsync(int clients, int rounds, bool patched = true)
    {
        if (patched) Patch.All();
        var listener = Listen(0);
        var acceptor = Green.SpawnAsync(() => AcceptLoopAsync(listener));
        var result = RunClientsAsync(((IPEndPoint)listener.LocalEndPoint!).Port, clients, rounds);
        acceptor.Kill();
        listener.Dispose();
        return result;
    }

    /// <summary>A stackless accept loop (AcceptAsync itself goes through .NET's socket engine: one accept per connection).</summary>
    private static async Task AcceptLoopAsync(Socket listener)
    {
        var kill = Green.Current.CancellationToken;
        while (true)
        {
            var connection = await listener.AcceptAsync(kill);
            _ = Green.SpawnAsync(() => HandleAsync(connection));
        }
    }

    /// <summary>Plain async echo handler: nothing here knows about greenlets.</summary>
    private static async Task HandleAsync(Socket connection)
    {
        using (connection)
        {
            connection.NoDelay = true;
            var buffer = new byte[4096];
            while (true)
            {
                int n = await connection.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
                if (n == 0) return;
                await connection.SendAsync(buffer.AsMemory(0, n), SocketFlags.None);
            }
        }
    }

    private static Dictionary<string, double> RunClientsAsync(int port, int clients, int rounds)
    {
        var latencies = new List<double>(clients * rounds);
        long switches = ContextSwitches(), poolItems = ThreadPool.CompletedWorkItemCount;
        var watch = Stopwatch.StartNew();
        var all = Enumerable.Range(0, clients).Select(_ => Green.SpawnAsync(async () => latencies.AddRange(await OneClientAsync(port, rounds)))).ToList();
        return Summarize(all, latencies, watch, switches, poolItems, clients, rounds);
    }

    /// <summary>Plain async client: send 64 bytes, read 64 back, R times.</summary>
    private static async Task<List<double>> OneClientAsync(int port, int rounds)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        socket.NoDelay = true;
        var message = new byte[MessageSize];
        var reply = new byte[MessageSize];
        var mine = new List<double>(rounds);
        for (int i = 0; i < rounds; i++)
        {
            long start = Stopwatch.GetTimestamp();
            await socket.SendAsync(message.AsMemory(), SocketFlags.None);
            int got = 0;
            while (got < MessageSize)
            {
                int n = await socket.ReceiveAsync(reply.AsMemory(got), SocketFlags.None);
                if (n == 0) throw new EndOfStreamException("the echo server closed the connection");
                got += n;
            }
            mine.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        return mine;
    }

    public static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }
}
