using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// Plain blocking echo server and clients in one hub under Patch.All(), with enough traffic that the hub's
/// inbox is contended (its ConcurrentQueue then spins with Thread.Yield, which is patched). Regression test for
/// the scheduler parking inside itself through a patched BCL call (stack overflow, lost wakes).
/// </summary>
public class EchoLoadTests : PatchedHubTest
{
    [Test]
    public void HundredBlockingClientsAndTheirHandlersAllFinish()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(512);
        var acceptor = Green.Spawn(() =>
        {
            while (true)
            {
                var connection = listener.Accept();
                Green.Spawn(() =>
                {
                    using (connection)
                    {
                        var buffer = new byte[4096];
                        int n;
                        while ((n = connection.Receive(buffer)) > 0) connection.Send(buffer, 0, n, SocketFlags.None);
                    }
                });
            }
        });
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        long echoed = 0;
        var clients = Enumerable.Range(0, 100).Select(_ => Green.Spawn(() =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Connect(new IPEndPoint(IPAddress.Loopback, port));
            socket.NoDelay = true;
            var message = new byte[64];
            var reply = new byte[64];
            for (int round = 0; round < 500; round++)
            {
                message[0] = (byte)round;
                socket.Send(message);
                int got = 0;
                while (got < 64) got += socket.Receive(reply, got, 64 - got, SocketFlags.None);
                Assert.That(reply[0], Is.EqualTo((byte)round));
                echoed++;
            }
        })).ToList();
        var done = Green.JoinAll(clients, timeout: TimeSpan.FromSeconds(120), raiseError: true);
        Assert.That(done, Has.Count.EqualTo(100), () => "stuck clients:\n" + Hub.Current.FormatRunInfo());
        Assert.That(echoed, Is.EqualTo(50_000));
        acceptor.Kill();
    }
}
