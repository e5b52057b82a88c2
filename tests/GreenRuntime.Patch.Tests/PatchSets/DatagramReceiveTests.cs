using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Datagram receives (ReceiveFrom, ReceiveMessageFrom, Receive on a datagram socket) on a greenlet: the socket's own call,
/// never left to block the hub when another reader took the datagram first, woken by a Shutdown as a thread is, and
/// throwing the original's exceptions for bad arguments or state at once.
/// </summary>
public class DatagramReceiveTests : PatchedHubTest
{
    private static Socket BoundUdp()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    [Test]
    public void ReadersSharingOneSocketNeverHoldTheHub()
    {
        const int datagrams = 60;
        using var socket = BoundUdp();
        int received = 0, ticks = 0, stalls = 0;
        bool stop = false;
        void Read(Func<EndPoint, int> receive)
        {
            while (!Volatile.Read(ref stop))
            {
                try
                {
                    receive(new IPEndPoint(IPAddress.Any, 0));
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    return;
                }
                Interlocked.Increment(ref received);
            }
        }
        var buffer = new byte[16];
        var readers = new List<Greenlet>
        {
            Green.Spawn(() => Read(from => socket.ReceiveFrom(new byte[16], ref from))),
            Green.Spawn(() => Read(from =>
            {
                var flags = SocketFlags.None;
                return socket.ReceiveMessageFrom(new byte[16], 0, 16, ref flags, ref from, out _);
            })),
        };
        var threads = Enumerable.Range(0, 2).Select(_ => new Thread(() => Read(from => socket.ReceiveFrom(new byte[16], ref from)))).ToList();
        threads.ForEach(t => t.Start());
        var ticker = Green.Spawn(() =>
        {
            while (!Volatile.Read(ref stop))
            {
                Green.Sleep(2);
                Interlocked.Increment(ref ticks);
            }
        });
        // A plain thread sends each datagram once the hub's ticker has moved on since the last one. A greenlet left blocking
        // in the original after another reader took its datagram holds the hub until the next datagram: the ticker stops,
        // and the sender waits (2 s) for nothing.
        var sender = new Thread(() =>
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            for (int i = 0; i < datagrams; i++)
            {
                client.SendTo(new byte[] { (byte)i }, socket.LocalEndPoint!);
                int seen = Volatile.Read(ref ticks);
                if (!SpinWait.SpinUntil(() => Volatile.Read(ref ticks) >= seen + 2, TimeSpan.FromSeconds(2))) stalls++;
            }
            SpinWait.SpinUntil(() => Volatile.Read(ref received) >= datagrams, TimeSpan.FromSeconds(5));
            Volatile.Write(ref stop, true);
            socket.Close(); // ends the readers, on threads and greenlets
        });
        sender.Start();
        Assert.That(Green.JoinAll([.. readers, ticker], timeout: TimeSpan.FromSeconds(60)), Has.Count.EqualTo(3), "every greenlet ended");
        Assert.That(sender.Join(TimeSpan.FromSeconds(10)), Is.True);
        threads.ForEach(t => Assert.That(t.Join(TimeSpan.FromSeconds(10)), Is.True));
        Assert.That(stalls, Is.Zero, "the hub's ticker went on after every datagram");
        Assert.That(received, Is.EqualTo(datagrams), "no datagram was lost");
    }

    [Test]
    public void TheSenderAndTheResultsAreTheOriginals()
    {
        using var socket = BoundUdp();
        using var client = BoundUdp();
        var late = new Thread(() =>
        {
            Thread.Sleep(100);
            client.SendTo(new byte[] { 1, 2, 3, 4, 5, 6 }, socket.LocalEndPoint!);
        });
        socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.PacketInformation, true);
        var receiver = Green.Spawn(() =>
        {
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            var flags = SocketFlags.None;
            int n = socket.ReceiveMessageFrom(new byte[4], 0, 4, ref flags, ref from, out var info);
            return (n, flags, from, info.Address);
        });
        late.Start();
        var (count, truncated, sender, local) = receiver.Get(TimeSpan.FromSeconds(10));
        late.Join();
        Assert.That(count, Is.EqualTo(4));
        Assert.That(truncated & SocketFlags.Truncated, Is.EqualTo(SocketFlags.Truncated), "the original's truncation flag");
        Assert.That(sender, Is.EqualTo(client.LocalEndPoint));
        Assert.That(local, Is.EqualTo(IPAddress.Loopback), "the original's packet information");

        socket.ReceiveTimeout = 100;
        var timedOut = Green.Spawn(() =>
        {
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            try
            {
                socket.ReceiveFrom(new byte[4], ref from);
                return SocketError.Success;
            }
            catch (SocketException e)
            {
                return e.SocketErrorCode;
            }
        });
        Assert.That(timedOut.Get(TimeSpan.FromSeconds(10)), Is.EqualTo(SocketError.TimedOut), "the socket's ReceiveTimeout");
    }

    /// <summary>A connected datagram socket and what a receive on it is.</summary>
    private static readonly Dictionary<string, Func<(Socket Socket, Func<int> Receive, IDisposable? Peer)>> s_shutdownCases = new()
    {
        ["UDP Receive"] = () =>
        {
            var socket = BoundUdp();
            socket.Connect(new IPEndPoint(IPAddress.Loopback, 9));
            return (socket, () => socket.Receive(new byte[8]), null);
        },
        ["UDP ReceiveFrom"] = () =>
        {
            var socket = BoundUdp();
            socket.Connect(new IPEndPoint(IPAddress.Loopback, 9));
            return (socket, () =>
            {
                EndPoint from = new IPEndPoint(IPAddress.Any, 0);
                return socket.ReceiveFrom(new byte[8], ref from);
            }, null);
        },
        ["Unix datagram Receive"] = () =>
        {
            string path = Path.Combine(Path.GetTempPath(), "gr-dgram-" + Guid.NewGuid().ToString("N")[..8]);
            var peer = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            peer.Bind(new UnixDomainSocketEndPoint(path + "b"));
            var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.Bind(new UnixDomainSocketEndPoint(path));
            socket.Connect(new UnixDomainSocketEndPoint(path + "b"));
            return (socket, () => socket.Receive(new byte[8]), peer);
        },
    };

    public static IEnumerable<TestCaseData> ShutdownCases() =>
        from name in s_shutdownCases.Keys
        from how in new[] { SocketShutdown.Receive, SocketShutdown.Both }
        select new TestCaseData(name, how);

    private static string Outcome(Func<int> receive)
    {
        try
        {
            return $"returned {receive()}";
        }
        catch (SocketException e)
        {
            return $"SocketException: {e.SocketErrorCode}";
        }
    }

    [TestCaseSource(nameof(ShutdownCases))]
    public void ShutdownWakesABlockedReceiveAsOnAThread(string name, SocketShutdown how)
    {
        // All of it on the thread: set up on the hub, the socket's Connect would be the patched one (.NET's asynchronous
        // connect for a datagram socket), after which .NET emulates a thread's blocking receive on its own engine.
        string? onThread = null;
        var thread = new Thread(() =>
        {
            var (socket, receive, peer) = s_shutdownCases[name]();
            using (peer)
            using (socket)
            {
                socket.ReceiveTimeout = 5000;
                string? outcome = null;
                var reader = new Thread(() => outcome = Outcome(receive));
                reader.Start();
                Thread.Sleep(100);
                socket.Shutdown(how);
                onThread = reader.Join(TimeSpan.FromSeconds(3)) ? outcome : "still blocked";
            }
        });
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(onThread, Does.StartWith("returned"), "the thread's receive ended at the Shutdown");
        var (socket, receive, peer) = s_shutdownCases[name]();
        using (peer)
        using (socket)
        {
            socket.ReceiveTimeout = 5000; // without the fix: TimedOut after 5 s
            var waiter = Green.Spawn(() => Outcome(receive));
            Green.Sleep(50);
            Assert.That(waiter.WaitReason, Is.EqualTo(WaitReason.Socket), "the receive is parked");
            socket.Shutdown(how);
            Assert.That(waiter.Join(TimeSpan.FromSeconds(3)), Is.True, "the greenlet's receive ended at the Shutdown");
            Assert.That(waiter.Get(), Is.EqualTo(onThread));

            // Shut down before the call: a thread's receive returns at once too.
            var again = Green.Spawn(() => Outcome(receive));
            Assert.That(again.Join(TimeSpan.FromSeconds(3)), Is.True);
            Assert.That(again.Get(), Is.EqualTo(onThread));
        }
    }

    /// <summary>Receives the original rejects before any I/O (no data will ever come to any of them).</summary>
    private static readonly Dictionary<string, Action> s_rejected = new()
    {
        ["UdpClient.Receive, never bound"] = () =>
        {
            using var client = new UdpClient();
            IPEndPoint? from = null;
            client.Receive(ref from);
        },
        ["ReceiveFrom, never bound"] = () =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            socket.ReceiveFrom(new byte[8].AsSpan(), SocketFlags.None, ref from);
        },
        ["ReceiveFrom, an IPv6 endpoint on an IPv4 socket"] = () =>
        {
            using var socket = BoundUdp();
            EndPoint from = new IPEndPoint(IPAddress.IPv6Any, 0);
            socket.ReceiveFrom(new byte[8], ref from);
        },
        ["ReceiveFrom, offset + size beyond the array"] = () =>
        {
            using var socket = BoundUdp();
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            socket.ReceiveFrom(new byte[8], 4, 8, SocketFlags.None, ref from);
        },
        ["ReceiveMessageFrom, offset + size beyond the array"] = () =>
        {
            using var socket = BoundUdp();
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            var flags = SocketFlags.None;
            socket.ReceiveMessageFrom(new byte[8], 4, 8, ref flags, ref from, out _);
        },
        ["ReceiveMessageFrom, an IPv6 endpoint on an IPv4 socket"] = () =>
        {
            using var socket = BoundUdp();
            EndPoint from = new IPEndPoint(IPAddress.IPv6Any, 0);
            var flags = SocketFlags.None;
            socket.ReceiveMessageFrom(new byte[8].AsSpan(), ref flags, ref from, out _);
        },
        ["Receive, offset + size beyond the array"] = () =>
        {
            using var socket = BoundUdp();
            socket.Receive(new byte[8], 4, 8, SocketFlags.None);
        },
    };

    public static IEnumerable<string> RejectedCases() => s_rejected.Keys;

    private static string Thrown(Action call)
    {
        try
        {
            call();
            return "returned";
        }
        catch (Exception e)
        {
            return e is SocketException se ? $"SocketException: {se.SocketErrorCode}" : $"{e.GetType().Name}: {e.Message}";
        }
    }

    [TestCaseSource(nameof(RejectedCases))]
    public void ArgumentAndStateErrorsAreTheOriginalsAtOnce(string name)
    {
        string? onThread = null;
        var thread = new Thread(() => onThread = Thrown(s_rejected[name]));
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(5)), Is.True, "the thread's call failed at once");
        Assert.That(onThread, Does.Not.StartWith("returned"));
        // Without the fix the greenlet waited for data that never came: the timeout fires instead of the original's exception.
        var onGreenlet = Green.Spawn(() => Thrown(() => Green.WithTimeout(TimeSpan.FromSeconds(2), s_rejected[name])));
        Assert.That(onGreenlet.Get(TimeSpan.FromSeconds(10)), Is.EqualTo(onThread));
    }
}
