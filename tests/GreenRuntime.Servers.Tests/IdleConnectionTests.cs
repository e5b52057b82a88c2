using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Tests;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers.Tests;

/// <summary>
/// Connections that wait for their next bytes hold no greenlet stack and no carrier thread: an HTTP keep-alive
/// connection between requests, and every connection of a <see cref="StreamServer.ForAsync(IPEndPoint, Func{Socket, EndPoint, Task}, int, int)"/> server.
/// </summary>
public class IdleConnectionTests : ServerTest
{
    private static readonly byte[] s_get = "GET /idle HTTP/1.1\r\nHost: test\r\n\r\n"u8.ToArray();

    [Test]
    public void ConnectionsThatSentPartOfAHeadHoldNoCarrierAndAreServedWhenTheRestComes()
    {
        // Slowloris: each client sends the start of a request and stalls. A stackful greenlet per such connection held a
        // carrier thread for up to RequestHeadersTimeout (10 s): 1,000 of them, 1,000 threads.
        const int clients = 200;
        int handled = 0;
        using var server = new HttpServer(AnyLoopbackPort, ctx =>
        {
            handled++;
            ctx.Response.Write("ok\n");
        });
        server.Start();
        var endPoint = server.LocalEndPoint;
        var sockets = ClientAsync(async () =>
        {
            var all = new Socket[clients];
            await Parallel.ForEachAsync(Enumerable.Range(0, clients), new ParallelOptions { MaxDegreeOfParallelism = 50 }, async (i, _) =>
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await s.ConnectAsync(endPoint);
                await s.SendAsync("GET /slow HTTP/1.1\r\nHost: te"u8.ToArray());
                all[i] = s;
            });
            return all;
        }, timeoutSeconds: 60);
        try
        {
            WaitUntil(() => server.ConnectionCount == clients, "every connection was accepted");
            Green.Sleep(200); // their first bytes are in
            Assert.That(Hub.GetRunInfo().Carriers.HeldByThisHub, Is.LessThanOrEqualTo(2), "a partial head is gathered without a carrier");
            Assert.That(handled, Is.Zero);
            ClientAsync(async () =>
            {
                await Parallel.ForEachAsync(sockets, new ParallelOptions { MaxDegreeOfParallelism = 50 }, async (s, _) =>
                {
                    await s.SendAsync("st\r\n\r\n"u8.ToArray());
                    var buffer = new byte[1024];
                    int n = await s.ReceiveAsync(buffer);
                    if (!Encoding.ASCII.GetString(buffer, 0, n).StartsWith("HTTP/1.1 200", StringComparison.Ordinal))
                        throw new InvalidOperationException("not served: " + Encoding.ASCII.GetString(buffer, 0, n));
                });
                return 0;
            }, timeoutSeconds: 60);
            Assert.That(handled, Is.EqualTo(clients));
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
    }

    [Test]
    public void FiveThousandIdleKeepAliveConnectionsHoldNoCarrierWhileOthersKeepBeingServed()
    {
        const int idle = 5000;
        int handled = 0;
        using var server = new HttpServer(AnyLoopbackPort, ctx =>
        {
            Green.Sleep(1); // a blocking handler: it needs a stackful greenlet while it runs
            handled++;
            ctx.Response.Write("ok\n");
        });
        server.Start();
        var endPoint = server.LocalEndPoint;

        var sockets = ClientAsync(async () =>
        {
            var all = new Socket[idle];
            await Parallel.ForEachAsync(Enumerable.Range(0, idle), new ParallelOptions { MaxDegreeOfParallelism = 100 }, async (i, _) =>
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await s.ConnectAsync(endPoint);
                await RequestAsync(s);
                all[i] = s;
            });
            return all;
        }, timeoutSeconds: 120);
        try
        {
            WaitUntil(() => server.ConnectionCount == idle && Hub.GetRunInfo().Carriers.HeldByThisHub <= 2, "every connection is idle and their carriers are back in the pool");
            Assert.That(handled, Is.EqualTo(idle));
            Assert.That(Process.GetCurrentProcess().Threads.Count, Is.LessThan(1000), "idle connections must not keep threads");

            // Meanwhile other clients are served at once.
            int others = ClientAsync(async () =>
            {
                int ok = 0;
                await Parallel.ForEachAsync(Enumerable.Range(0, 200), new ParallelOptions { MaxDegreeOfParallelism = 50 }, async (_, _) =>
                {
                    using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    await s.ConnectAsync(endPoint);
                    await RequestAsync(s);
                    Interlocked.Increment(ref ok);
                });
                return ok;
            }, timeoutSeconds: 60);
            Assert.That(others, Is.EqualTo(200));

            // And every idle connection is still a working keep-alive connection.
            ClientAsync(async () =>
            {
                await Parallel.ForEachAsync(sockets, new ParallelOptions { MaxDegreeOfParallelism = 100 }, async (s, _) => await RequestAsync(s));
                return 0;
            }, timeoutSeconds: 120);
            Assert.That(handled, Is.EqualTo(2 * idle + 200));
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
        WaitUntil(() => server.ConnectionCount == 0, "the server noticed every client close", timeoutSeconds: 30);
    }

    [Test]
    public void AnIdleConnectionStillTimesOutAndStopStillClosesIdleConnectionsAtOnce()
    {
        using var server = new HttpServer(AnyLoopbackPort, ctx => ctx.Response.Write("ok\n"),
            new HttpServerOptions { KeepAliveTimeout = TimeSpan.FromMilliseconds(300) });
        server.Start();
        var endPoint = server.LocalEndPoint;
        var closedByTimeout = ClientAsync(async () =>
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await s.ConnectAsync(endPoint);
            await RequestAsync(s);
            var watch = Stopwatch.StartNew();
            int n = await s.ReceiveAsync(new byte[16]); // the server closes the idle connection
            return (n, watch.Elapsed);
        });
        Assert.That(closedByTimeout.n, Is.Zero);
        Assert.That(closedByTimeout.Elapsed, Is.GreaterThan(TimeSpan.FromMilliseconds(200)).And.LessThan(TimeSpan.FromSeconds(10)));

        var keep = ClientAsync(async () =>
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await s.ConnectAsync(endPoint);
            await RequestAsync(s);
            return s;
        });
        using (keep)
        {
            WaitUntil(() => server.ConnectionCount == 1, "the connection is idle");
            var stop = Stopwatch.StartNew();
            server.Stop(TimeSpan.FromSeconds(5));
            Assert.That(stop.Elapsed, Is.LessThan(TimeSpan.FromSeconds(4)), "an idle connection is closed at once, not waited for");
            WaitUntil(() => server.ConnectionCount == 0, "the idle connection is gone");
            Assert.That(Client(() => keep.Receive(new byte[16])), Is.Zero);
        }
        Assert.That(Logs.Entries.Where(e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Error), Is.Empty);
    }

    [Test]
    public void AnAsyncStreamServerServesMoreConnectionsAtOnceThanTheHubHasCarriers()
    {
        Hub.Dispose();
        Hub = new Hub(new HubOptions { MaxCarriers = 8, LoggerFactory = Microsoft.Extensions.Logging.LoggerFactory.Create(b => b.AddProvider(Logs)) });
        using var server = StreamServer.ForAsync(AnyLoopbackPort, async (socket, _) =>
        {
            var buffer = new byte[256];
            int n;
            while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, Green.Current.CancellationToken)) > 0)
                await socket.SendAsync(buffer.AsMemory(0, n), SocketFlags.None);
        });
        server.Start();
        Assert.That(server.IsAsync, Is.True);
        Assert.That(server.MaxConnections, Is.GreaterThan(8), "the limit comes from file descriptors, not carriers");
        var endPoint = server.LocalEndPoint;
        const int clients = 300;
        var sockets = ClientAsync(async () =>
        {
            var all = new Socket[clients];
            await Parallel.ForEachAsync(Enumerable.Range(0, clients), new ParallelOptions { MaxDegreeOfParallelism = 50 }, async (i, _) =>
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(endPoint);
                await EchoAsync(s, $"hello {i}");
                all[i] = s;
            });
            return all;
        }, timeoutSeconds: 60);
        try
        {
            Assert.That(server.ConnectionCount, Is.EqualTo(clients), "all connections are open at once");
            ClientAsync(async () =>
            {
                for (int i = 0; i < clients; i++) await EchoAsync(sockets[i], $"again {i}");
                return 0;
            });
            server.Stop(TimeSpan.FromSeconds(1)); // the handlers await a receive: the kill cancels it
            WaitUntil(() => server.ConnectionCount == 0, "every connection ended");
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
        Assert.That(Logs.Entries.Where(e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Error), Is.Empty, "a cancellation caused by Stop is not a handler failure");
    }

    [Test]
    public void AnAsyncHandlerThatThrowsIsLoggedAndClosesOnlyItsConnection()
    {
        using var server = StreamServer.ForAsync(AnyLoopbackPort, async (socket, _) =>
        {
            var buffer = new byte[16];
            int n = await socket.ReceiveAsync(buffer);
            if (buffer[0] == (byte)'x') throw new InvalidOperationException("bad byte");
            await socket.SendAsync(buffer.AsMemory(0, n));
        });
        server.Start();
        var endPoint = server.LocalEndPoint;
        var (bad, good) = ClientAsync(async () =>
        {
            using var a = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await a.ConnectAsync(endPoint);
            await a.SendAsync("x"u8.ToArray());
            int closed = await a.ReceiveAsync(new byte[4]);
            using var b = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await b.ConnectAsync(endPoint);
            await b.SendAsync("ok"u8.ToArray());
            var reply = new byte[2];
            int got = await b.ReceiveAsync(reply);
            return (closed, Encoding.ASCII.GetString(reply, 0, got));
        });
        Assert.That(bad, Is.Zero);
        Assert.That(good, Is.EqualTo("ok"));
        WaitUntil(() => Logs.Entries.Any(e => e.EventId.Id == 202), "the failure is logged");
        Assert.That(Logs.Entries.Single(e => e.EventId.Id == 202).Exception, Is.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public void ForAsyncValidatesItsArguments()
    {
        Assert.Throws<ArgumentNullException>(() => StreamServer.ForAsync(AnyLoopbackPort, null!));
        Assert.Throws<ArgumentNullException>(() => StreamServer.ForAsync(AnyLoopbackPort, (_, _) => Task.CompletedTask, pool: null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => StreamServer.ForAsync(AnyLoopbackPort, (_, _) => Task.CompletedTask, maxConnections: -1));
    }

    private static async Task EchoAsync(Socket s, string text)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        await s.SendAsync(bytes);
        var back = new byte[bytes.Length];
        int got = 0;
        while (got < back.Length)
        {
            int n = await s.ReceiveAsync(back.AsMemory(got));
            if (n == 0) throw new IOException("The server closed the connection.");
            got += n;
        }
        Assert.That(Encoding.ASCII.GetString(back), Is.EqualTo(text));
    }

    /// <summary>Sends one GET and reads its whole response (Content-Length framed), checking it is "200 ok".</summary>
    private static async Task RequestAsync(Socket s)
    {
        await s.SendAsync(s_get);
        var buffer = new byte[4096];
        int length = 0, headEnd;
        while ((headEnd = buffer.AsSpan(0, length).IndexOf("\r\n\r\n"u8)) < 0)
        {
            int n = await s.ReceiveAsync(buffer.AsMemory(length));
            if (n == 0) throw new IOException("The server closed the connection before the response head.");
            length += n;
        }
        var head = Encoding.Latin1.GetString(buffer, 0, headEnd);
        if (!head.StartsWith("HTTP/1.1 200", StringComparison.Ordinal)) throw new IOException($"Unexpected response: {head}");
        var lengthLine = head.Split("\r\n").Single(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
        int bodyLength = int.Parse(lengthLine["Content-Length:".Length..].Trim());
        while (length < headEnd + 4 + bodyLength)
        {
            int n = await s.ReceiveAsync(buffer.AsMemory(length));
            if (n == 0) throw new IOException("The server closed the connection in the middle of the body.");
            length += n;
        }
        if (length != headEnd + 4 + bodyLength) throw new IOException("The server sent more than one response.");
    }
}
