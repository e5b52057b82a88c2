using System.Net;
using System.Net.Sockets;
using System.Text;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Plain blocking socket code under Patch.All on the hub's reactor (Linux x64): connect, receive, send, and
/// what the Socket object reports afterwards, as the originals would.
/// </summary>
[TestFixture]
public class SocketReactorTests : PatchedHubTest
{
    private static Socket Listener()
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(16);
        return listener;
    }

    [Test]
    public void Connect_on_a_greenlet_leaves_the_socket_as_the_original_does()
    {
        using var listener = Listener();
        var ticks = 0;
        var ticker = Green.Spawn(() => { while (true) { Green.Sleep(1); ticks++; } });
        var server = Green.Spawn(() =>
        {
            using var connection = listener.Accept();
            var buffer = new byte[16];
            int n = connection.Receive(buffer);
            connection.Send(buffer, 0, n, SocketFlags.None);
        });
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        Assert.That(client.Connected, Is.True);
        Assert.That(client.Blocking, Is.True, "the socket's blocking mode is the user's, unchanged");
        Assert.That(client.RemoteEndPoint, Is.EqualTo(listener.LocalEndPoint));
        Assert.That(((IPEndPoint)client.LocalEndPoint!).Port, Is.Not.Zero);
        client.Send(Encoding.ASCII.GetBytes("ping"));
        var reply = new byte[16];
        int got = client.Receive(reply);
        Assert.That(Encoding.ASCII.GetString(reply, 0, got), Is.EqualTo("ping"));
        server.Join();
        Assert.That(server.Successful, Is.True);
        ticker.Kill();
        Assert.That(ticks, Is.GreaterThanOrEqualTo(0));
    }

    [Test]
    public void A_refused_connect_throws_ConnectionRefused_and_the_socket_is_not_connected()
    {
        int port;
        using (var closed = Listener()) port = ((IPEndPoint)closed.LocalEndPoint!).Port;
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var error = Assert.Throws<SocketException>(() => client.Connect(new IPEndPoint(IPAddress.Loopback, port)));
        Assert.That(error!.SocketErrorCode, Is.EqualTo(SocketError.ConnectionRefused));
        Assert.That(client.Connected, Is.False);
    }

    [Test]
    public void A_receive_timeout_throws_TimedOut_like_the_original_and_other_greenlets_run_meanwhile()
    {
        using var listener = Listener();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var server = listener.Accept();
        server.ReceiveTimeout = 200;
        int ticks = 0;
        var ticker = Green.Spawn(() => { while (true) { Green.Sleep(10); ticks++; } });
        var error = Assert.Throws<SocketException>(() => server.Receive(new byte[8]));
        Assert.That(error!.SocketErrorCode, Is.EqualTo(SocketError.TimedOut));
        Assert.That(ticks, Is.GreaterThan(2), "the receive parked only its greenlet");
        ticker.Kill();
    }

    [Test]
    public void A_reset_connection_is_reported_and_Connected_becomes_false()
    {
        using var listener = Listener();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var server = listener.Accept();
        var reader = Green.Spawn(() => server.Receive(new byte[8]));
        Green.Sleep(20);
        client.LingerState = new LingerOption(true, 0);
        client.Close(); // RST
        Assert.That(() => reader.Get(), Throws.InstanceOf<SocketException>().With.Property("SocketErrorCode").EqualTo(SocketError.ConnectionReset));
        Assert.That(server.Connected, Is.False);
    }
    [Test]
    public void A_receive_that_finds_its_data_takes_it_before_giving_way_to_the_others()
    {
        // A connection pool's liveness check polls, then peeks at what the poll saw; the library's reader thread takes
        // the data when it comes. On a thread the peek follows the poll within microseconds. A receive that gave way first
        // (the blocking monitor had asked the holder to) let the other side take the data, and the peek then waited for
        // data that never came. Here the other side is a greenlet that is ready while the first one computes, so the
        // monitor asks; on a hub of its own with the monitor on, on a background thread.
        var (reader, writer) = GreenRuntime.TestSupport.LoopbackPair.Connect();
        using var _ = reader;
        using var __ = writer;
        reader.ReceiveTimeout = 2000;
        writer.Send([7]);
        int peeked = -1;
        Exception? failure = null;
        var runner = new Thread(() =>
        {
            using var hub = new Hub(new HubOptions { MaxBlockingTime = TimeSpan.FromMilliseconds(40) });
            var checker = Green.Spawn(() =>
            {
                var watch = System.Diagnostics.Stopwatch.StartNew();
                while (watch.ElapsedMilliseconds < 200) Thread.SpinWait(100); // holds the baton while the taker waits
                try
                {
                    peeked = reader.Receive(new byte[1], SocketFlags.Peek); // what a poll just saw (a poll gives way before it looks)
                }
                catch (Exception e)
                {
                    failure = e;
                }
            });
            var taker = Green.Spawn(() => reader.Receive(new byte[1]));
            Green.JoinAll([checker, taker], TimeSpan.FromSeconds(10));
        }) { IsBackground = true };
        runner.Start();
        Assert.That(runner.Join(TimeSpan.FromSeconds(20)), Is.True);
        Assert.That(failure, Is.Null, "the peek waited for data the other greenlet had taken");
        Assert.That(peeked, Is.EqualTo(1));
    }
}
