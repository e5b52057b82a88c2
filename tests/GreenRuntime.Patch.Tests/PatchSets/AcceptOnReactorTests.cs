using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// The patched <see cref="Socket.Accept"/> (and so <see cref="TcpListener.AcceptTcpClient"/>) on a greenlet accepts on
/// the hub's reactor. Through .NET's AcceptAsync, the wake needed a free thread-pool thread (legacy code keeps the pool
/// busy: 800 ms per accept), and a kill or timeout that came after the kernel handed the connection over closed it,
/// resetting a real client.
/// </summary>
public class AcceptOnReactorTests : PatchedHubTest
{
    [Test]
    public void AnAcceptWakesWithoutAThreadPoolThread()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var endpoint = (IPEndPoint)listener.LocalEndpoint;
        using var held = new HeldThreadPool();
        var accepted = Green.Spawn(() =>
        {
            using var client = listener.AcceptTcpClient();
            return client.Client.Blocking;
        });
        Green.Sleep(20);
        using var connecting = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        connecting.Connect(endpoint);
        var watch = Stopwatch.StartNew();
        // Generous: at once on the reactor; only when the pool grows (seconds) through AcceptAsync.
        Assert.That(accepted.Join(TimeSpan.FromSeconds(3)), Is.True, "the accept completed while every pool thread was busy");
        Assert.That(accepted.Value, Is.True, "the accepted socket is blocking, as the original's");
        TestContext.Out.WriteLine($"accepted {watch.ElapsedMilliseconds} ms after the connect returned, with the pool held");
        Assert.That(listener.Server.Blocking, Is.True, "the listener is left as it was");
    }

    [Test]
    public void AcceptsUnderShortTimeoutsLoseNoClient()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var endpoint = (IPEndPoint)listener.LocalEndpoint;
        const int clients = 30;
        var served = new List<int>();
        var server = Green.Spawn(() =>
        {
            while (served.Count < clients)
            {
                var client = Green.WithTimeout(TimeSpan.FromMilliseconds(5), () => listener.AcceptTcpClient(), null);
                if (client is null) continue;
                using (client)
                {
                    var one = new byte[1];
                    client.GetStream().ReadExactly(one);
                    served.Add(one[0]);
                    client.GetStream().Write(one);
                }
            }
        });
        var failures = new List<string>();
        var callers = new Thread(() =>
        {
            for (int i = 0; i < clients; i++)
            {
                try
                {
                    using var c = new TcpClient();
                    c.Connect(endpoint);
                    c.ReceiveTimeout = 5000;
                    c.GetStream().Write([(byte)i]);
                    var echo = new byte[1];
                    c.GetStream().ReadExactly(echo);
                }
                catch (Exception e)
                {
                    failures.Add($"client {i}: {e.Message}");
                }
                Thread.Sleep(7); // across the accepts' 5 ms timeouts
            }
        });
        callers.Start();
        while (callers.IsAlive) Green.Sleep(10);
        Assert.That(failures, Is.Empty, "a timed-out accept closed a connection the kernel had handed over");
        Assert.That(server.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(served, Is.EqualTo(Enumerable.Range(0, clients)));
    }

    [Test]
    public void GreenletsOfTwoHubsAcceptingOnOneListenerLeaveItBlockingAndLoseNoClient()
    {
        // Each accept switches the listener to non-blocking for one call and back: two hubs' threads doing that at once
        // restored each other's switch, leaving an accept blocking its hub or the listener non-blocking for good.
        const int clients = 400;
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(clients);
        int accepted = 0;
        using (var group = new HubGroup(2))
        {
            var acceptors = Enumerable.Range(0, 2).Select(h => group.SpawnOn(h, () =>
            {
                while (Volatile.Read(ref accepted) < clients)
                {
                    using var s = Green.WithTimeout<Socket?>(TimeSpan.FromMilliseconds(200), () => listener.Accept(), null);
                    if (s != null) Interlocked.Increment(ref accepted);
                }
            })).ToList();
            var sockets = new List<Socket>();
            for (int i = 0; i < clients; i++)
            {
                var c = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                c.Connect(listener.LocalEndPoint!);
                sockets.Add(c);
            }
            foreach (var a in acceptors) Assert.That(a.Join(TimeSpan.FromSeconds(30)), Is.True, "both acceptors ended");
            foreach (var c in sockets) c.Dispose();
        }
        Assert.That(accepted, Is.EqualTo(clients));
        Assert.That(listener.Blocking, Is.True, "the listener is blocking again, as its owner left it");
    }

    [Test]
    public void ClosingTheListenerEndsAWaitingAcceptAsOnAThread()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var accepting = Green.Spawn(() => listener.AcceptTcpClient());
        Green.Sleep(20);
        listener.Stop();
        Assert.That(accepting.Join(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(accepting.Exception, Is.InstanceOf<SocketException>());
        Assert.That(((SocketException)accepting.Exception!).SocketErrorCode, Is.EqualTo(SocketError.Interrupted),
            "legacy servers end their accept loop on Interrupted");
    }
}
