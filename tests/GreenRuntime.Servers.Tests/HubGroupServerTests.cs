using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Servers.Tests;

/// <summary>
/// Servers on a HubGroup: created, started and stopped from the test thread (which has no hub); clients are plain
/// blocking sockets on thread-pool threads.
/// </summary>
public class HubGroupServerTests
{
    private static readonly IPEndPoint AnyLoopbackPort = new(IPAddress.Loopback, 0);
    private HubGroup _group = null!;

    [SetUp]
    public void CreateGroup() => _group = new HubGroup(2);

    [TearDown]
    public void DisposeGroup() => _group.Dispose();

    private static Socket Connect(EndPoint endPoint)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 15_000, SendTimeout = 15_000 };
        s.Connect(endPoint);
        return s;
    }

    private static string ReceiveLine(Socket s)
    {
        var bytes = new List<byte>();
        var one = new byte[1];
        while (s.Receive(one) == 1 && one[0] != '\n') bytes.Add(one[0]);
        return Encoding.ASCII.GetString(bytes.ToArray());
    }

    /// <summary>Runs <paramref name="count"/> blocking clients, each on a thread of its own (not the thread pool, which
    /// .NET's socket completions need).</summary>
    private static Task<T[]> Clients<T>(int count, Func<T> client) =>
        Task.WhenAll(Enumerable.Range(0, count).Select(_ =>
        {
            var done = new TaskCompletionSource<T>();
            new Thread(() =>
            {
                try
                {
                    done.SetResult(client());
                }
                catch (Exception e)
                {
                    done.SetException(e);
                }
            }) { IsBackground = true }.Start();
            return done.Task;
        }));

    /// <summary>A handler that answers every line with the index of the hub running it.</summary>
    private Action<Socket, EndPoint> HubReporter(ConcurrentBag<string>? violations = null) => (socket, remote) =>
    {
        var hub = Parking.CurrentHub!;
        string index = IndexOf(hub).ToString();
        var buffer = new byte[256];
        while (CooperativeSocket.Receive(socket, buffer, SocketFlags.None, null, out _) > 0)
        {
            if (Parking.CurrentHub != hub) violations?.Add($"a connection of hub {index} ran on {IndexOf(Parking.CurrentHub!)}");
            CooperativeSocket.Send(socket, Encoding.ASCII.GetBytes(index + "\n"), SocketFlags.None, null, out _);
        }
    };

    private int IndexOf(Hub hub) => _group.Hubs.ToList().IndexOf(hub);

    [Test]
    public void ConnectionsLandOnEveryHubAndEachIsServedWhollyOnItsHub()
    {
        var violations = new ConcurrentBag<string>();
        using var server = new StreamServer(AnyLoopbackPort, HubReporter(violations), hubs: _group);
        server.Start();
        Assert.That(((IPEndPoint)server.LocalEndPoint).Port, Is.Not.Zero, "port 0 resolves to the port the first listener got");

        // 64 connections, each asking 5 times which hub serves it: the answers of one connection never change.
        var all = Clients(64, () =>
        {
            using var s = Connect(server.LocalEndPoint);
            var seen = new HashSet<string>();
            for (int i = 0; i < 5; i++)
            {
                s.Send("?"u8);
                seen.Add(ReceiveLine(s));
            }
            return seen;
        });
        if (!all.Wait(TimeSpan.FromSeconds(60)))
            Assert.Fail($"The clients did not finish; accepted per hub {string.Join(", ", server.AcceptedPerHub)}, live per hub {string.Join(", ", server.ConnectionCountPerHub)}.");
        var perConnection = all.Result;

        Assert.That(perConnection.All(seen => seen.Count == 1), Is.True, "every exchange of a connection is served by the hub that accepted it");
        var hubsUsed = perConnection.Select(seen => seen.Single()).Distinct().ToList();
        Assert.That(hubsUsed, Has.Count.EqualTo(2), "the kernel spreads 64 connections over both listeners (all on one: probability 2^-63)");
        Assert.That(server.AcceptedPerHub, Has.All.GreaterThan(0));
        Assert.That(server.AcceptedPerHub.Sum(), Is.EqualTo(64));
        Assert.That(violations, Is.Empty);
    }

    [Test]
    public void AnAsyncServerKeepsEachConnectionOnItsHubAcrossAwaits()
    {
        var violations = new ConcurrentBag<string>();
        using var server = StreamServer.ForAsync(AnyLoopbackPort, async (socket, remote) =>
        {
            var hub = Parking.CurrentHub!;
            var buffer = new byte[256];
            while (await socket.ReceiveAsync(buffer) > 0)
            {
                await Green.SleepAsync(TimeSpan.FromMilliseconds(1));
                if (Parking.CurrentHub != hub) violations.Add("an async connection resumed on another hub");
                await socket.SendAsync(Encoding.ASCII.GetBytes(IndexOf(hub) + "\n"));
            }
        }, hubs: _group);
        server.Start();
        var answers = Clients(32, () =>
        {
            using var s = Connect(server.LocalEndPoint);
            var seen = new HashSet<string>();
            for (int i = 0; i < 3; i++)
            {
                s.Send("?"u8);
                seen.Add(ReceiveLine(s));
            }
            return seen;
        }).Result;
        Assert.That(answers.All(seen => seen.Count == 1), Is.True);
        Assert.That(answers.Select(seen => seen.Single()).Distinct().Count(), Is.EqualTo(2));
        Assert.That(violations, Is.Empty);
    }

    [Test]
    public void StopFromAnotherThreadLetsEveryHubFinishItsHandlersAndEndsServeForever()
    {
        int finished = 0;
        var server = new StreamServer(AnyLoopbackPort, (socket, remote) =>
        {
            var buffer = new byte[16];
            CooperativeSocket.Receive(socket, buffer, SocketFlags.None, null, out _);
            Green.Sleep(300); // in progress when Stop begins
            Interlocked.Increment(ref finished);
            CooperativeSocket.Send(socket, "done\n"u8, SocketFlags.None, null, out _);
        }, hubs: _group);
        server.Start();
        var serving = Task.Run(server.ServeForever);

        var clients = Enumerable.Range(0, 24).Select(_ => Connect(server.LocalEndPoint)).ToList();
        foreach (var c in clients) c.Send("go"u8);
        Assert.That(SpinWait.SpinUntil(() => server.ConnectionCount == 24, TimeSpan.FromSeconds(30)), Is.True, "every client is being served");
        Assert.That(server.ConnectionCountPerHub, Has.All.GreaterThan(0), "both hubs have handlers in progress");

        server.Stop(TimeSpan.FromSeconds(10));

        Assert.That(finished, Is.EqualTo(24), "Stop returns after the handlers of both hubs finished");
        Assert.That(server.ConnectionCount, Is.Zero);
        foreach (var c in clients)
        {
            Assert.That(ReceiveLine(c), Is.EqualTo("done"));
            c.Dispose();
        }
        Assert.That(serving.Wait(TimeSpan.FromSeconds(10)), Is.True, "ServeForever on another thread returned");
        Assert.That(() => Connect(server.LocalEndPoint), Throws.InstanceOf<SocketException>(), "every listener is closed");
        server.Stop(); // idempotent
    }

    [Test]
    public void StopKillsHandlersOfEveryHubThatOutliveTheTimeout()
    {
        var server = new StreamServer(AnyLoopbackPort, (socket, remote) => Green.Sleep(TimeSpan.FromMinutes(5)), hubs: _group);
        server.Start();
        var clients = Enumerable.Range(0, 16).Select(_ => Connect(server.LocalEndPoint)).ToList();
        Assert.That(SpinWait.SpinUntil(() => server.ConnectionCount == 16, TimeSpan.FromSeconds(30)), Is.True, "every client is being served");
        server.Stop(TimeSpan.FromMilliseconds(100));
        Assert.That(server.ConnectionCount, Is.Zero);
        foreach (var c in clients)
        {
            Assert.That(c.Receive(new byte[1]), Is.Zero, "the killed handler's socket was closed");
            c.Dispose();
        }
    }

    [Test]
    public void MaxConnectionsIsTheTotalAcrossHubs()
    {
        var release = new ManualResetEventSlim();
        int running = 0, most = 0, served = 0;
        using var server = new StreamServer(AnyLoopbackPort, (socket, remote) =>
        {
            int now = Interlocked.Increment(ref running);
            int seen;
            while ((seen = Volatile.Read(ref most)) < now && Interlocked.CompareExchange(ref most, now, seen) != seen) { }
            while (!release.IsSet) Green.Sleep(5);
            Interlocked.Decrement(ref running);
            Interlocked.Increment(ref served);
        }, maxConnections: 3, hubs: _group);
        server.Start();
        Assert.That(server.MaxConnections, Is.EqualTo(3));
        var clients = Enumerable.Range(0, 12).Select(_ => Connect(server.LocalEndPoint)).ToList();
        Assert.That(SpinWait.SpinUntil(() => server.ConnectionCount == 3, TimeSpan.FromSeconds(30)), Is.True, "the first three are being served");
        Thread.Sleep(200); // time for a wrong hub to take a fourth
        Assert.That(server.ConnectionCount, Is.EqualTo(3), "the others wait in the backlogs");
        release.Set();
        Assert.That(SpinWait.SpinUntil(() => Volatile.Read(ref served) == 12, TimeSpan.FromSeconds(20)), Is.True, "every client is served once slots free up");
        Assert.That(most, Is.LessThanOrEqualTo(3));
        foreach (var c in clients) c.Dispose();
    }

    [Test]
    public void StopAcceptingAndStartAcceptingFromAnotherThread()
    {
        using var server = new StreamServer(AnyLoopbackPort, HubReporter(), hubs: _group);
        server.Start();
        Assert.That(server.IsAccepting, Is.True);
        server.StopAccepting();
        Assert.That(server.IsAccepting, Is.False);
        var clients = Enumerable.Range(0, 8).Select(_ => Connect(server.LocalEndPoint)).ToList(); // queued in the backlogs
        Thread.Sleep(100);
        Assert.That(server.ConnectionCount, Is.Zero);
        server.StartAccepting();
        foreach (var c in clients)
        {
            c.Send("?"u8);
            Assert.That(ReceiveLine(c), Is.AnyOf("0", "1"));
            c.Dispose();
        }
    }

    [Test]
    public void HttpServerServesEachKeepAliveConnectionOnOneHub()
    {
        using var server = new HttpServer(AnyLoopbackPort, ctx =>
        {
            Thread.Sleep(0);
            ctx.Response.Write(IndexOf(Parking.CurrentHub!).ToString());
        }, new HttpServerOptions { Hubs = _group });
        server.Start();
        var perConnection = Clients(32, () =>
        {
            using var s = Connect(server.LocalEndPoint);
            var reader = new ResponseReader(s);
            var seen = new HashSet<string>();
            for (int i = 0; i < 4; i++)
            {
                s.Send(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
                seen.Add(reader.Read()!.BodyText);
            }
            return seen;
        }).Result;
        Assert.That(perConnection.All(seen => seen.Count == 1), Is.True, "every request of a keep-alive connection runs on the hub that accepted it");
        Assert.That(perConnection.Select(seen => seen.Single()).Distinct().Count(), Is.EqualTo(2));
        Assert.That(server.MaxConnections, Is.GreaterThan(0));
        server.Stop();
        Assert.That(server.ConnectionCount, Is.Zero, "Stop closed the idle keep-alive connections of both hubs");
    }

    [Test]
    public void AnAddressInUseFailsStartWithASocketExceptionAndLeavesNothingBound()
    {
        using var blocker = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        blocker.Bind(AnyLoopbackPort);
        blocker.Listen();
        var taken = (IPEndPoint)blocker.LocalEndPoint!;
        var server = new StreamServer(taken, HubReporter(), hubs: _group);
        var e = Assert.Throws<SocketException>(server.Start);
        Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.AddressAlreadyInUse));
        Assert.That(server.IsStarted, Is.False);
        Assert.That(() => server.StopAccepting(), Throws.InvalidOperationException.With.Message.Contains("not been started"));
        server.Stop(); // a no-op on a server that never started
    }

    [Test]
    public void ASecondServerOnTheSamePortFailsInsteadOfSharingItsConnections()
    {
        // Both would set SO_REUSEPORT; the second must not join the first one's port.
        var first = new StreamServer(AnyLoopbackPort, HubReporter(), hubs: _group);
        first.Start();
        try
        {
            var second = new StreamServer((IPEndPoint)first.LocalEndPoint, HubReporter(), hubs: _group);
            var e = Assert.Throws<SocketException>(second.Start);
            Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.AddressAlreadyInUse));
            Assert.That(second.IsStarted, Is.False);
            for (int i = 0; i < 8; i++)
            {
                using var client = Connect(first.LocalEndPoint);
                client.Send("?\n"u8);
                Assert.That(ReceiveLine(client), Is.AnyOf("0", "1"), "the first server still answers every connection");
            }
        }
        finally
        {
            first.Stop();
        }
    }

    [Test]
    public void ARefusedReusePortIsReportedAsNotSupportedAndClosesWhatWasMade()
    {
        var original = Listeners.SetReusePort;
        var made = new List<Socket>();
        Listeners.SetReusePort = s =>
        {
            made.Add(s);
            throw new SocketException((int)SocketError.ProtocolOption);
        };
        try
        {
            var server = new StreamServer(AnyLoopbackPort, HubReporter(), hubs: _group);
            var e = Assert.Throws<NotSupportedException>(server.Start);
            Assert.That(e!.Message, Does.Contain("SO_REUSEPORT").And.Contain("one hub"));
            Assert.That(server.IsStarted, Is.False);
            Assert.That(made, Is.Not.Empty);
            Assert.That(() => made[0].Bind(AnyLoopbackPort), Throws.InstanceOf<ObjectDisposedException>(), "the socket it could not configure was closed");
        }
        finally
        {
            Listeners.SetReusePort = original;
        }
    }

    [Test]
    public void APoolCannotLimitAServerOnAGroup()
    {
        Assert.That(() => new HttpServer(AnyLoopbackPort, _ => { }, new HttpServerOptions { Hubs = _group, Pool = new GreenPool(4) }),
            Throws.ArgumentException.With.Message.Contains("MaxConnections"));
    }

    [Test]
    public void ADisposedGroupRefusesToStartAServer()
    {
        _group.Dispose();
        var server = new StreamServer(AnyLoopbackPort, HubReporter(), hubs: _group);
        Assert.That(server.Start, Throws.InstanceOf<ObjectDisposedException>().With.Message.Contains("disposed"));
        Assert.That(server.IsStarted, Is.False);
    }

    [Test]
    public void DisposingTheGroupUnderARunningServerEndsServeForeverAndClosesTheListeners()
    {
        var server = new HttpServer(AnyLoopbackPort, ctx => ctx.Response.Write("hi"), new HttpServerOptions { Hubs = _group });
        var serving = Task.Run(server.ServeForever);
        Assert.That(SpinWait.SpinUntil(() => server.StreamServer.IsStarted, TimeSpan.FromSeconds(30)), Is.True);
        var endPoint = server.LocalEndPoint;
        using (var s = Connect(endPoint))
        {
            s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            Assert.That(new ResponseReader(s).Read()!.BodyText, Is.EqualTo("hi"));
        }
        _group.Dispose();
        Assert.That(serving.Wait(TimeSpan.FromSeconds(20)), Is.True, "ServeForever returned when the group went away");
        Assert.That(() => Connect(endPoint), Throws.InstanceOf<SocketException>(), "the listeners were closed");
        server.Stop(); // nothing left to do, and no exception
    }

    [Test]
    public void DisposingTheGroupUnderAServerThatStoppedAcceptingAlsoEndsServeForever()
    {
        var server = new StreamServer(AnyLoopbackPort, HubReporter(), hubs: _group);
        server.Start();
        server.StopAccepting();
        var serving = Task.Run(server.ServeForever);
        _group.Dispose();
        Assert.That(serving.Wait(TimeSpan.FromSeconds(20)), Is.True, "ServeForever noticed the disposal without an accept loop to report it");
        Assert.That(server.IsStopping, Is.True);
    }

    [Test]
    public void AFullHttpServerOnAGroupMakesRoomForAWaitingClient()
    {
        using var server = new HttpServer(AnyLoopbackPort, ctx => ctx.Response.Write("ok"),
            new HttpServerOptions { Hubs = _group, MaxConnections = 4 });
        server.Start();
        // Four keep-alive connections take every slot, across the hubs; once answered they are idle, and a full server
        // closes idle keep-alive connections (on every hub) so that clients waiting in the backlogs get served.
        var idle = new List<Socket>();
        for (int i = 0; i < 4; i++)
        {
            var s = Connect(server.LocalEndPoint);
            s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            Assert.That(new ResponseReader(s).Read()!.Status, Is.EqualTo(200));
            idle.Add(s);
        }
        var waiting = Clients(6, () =>
        {
            using var s = Connect(server.LocalEndPoint);
            s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            return new ResponseReader(s).Read()!.Status;
        });
        Assert.That(waiting.Wait(TimeSpan.FromSeconds(60)), Is.True, "every waiting client was served");
        Assert.That(waiting.Result, Has.All.EqualTo(200));
        Assert.That(server.StreamServer.AcceptedPerHub.Sum(), Is.EqualTo(10));
        Assert.That(server.ConnectionCount, Is.LessThanOrEqualTo(4));
        foreach (var s in idle) s.Dispose();
    }
}
