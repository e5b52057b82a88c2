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
}
