using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Tests;

namespace GreenRuntime.Servers.Tests;

public class StreamServerTests : ServerTest
{
    /// <summary>Echoes through the cooperative stream until the client closes.</summary>
    private static void Echo(Socket socket, EndPoint remote)
    {
        using var stream = new GreenNetworkStream(socket);
        var buffer = new byte[4096];
        int n;
        while ((n = stream.Read(buffer, 0, buffer.Length)) > 0) stream.Write(buffer, 0, n);
    }

    [Test]
    public void EchoesFor200ConcurrentClients()
    {
        using var server = new StreamServer(AnyLoopbackPort, Echo);
        server.Start();
        int peak = 0;
        var watcher = Green.Spawn(() =>
        {
            while (true) { peak = Math.Max(peak, server.ConnectionCount); Green.Sleep(2); }
        });
        var endPoint = server.LocalEndPoint;
        var results = ClientAsync(async () =>
        {
            using var allConnected = new CountdownEvent(200);
            var clients = Enumerable.Range(0, 200).Select(async i =>
            {
                using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync(endPoint);
                allConnected.Signal();
                // Hold every connection open until all 200 exist, so the server really serves them at once.
                await Task.Run(() => allConnected.Wait(TimeSpan.FromSeconds(20)));
                var received = new StringBuilder();
                var buffer = new byte[256];
                for (int round = 0; round < 5; round++)
                {
                    // Every client has its first echo, so its handler runs: stay connected until the watcher has seen
                    // all 200 at once (a client that finished early would otherwise end its handler before the last
                    // connection is accepted, or between two of the watcher's samples).
                    if (round == 1) await Task.Run(() => SpinWait.SpinUntil(() => Volatile.Read(ref peak) >= 200, TimeSpan.FromSeconds(20)));
                    var message = $"client {i} round {round};";
                    await s.SendAsync(Encoding.ASCII.GetBytes(message));
                    int want = message.Length, got = 0;
                    while (got < want)
                    {
                        int n = await s.ReceiveAsync(buffer.AsMemory(0, want - got));
                        if (n == 0) break;
                        received.Append(Encoding.ASCII.GetString(buffer, 0, n));
                        got += n;
                    }
                }
                return received.ToString();
            }).ToList();
            return await Task.WhenAll(clients);
        }, 60);
        watcher.Kill();
        for (int i = 0; i < 200; i++)
            Assert.That(results[i], Is.EqualTo(string.Concat(Enumerable.Range(0, 5).Select(r => $"client {i} round {r};"))));
        Assert.That(peak, Is.EqualTo(200), "all 200 connections were served concurrently");
        WaitUntil(() => server.ConnectionCount == 0, "every handler has finished");
    }

    [Test]
    public void PortZeroBindsAFreePortThatAcceptsConnections()
    {
        var server = new StreamServer(AnyLoopbackPort, Echo);
        Assert.That(() => server.LocalEndPoint, Throws.InvalidOperationException.With.Message.Contains("Start()"));
        server.Start();
        var port = ((IPEndPoint)server.LocalEndPoint).Port;
        Assert.That(port, Is.GreaterThan(0));
        var echoed = Client(() =>
        {
            using var s = Connect(server.LocalEndPoint);
            SendText(s, "ping");
            s.Shutdown(SocketShutdown.Send);
            return Encoding.ASCII.GetString(ReadToEnd(s));
        });
        Assert.That(echoed, Is.EqualTo("ping"));
        server.Stop();
        Assert.That(server.IsAccepting, Is.False);
    }

    [Test]
    public void StopWaitsForHandlersThatFinishAndKillsThoseThatDoNot()
    {
        int baseline = Hub.AliveCount;
        StreamServer server = null!;
        server = new StreamServer(AnyLoopbackPort, (socket, _) =>
        {
            using var stream = new GreenNetworkStream(socket);
            var first = new byte[1];
            stream.ReadExactly(first);
            if (first[0] == (byte)'q')
            {
                // A handler that notices the stop and finishes within the stop timeout.
                while (!server.IsStopping) Green.Sleep(5);
                Green.Sleep(50);
                stream.Write("done"u8);
                return;
            }
            stream.ReadExactly(new byte[1]); // blocks until killed: the client never sends more
        });
        server.Start();
        var endPoint = server.LocalEndPoint;
        var clients = Enumerable.Range(0, 6).Select(i => Task.Run(() =>
        {
            using var s = Connect(endPoint);
            SendText(s, i == 0 ? "q" : "x");
            return Encoding.ASCII.GetString(ReadToEnd(s));
        })).ToList();
        WaitUntil(() => server.ConnectionCount == 6, "six handlers run");
        server.Stop(TimeSpan.FromMilliseconds(400));
        Assert.That(server.ConnectionCount, Is.EqualTo(0));
        var outputs = Green.Wait(Task.WhenAll(clients), TimeSpan.FromSeconds(15));
        Assert.That(outputs[0], Is.EqualTo("done"), "the handler that finished in time completed its work");
        Assert.That(outputs.Skip(1), Is.All.Empty, "the others were closed without output");
        Assert.That(Hub.AliveCount, Is.EqualTo(baseline), "no greenlet is left behind (accept loop included)");
        Assert.That(Logs.Entries.Any(e => e.EventId.Id == 204 && e.Message.Contains("5 handler")), Is.True);
        Assert.That(() => Client(() => Connect(endPoint)), Throws.InstanceOf<SocketException>(), "the listener is closed");
    }

    [Test]
    public void StopAcceptingQueuesClientsInTheBacklogUntilStartAccepting()
    {
        int handled = 0;
        using var server = new StreamServer(AnyLoopbackPort, (socket, remote) => { handled++; Echo(socket, remote); });
        server.Start();
        server.StopAccepting();
        Assert.That(server.IsAccepting, Is.False);
        var endPoint = server.LocalEndPoint;
        var client = Task.Run(() =>
        {
            using var s = Connect(endPoint); // the kernel completes the handshake from the backlog
            SendText(s, "queued");
            s.Shutdown(SocketShutdown.Send);
            return Encoding.ASCII.GetString(ReadToEnd(s));
        });
        Green.Sleep(300);
        Assert.That(handled, Is.EqualTo(0), "nothing is accepted while not accepting");
        Assert.That(client.IsCompleted, Is.False);
        server.StartAccepting();
        Assert.That(server.IsAccepting, Is.True);
        Assert.That(Green.Wait(client, TimeSpan.FromSeconds(15)), Is.EqualTo("queued"));
        Assert.That(handled, Is.EqualTo(1));
    }

    [Test]
    public void AHandlerExceptionIsLoggedAndClosesOnlyThatConnection()
    {
        using var server = new StreamServer(AnyLoopbackPort, (socket, _) =>
        {
            using var stream = new GreenNetworkStream(socket);
            var buffer = new byte[64];
            int n;
            while ((n = stream.Read(buffer)) > 0)
            {
                if (buffer.AsSpan(0, n).IndexOf("boom"u8) >= 0) throw new InvalidDataException("the client said boom");
                stream.Write(buffer, 0, n);
            }
        });
        server.Start();
        var endPoint = server.LocalEndPoint;
        var (failed, survived) = Client(() =>
        {
            using var good = Connect(endPoint);
            using var bad = Connect(endPoint);
            SendText(good, "a");
            var one = new byte[1];
            good.Receive(one);
            SendText(bad, "boom");
            var badOutput = ReadToEnd(bad);
            SendText(good, "b");
            good.Receive(one);
            return (badOutput.Length, (char)one[0]);
        });
        Assert.That(failed, Is.EqualTo(0), "the failing connection was closed");
        Assert.That(survived, Is.EqualTo('b'), "the other connection still echoes");
        var entry = Logs.Entries.Single(e => e.EventId.Id == 202);
        Assert.That(entry.Category, Is.EqualTo("GreenRuntime.Servers"));
        Assert.That(entry.Exception, Is.InstanceOf<InvalidDataException>());
        Assert.That(Logs.Entries.Any(e => e.EventId.Id == 1), Is.False, "the handler's greenlet itself did not fail");
    }

    [TestCase(false)]
    [TestCase(true)]
    public void AFullServerStopsAcceptingUntilAHandlerEnds(bool withPool)
    {
        int running = 0, peak = 0, served = 0;
        var pool = new GreenPool(2);
        Action<Socket, EndPoint> handler = (socket, _) =>
        {
            running++;
            peak = Math.Max(peak, running);
            try
            {
                using var stream = new GreenNetworkStream(socket);
                var b = new byte[1];
                stream.ReadExactly(b); // held until the client sends
                stream.Write(b);
                served++;
            }
            finally
            {
                running--;
            }
        };
        using var server = withPool ? new StreamServer(AnyLoopbackPort, handler, pool) : new StreamServer(AnyLoopbackPort, handler, maxConnections: 2);
        server.Start();
        Assert.That(server.MaxConnections, Is.EqualTo(2));
        var endPoint = server.LocalEndPoint;
        var sockets = Client(() => Enumerable.Range(0, 3).Select(_ => Connect(endPoint)).ToList());
        try
        {
            WaitUntil(() => running == 2, "two handlers run");
            Green.Sleep(200);
            Assert.That(running, Is.EqualTo(2), "the third client waits in the backlog instead of failing");
            Assert.That(server.ConnectionCount, Is.EqualTo(2));
            if (withPool) Assert.That(pool.Count, Is.EqualTo(2), "the connections are the pool's members");
            Client(() => { foreach (var s in sockets) SendText(s, "k"); });
            var replies = Client(() => sockets.Select(s => { var b = new byte[1]; return s.Receive(b) == 1 ? (char)b[0] : '?'; }).ToList());
            Assert.That(replies, Is.EqualTo(new[] { 'k', 'k', 'k' }), "the third client is served once a slot is free");
            Assert.That(peak, Is.EqualTo(2));
            Assert.That(served, Is.EqualTo(3));
        }
        finally
        {
            foreach (var s in sockets) s.Dispose();
        }
    }

    [Test]
    public void ServeForeverReturnsWhenAnotherGreenletStopsTheServer()
    {
        var server = new StreamServer(AnyLoopbackPort, Echo);
        var stopper = Green.SpawnLater(TimeSpan.FromMilliseconds(100), () => server.Stop());
        server.ServeForever();
        Assert.That(stopper.Join(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(server.IsAccepting, Is.False);
        Assert.That(() => server.StartAccepting(), Throws.InvalidOperationException.With.Message.Contains("stopped"));
    }

    [Test]
    public void MisuseIsRefusedWithAMessage()
    {
        Assert.That(() => new StreamServer(AnyLoopbackPort, Echo, maxConnections: -1), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new StreamServer(AnyLoopbackPort, Echo, backlog: 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
        var server = new StreamServer(AnyLoopbackPort, Echo);
        Assert.That(() => server.StopAccepting(), Throws.InvalidOperationException.With.Message.Contains("Start()"));
        server.Start();
        Assert.That(() => server.Start(), Throws.InvalidOperationException.With.Message.Contains("already started"));
        server.Stop();
    }
}
