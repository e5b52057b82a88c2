using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Tests;

namespace GreenRuntime.Servers.Tests;

public class ConnectionSocketTests : ServerTest
{
    private Socket _listener = null!;
    private Socket _client = null!;
    private Socket _server = null!;

    [SetUp]
    public void ConnectPair()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(1);
        _client = Connect(_listener.LocalEndPoint!);
        _server = _listener.Accept();
    }

    [TearDown]
    public void Close()
    {
        _client.Dispose();
        _server.Dispose();
        _listener.Dispose();
    }

    [Test]
    public void AReceiveParksOnlyItsGreenletWhileOthersRun()
    {
        var io = new ConnectionSocket(_server);
        var order = new List<string>();
        var receiver = Green.Spawn(() =>
        {
            var buffer = new byte[16];
            int n = io.Receive(buffer, null);
            order.Add("received " + Encoding.ASCII.GetString(buffer, 0, n));
        });
        var other = Green.Spawn(() => order.Add("other ran"));
        Green.Sleep(50);
        Assert.That(order, Is.EqualTo(new[] { "other ran" }), "the receiver is parked, not blocking the hub");
        Client(() => SendText(_client, "hi"));
        receiver.Join(TimeSpan.FromSeconds(10));
        Assert.That(order, Is.EqualTo(new[] { "other ran", "received hi" }));
    }

    [Test]
    public void ATimedOutReceiveIsCancelledAndTheSocketStaysUsable()
    {
        var io = new ConnectionSocket(_server);
        var buffer = new byte[16];
        Assert.That(() => io.Receive(buffer, TimeSpan.FromMilliseconds(100)), Throws.InstanceOf<TimeoutException>());
        Client(() => SendText(_client, "later"));
        var second = new byte[16];
        int n = io.Receive(second, TimeSpan.FromSeconds(10));
        Assert.That(Encoding.ASCII.GetString(second, 0, n), Is.EqualTo("later"), "the cancelled receive did not take the data");
    }

    [Test]
    public void KillingAParkedReceiverCancelsItsReceive()
    {
        var io = new ConnectionSocket(_server);
        bool returned = false;
        var receiver = Green.Spawn(() => { io.Receive(new byte[16], null); returned = true; });
        Green.Sleep(20);
        receiver.Kill();
        Assert.That(receiver.Dead, Is.True);
        Assert.That(returned, Is.False);
        Assert.That(receiver.Value, Is.InstanceOf<GreenletExit>());
        Client(() => SendText(_client, "next"));
        var buffer = new byte[16];
        int n = io.Receive(buffer, TimeSpan.FromSeconds(10));
        Assert.That(Encoding.ASCII.GetString(buffer, 0, n), Is.EqualTo("next"));
    }

    [Test]
    public void OffAHubItIsAPlainBlockingCallWithATimeout()
    {
        var (text, timedOut) = Client(() =>
        {
            var io = new ConnectionSocket(_server);
            bool timedOut = false;
            try { io.Receive(new byte[4], TimeSpan.FromMilliseconds(100)); }
            catch (TimeoutException) { timedOut = true; }
            SendText(_client, "sync");
            var buffer = new byte[16];
            int n = io.Receive(buffer, TimeSpan.FromSeconds(10));
            io.Send("back"u8.ToArray(), null);
            return (Encoding.ASCII.GetString(buffer, 0, n), timedOut);
        });
        Assert.That(timedOut, Is.True);
        Assert.That(text, Is.EqualTo("sync"));
        var reply = new byte[4];
        _client.Receive(reply);
        Assert.That(reply, Is.EqualTo("back"u8.ToArray()));
    }

    [Test]
    public void ALargeSendParksUntilThePeerReadsItAll()
    {
        var io = new ConnectionSocket(_server);
        var data = new byte[16 * 1024 * 1024]; // more than loopback's socket buffers hold
        new Random(1).NextBytes(data);
        // An async reader: a thread-pool thread blocked in Receive would starve the socket completions on 2 cores.
        var reader = Task.Run(async () =>
        {
            await Task.Delay(100); // let the kernel buffers fill first
            var got = new MemoryStream();
            var buffer = new byte[64 * 1024];
            while (got.Length < data.Length) got.Write(buffer, 0, await _client.ReceiveAsync(buffer));
            return got.ToArray();
        });
        bool otherRan = false;
        Green.Spawn(() => otherRan = true);
        io.Send(data, TimeSpan.FromSeconds(20));
        Assert.That(otherRan, Is.True, "the send parked while the peer was not reading");
        var received = Green.Wait(reader, TimeSpan.FromSeconds(20));
        Assert.That(received.AsSpan().SequenceEqual(data), Is.True, "every byte arrived in order"); // (NUnit's EqualTo is slow on 16 MB)
    }
}
