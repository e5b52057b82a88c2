using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>Sockets used by the SendTo / SendFile / Disconnect tests, on and off the hub.</summary>
internal static class SendSockets
{
    /// <summary>A Unix datagram receiver: unlike UDP, a sender to it blocks while its queue is full.</summary>
    public static (Socket Receiver, UnixDomainSocketEndPoint Address, string Path) UnixDatagramReceiver()
    {
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"gr-dgram-{Guid.NewGuid():N}.sock");
        var address = new UnixDomainSocketEndPoint(path);
        var receiver = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        receiver.Bind(address);
        return (receiver, address, path);
    }

    public static (Socket Client, Socket Server) TcpPair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var connect = client.ConnectAsync(listener.LocalEndPoint!);
        var server = listener.AcceptAsync();
        Task.WaitAll(connect, server);
        return (client, server.Result);
    }

    public static byte[] Datagram(int i, int size)
    {
        var d = new byte[size];
        BitConverter.TryWriteBytes(d, i);
        for (int k = 4; k < size; k++) d[k] = (byte)(i + k);
        return d;
    }

    /// <summary>Receives exactly <paramref name="count"/> bytes (or up to EOF).</summary>
    public static byte[] ReceiveAll(Socket s, int count)
    {
        var all = new byte[count];
        int at = 0;
        while (at < count)
        {
            int n = s.Receive(all, at, count - at, SocketFlags.None);
            if (n == 0) break;
            at += n;
        }
        return all[..at];
    }

    /// <summary>Every exception (type and socket error) that SendTo, SendFile and Disconnect throw for bad calls.</summary>
    public static List<string> Misuses(string missingFile)
    {
        var seen = new List<string>();
        void Note(Action a)
        {
            try
            {
                a();
                seen.Add("no exception");
            }
            catch (Exception e)
            {
                seen.Add(e is SocketException se ? $"SocketException {se.SocketErrorCode}" : e.GetType().Name);
            }
        }
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var loopback = new IPEndPoint(IPAddress.Loopback, 9);
        Note(() => udp.SendTo(new byte[4], null!));
        Note(() => udp.SendTo(new byte[4], 3, 2, SocketFlags.None, loopback));
        Note(() => udp.SendTo(new byte[70_000], loopback));
        Note(() => udp.SendTo(new byte[4], new IPEndPoint(IPAddress.IPv6Loopback, 9)));
        Note(() => udp.SendTo(new ReadOnlySpan<byte>(new byte[4]), SocketFlags.None, (SocketAddress)null!));
        Note(() => udp.SendFile(missingFile));
        Note(() => udp.Disconnect(false));
        var (client, server) = TcpPair();
        using (server)
        {
            Note(() => client.SendFile(missingFile));
            Note(() => client.Disconnect(true));
            client.Dispose();
            Note(() => client.SendTo(new byte[4], loopback));
            Note(() => client.Disconnect(false));
            Note(() => client.SendFile(null));
        }
        return seen;
    }
}

/// <summary>SendTo, SendFile and Disconnect on greenlets: they park only the greenlet, results are the original's.</summary>
[TestFixture]
public class SocketSendOnHubTests : PatchedHubTest
{
    [Test]
    public void SendToAFullDatagramQueueParksOnlyTheSender()
    {
        var (receiver, address, path) = SendSockets.UnixDatagramReceiver();
        try
        {
            using (receiver)
            using (var sender = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified))
            {
                const int count = 300, size = 2048;
                sender.SendBufferSize = 16 * 1024; // a few datagrams in flight fill it, whatever the system default
                int sent = 0, ticks = 0;
                var sending = Green.Spawn(() =>
                {
                    for (int i = 0; i < count; i++)
                    {
                        var d = SendSockets.Datagram(i, size);
                        // Three overloads in turn: array, span with EndPoint, span with SocketAddress.
                        int n = (i % 3) switch
                        {
                            0 => sender.SendTo(d, address),
                            1 => sender.SendTo(d.AsSpan(), SocketFlags.None, address),
                            _ => sender.SendTo(d.AsSpan(), SocketFlags.None, address.Serialize()),
                        };
                        Assert.That(n, Is.EqualTo(size));
                        sent++;
                    }
                });
                var ticker = Green.Spawn(() =>
                {
                    while (!sending.Ready)
                    {
                        Thread.Sleep(5);
                        ticks++;
                    }
                });
                Green.Sleep(150);
                Assert.That(sent, Is.GreaterThan(0).And.LessThan(count), "the sender filled the receiver's queue and waits");
                Assert.That(sending.WaitReason, Is.EqualTo(WaitReason.Socket));
                Assert.That(ticks, Is.GreaterThan(3), "another greenlet ran while the sender waited");
                var buffer = new byte[size + 1];
                for (int i = 0; i < count; i++)
                {
                    int n = receiver.Receive(buffer);
                    Assert.That(buffer[..n], Is.EqualTo(SendSockets.Datagram(i, size)), $"datagram {i} arrived intact and in order");
                }
                Green.JoinAll([sending, ticker], TimeSpan.FromSeconds(10), raiseError: true);
                Assert.That(sent, Is.EqualTo(count));
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void KillingABlockedSendToLosesOrCorruptsNoDatagram()
    {
        var (receiver, address, path) = SendSockets.UnixDatagramReceiver();
        try
        {
            using (receiver)
            using (var sender = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified))
            {
                sender.SendBufferSize = 16 * 1024;
                const int size = 2048;
                int sent = 0;
                var sending = Green.Spawn(() =>
                {
                    for (int i = 0; ; i++)
                    {
                        sender.SendTo(SendSockets.Datagram(i, size), address);
                        sent++;
                    }
                });
                Green.Sleep(50);
                Assert.That(sending.WaitReason, Is.EqualTo(WaitReason.Socket), "blocked on the full queue");
                sending.Kill();
                Assert.That(sending.Dead, Is.True);
                // Every datagram sent arrives whole and in order; the killed one arrived whole or not at all.
                receiver.ReceiveTimeout = 200;
                var buffer = new byte[size + 1];
                int received = 0;
                while (true)
                {
                    int n = receiver.Receive(buffer, 0, buffer.Length, SocketFlags.None, out var error);
                    if (error == SocketError.TimedOut) break;
                    Assert.That(buffer[..n], Is.EqualTo(SendSockets.Datagram(received, size)), $"datagram {received}");
                    received++;
                }
                Assert.That(received, Is.InRange(sent, sent + 1));
                Assert.That(sender.SendTo(SendSockets.Datagram(0, 8), address), Is.EqualTo(8), "the socket still works");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void SendToTimesOutWithSendTimeout()
    {
        var (receiver, address, path) = SendSockets.UnixDatagramReceiver();
        try
        {
            using (receiver)
            using (var sender = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified))
            {
                sender.SendTimeout = 100;
                var ticks = 0;
                var ticker = Green.Spawn(() =>
                {
                    for (int i = 0; i < 5; i++)
                    {
                        Thread.Sleep(10);
                        ticks++;
                    }
                });
                var e = Assert.Throws<SocketException>(() =>
                {
                    for (int i = 0; i < 10_000; i++) sender.SendTo(new byte[2048], address);
                });
                Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.TimedOut));
                ticker.Join();
                Assert.That(ticks, Is.EqualTo(5));
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void SendFileOfALargeFileParksAndSendsEveryByte()
    {
        string file = Path.GetTempFileName();
        try
        {
            var content = new byte[4 << 20];
            new Random(7).NextBytes(content);
            File.WriteAllBytes(file, content);
            var (client, server) = SendSockets.TcpPair();
            using (client)
            using (server)
            {
                byte[] pre = "PRE:"u8.ToArray(), post = ":POST"u8.ToArray();
                var sending = Green.Spawn(() => client.SendFile(file, pre, post, TransmitFileOptions.UseDefaultWorkerThread));
                int ticks = 0;
                var ticker = Green.Spawn(() =>
                {
                    while (!sending.Ready)
                    {
                        Thread.Sleep(5);
                        ticks++;
                    }
                });
                Green.Sleep(100);
                Assert.That(sending.Ready, Is.False, "4 MiB do not fit the socket buffers of a peer that does not read");
                Assert.That(sending.WaitReason, Is.EqualTo(WaitReason.Socket));
                // The ticker runs while the send is parked (polled with a generous bound: a loaded machine may give it
                // fewer turns in the first 100 ms).
                var watch = System.Diagnostics.Stopwatch.StartNew();
                while (ticks <= 3 && watch.Elapsed < TimeSpan.FromSeconds(10)) Green.Sleep(10);
                Assert.That(ticks, Is.GreaterThan(3));
                Assert.That(sending.Ready, Is.False, "still parked: the peer has read nothing");
                var received = SendSockets.ReceiveAll(server, pre.Length + content.Length + post.Length);
                Green.JoinAll([sending, ticker], TimeSpan.FromSeconds(10), raiseError: true);
                Assert.That(received, Is.EqualTo(pre.Concat(content).Concat(post).ToArray()));
                client.SendFile(file); // the short overload reaches the same funnel
                Assert.That(SendSockets.ReceiveAll(server, content.Length), Is.EqualTo(content));
            }
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Test]
    public void DisconnectEndsTheConnectionLikeTheOriginal()
    {
        var (client, server) = SendSockets.TcpPair();
        using (client)
        using (server)
        {
            client.Disconnect(false);
            Assert.That(client.Connected, Is.False);
            Assert.That(server.Receive(new byte[1]), Is.EqualTo(0), "the peer sees EOF");
        }
    }

    [Test]
    public void MisusesThrowWhatTheOriginalsThrow()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"gr-missing-{Guid.NewGuid():N}");
        var onHub = SendSockets.Misuses(missing);
        List<string>? offHub = null;
        var thread = new Thread(() => offHub = SendSockets.Misuses(missing));
        thread.Start();
        Assert.That(thread.Join(TimeSpan.FromSeconds(10)), Is.True);
        TestContext.Out.WriteLine(string.Join("\n", onHub));
        Assert.That(onHub, Is.EqualTo(offHub));
    }
}

/// <summary>Off a hub, the patched SendTo, SendFile and Disconnect behave exactly like the originals.</summary>
[TestFixture]
public class SocketSendOffHubTests
{
    private List<string> _unpatched = null!;

    [OneTimeSetUp]
    public void PatchEverything()
    {
        Assert.That(Hub.CurrentOrNull, Is.Null, "these tests need a thread without a hub");
        _unpatched = SendSockets.Misuses(Path.Combine(Path.GetTempPath(), "gr-missing-file"));
        PatchAssemblyAccess.All();
    }

    [OneTimeTearDown]
    public void Undo() => PatchAssemblyAccess.UndoAll();

    [Test]
    public void MisusesThrowWhatTheyThrewBeforePatching() =>
        Assert.That(SendSockets.Misuses(Path.Combine(Path.GetTempPath(), "gr-missing-file")), Is.EqualTo(_unpatched));

    [Test]
    public void SendToSendFileAndDisconnectWork()
    {
        using var udpReceiver = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udpReceiver.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Assert.That(udp.SendTo([1, 2, 3], udpReceiver.LocalEndPoint!), Is.EqualTo(3));
        Assert.That(udp.SendTo(new byte[] { 4, 5 }.AsSpan(), SocketFlags.None, udpReceiver.LocalEndPoint!.Serialize()), Is.EqualTo(2));
        var buffer = new byte[8];
        Assert.That(udpReceiver.Receive(buffer), Is.EqualTo(3));
        Assert.That(udpReceiver.Receive(buffer), Is.EqualTo(2));
        Assert.That(buffer[..2], Is.EqualTo(new byte[] { 4, 5 }));

        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(file, [9, 8, 7]);
            var (client, server) = SendSockets.TcpPair();
            using (client)
            using (server)
            {
                client.SendFile(file, [1], [2], TransmitFileOptions.UseDefaultWorkerThread);
                Assert.That(SendSockets.ReceiveAll(server, 5), Is.EqualTo(new byte[] { 1, 9, 8, 7, 2 }));
                client.Disconnect(false);
                Assert.That(client.Connected, Is.False);
                Assert.That(server.Receive(buffer), Is.EqualTo(0));
            }
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Test]
    public void SendToTimesOutWithSendTimeoutOffTheHub()
    {
        var (receiver, address, path) = SendSockets.UnixDatagramReceiver();
        try
        {
            using (receiver)
            using (var sender = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified))
            {
                sender.SendTimeout = 100;
                var e = Assert.Throws<SocketException>(() =>
                {
                    for (int i = 0; i < 10_000; i++) sender.SendTo(new byte[2048], address);
                });
                Assert.That(e!.SocketErrorCode, Is.EqualTo(SocketError.WouldBlock).Or.EqualTo(SocketError.TimedOut));
                TestContext.Out.WriteLine(e.SocketErrorCode);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
