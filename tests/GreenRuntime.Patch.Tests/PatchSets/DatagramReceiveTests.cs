extern alias PatchAssembly;

using System.Net;
using System.Net.Sockets;
using Originals = PatchAssembly::GreenRuntime.Cooperative.PatchedSocket;

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

    /// <summary>A greenlet's ReceiveFrom used to make the socket non-blocking for its one system call, so a plain thread's
    /// blocking receive on the same socket that started in that instant (unpatched: the original) failed with WouldBlock,
    /// and the socket's Blocking read false meanwhile, which threads alone never see. Now it is a recvfrom with
    /// MSG_DONTWAIT and the socket's mode never changes.</summary>
    [Test]
    public void AThreadSharingTheSocketWithGreenletsReceivingFromNeverSeesItNonBlocking()
    {
        using var shared = BoundUdp();
        using var sender = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        shared.ReceiveTimeout = 1000; // ends the readers once the feeder has stopped
        const int Count = 20_000;
        int received = 0, wouldBlock = 0, sawNonBlocking = 0;
        bool sending = true;
        var reader = new Thread(() =>
        {
            var buffer = new byte[16];
            EndPoint from = new IPEndPoint(IPAddress.Any, 0);
            while (true)
            {
                try
                {
                    Originals.ReceiveFromArray.Call(shared, buffer, 0, buffer.Length, SocketFlags.None, ref from);
                    Interlocked.Increment(ref received);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    Interlocked.Increment(ref wouldBlock);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
                {
                    if (!Volatile.Read(ref sending)) return;
                }
            }
        });
        var watcher = new Thread(() =>
        {
            while (Volatile.Read(ref sending))
            {
                if (!shared.Blocking) Interlocked.Increment(ref sawNonBlocking);
            }
        });
        void Read(Func<byte[], int> receive)
        {
            var buffer = new byte[16];
            while (true)
            {
                try
                {
                    receive(buffer);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
                {
                    if (!Volatile.Read(ref sending)) return;
                    continue;
                }
                Interlocked.Increment(ref received);
            }
        }
        var greenlets = new[]
        {
            Green.Spawn(() => Read(buffer =>
            {
                EndPoint from = new IPEndPoint(IPAddress.Any, 0);
                return shared.ReceiveFrom(buffer, ref from);
            })),
            Green.Spawn(() => Read(buffer => shared.ReceiveFrom(buffer, SocketFlags.None, new SocketAddress(AddressFamily.InterNetwork)))),
        };
        var feeder = new Thread(() =>
        {
            for (int i = 0; i < Count; i++)
            {
                sender.SendTo("datagram"u8, shared.LocalEndPoint!);
                if (i % 4 == 0) Thread.Yield();
            }
            Volatile.Write(ref sending, false);
        });
        reader.Start();
        watcher.Start();
        feeder.Start();
        Assert.That(Green.JoinAll(greenlets, timeout: TimeSpan.FromSeconds(120)), Has.Count.EqualTo(2), "every greenlet ended");
        GreenRuntime.LowLevel.Parking.PollUntil(() => !reader.IsAlive && !feeder.IsAlive && !watcher.IsAlive, null);
        Assert.That(wouldBlock, Is.Zero, "a blocking socket's receive on a thread never reports WouldBlock");
        Assert.That(sawNonBlocking, Is.Zero, "the socket stayed blocking for everyone else");
        Assert.That(received, Is.GreaterThan(Count / 2), "the datagrams reached the readers");
    }

    /// <summary>Sockets that receive from a sender, the sender, and the endpoint a receive starts from.</summary>
    private static readonly Dictionary<string, Func<(Socket Receiver, Socket Sender, EndPoint Target, EndPoint From, IDisposable? Cleanup)>> s_senders = new()
    {
        ["IPv4"] = () =>
        {
            var receiver = BoundUdp();
            var sender = BoundUdp();
            return (receiver, sender, receiver.LocalEndPoint!, new IPEndPoint(IPAddress.Any, 0), null);
        },
        ["IPv6"] = () =>
        {
            var receiver = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
            receiver.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            var sender = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp);
            sender.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            return (receiver, sender, receiver.LocalEndPoint!, new IPEndPoint(IPAddress.IPv6Any, 0), null);
        },
        ["dual mode, an IPv4 sender, an IPv4 endpoint"] = () => DualMode(new IPEndPoint(IPAddress.Any, 0)),
        ["dual mode, an IPv4 sender, an IPv6 endpoint"] = () => DualMode(new IPEndPoint(IPAddress.IPv6Any, 0)),
        ["Unix datagram, a named sender"] = () => Unix(named: true),
        ["Unix datagram, an unnamed sender"] = () => Unix(named: false),
    };

    private static (Socket, Socket, EndPoint, EndPoint, IDisposable?) DualMode(EndPoint from)
    {
        var receiver = new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { DualMode = true };
        receiver.Bind(new IPEndPoint(IPAddress.IPv6Any, 0));
        var sender = BoundUdp();
        return (receiver, sender, new IPEndPoint(IPAddress.Loopback, ((IPEndPoint)receiver.LocalEndPoint!).Port), from, null);
    }

    private static (Socket, Socket, EndPoint, EndPoint, IDisposable?) Unix(bool named)
    {
        string path = Path.Combine(Path.GetTempPath(), "gr-from-" + Guid.NewGuid().ToString("N")[..8]);
        var receiver = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        receiver.Bind(new UnixDomainSocketEndPoint(path));
        var sender = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        if (named) sender.Bind(new UnixDomainSocketEndPoint(path + "s"));
        return (receiver, sender, new UnixDomainSocketEndPoint(path), new UnixDomainSocketEndPoint(path + "x"), new Cleanup(path));
    }

    private sealed class Cleanup(string path) : IDisposable
    {
        public void Dispose()
        {
            File.Delete(path);
            File.Delete(path + "s");
        }
    }

    public static IEnumerable<string> SenderCases() => s_senders.Keys;

    /// <summary>What the three ReceiveFrom overloads report for two datagrams (one cut short by a small buffer).</summary>
    private static string ReceiveFromAll(string name)
    {
        var (receiver, sender, target, from, cleanup) = s_senders[name]();
        using (cleanup)
        using (receiver)
        using (sender)
        {
            var lines = new List<string>();
            sender.SendTo("hello, world"u8, target);
            sender.SendTo("second"u8, target);
            sender.SendTo("third"u8, target);
            var buffer = new byte[32];
            EndPoint remote = from;
            int n = receiver.ReceiveFrom(buffer, 0, 5, SocketFlags.None, ref remote);
            lines.Add($"array: {n} {Convert.ToHexString(buffer, 0, n)} {remote.GetType().Name} {remote} same={ReferenceEquals(remote, from)}");
            remote = from;
            n = receiver.ReceiveFrom(buffer.AsSpan(), SocketFlags.None, ref remote);
            lines.Add($"span: {n} {Convert.ToHexString(buffer, 0, n)} {remote.GetType().Name} {remote} same={ReferenceEquals(remote, from)}");
            var address = new SocketAddress(receiver.AddressFamily);
            n = receiver.ReceiveFrom(buffer.AsSpan(), SocketFlags.None, address);
            EndPoint template = receiver.AddressFamily == AddressFamily.Unix ? from : new IPEndPoint(IPAddress.IPv6Any, 0);
            if (receiver.AddressFamily == AddressFamily.InterNetwork) template = new IPEndPoint(IPAddress.Any, 0);
            lines.Add($"address: {n} {Convert.ToHexString(buffer, 0, n)} {address.Family} {address.Size} {Created(template, address)}");
            return string.Join("\n", lines).Replace(Path.GetTempPath(), "<tmp>/");
        }
    }

    private static string Created(EndPoint template, SocketAddress address)
    {
        try
        {
            return template.Create(address).ToString() ?? "null";
        }
        catch (Exception e)
        {
            return e.GetType().Name;
        }
    }

    [TestCaseSource(nameof(SenderCases))]
    public void ReceiveFromReportsTheDatagramAndTheSenderAsOnAThread(string name)
    {
        string? onThread = null;
        var thread = new Thread(() => onThread = ReceiveFromAll(name));
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True);
        var onGreenlet = Green.Spawn(() => ReceiveFromAll(name)).Get(TimeSpan.FromSeconds(10));
        // The ports and paths differ between the two runs: compare with them taken out.
        Assert.That(Normalise(onGreenlet), Is.EqualTo(Normalise(onThread!)));
        TestContext.Out.WriteLine(onGreenlet);
    }

    private static string Normalise(string text) =>
        System.Text.RegularExpressions.Regex.Replace(text, @"(:\d+\b)|(gr-from-[0-9a-f]{8})", m => m.Groups[1].Success ? ":<port>" : "<path>");

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
