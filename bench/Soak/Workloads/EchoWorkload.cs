using System.Net;
using System.Net.Sockets;

namespace GreenRuntime.Soak.Workloads;

/// <summary>
/// A blocking echo server (plain <see cref="Socket"/> code, cooperative only through <c>Patch.All()</c>) and
/// clients that send checksummed messages of 1 B – 256 KiB. Faults: clients killed mid-message, clients that
/// reset the connection (linger 0) mid-message, slow readers that make the server's sends block, and clients
/// killed while idle in a receive. Invariant: every byte a surviving client sent comes back intact and in order.
/// </summary>
internal sealed class EchoWorkload(SoakContext context) : Workload(context, "echo")
{
    private enum Behaviour { Normal, SlowReader, KilledMidMessage, Reset, KilledIdle }

    private Socket? _listener;
    private Greenlet? _acceptor;
    private long _verifiedBytes, _verifiedMessages, _faults;

    public static bool IsNetworkError(Exception e) => e is SocketException or IOException or ObjectDisposedException;

    public override void Start()
    {
        _listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(512);
        Context.EchoEndPoint = (IPEndPoint)_listener.LocalEndPoint!;
        _acceptor = Green.Spawn(AcceptLoop, "echo.acceptor");
    }

    public override void Stop()
    {
        _acceptor?.Kill();
        _listener?.Dispose();
    }

    private void AcceptLoop()
    {
        while (true)
        {
            var connection = _listener!.Accept(); // patched: parks this greenlet only
            Ledger.Spawn("echo.handler", () => Handle(connection), IsNetworkError);
        }
    }

    /// <summary>Legacy-style blocking echo handler: nothing here knows about greenlets.</summary>
    private static void Handle(Socket connection)
    {
        using (connection)
        {
            var buffer = new byte[16 * 1024];
            while (true)
            {
                int n = connection.Receive(buffer);
                if (n == 0) return;
                connection.Send(buffer, 0, n, SocketFlags.None);
            }
        }
    }

    protected override IReadOnlyList<Greenlet> Round()
    {
        var batch = new List<Greenlet>();
        int clients = Random.Next(3, 9);
        for (int i = 0; i < clients; i++)
        {
            var behaviour = Random.Next(100) switch
            {
                < 50 => Behaviour.Normal,
                < 65 => Behaviour.SlowReader,
                < 80 => Behaviour.KilledMidMessage,
                < 90 => Behaviour.Reset,
                _ => Behaviour.KilledIdle,
            };
            var messages = Enumerable.Range(0, Random.Next(1, 5))
                .Select(_ => Payload.Message(Payload.RandomSize(Random), (uint)Random.Next())).ToList();
            bool faulty = behaviour is Behaviour.KilledMidMessage or Behaviour.Reset or Behaviour.KilledIdle;
            int resetAfter = Random.Next(1, messages.Sum(m => m.Length));
            var client = Ledger.Spawn($"echo.client.{behaviour}", () => Client(behaviour, messages, resetAfter),
                faulty ? IsNetworkError : null);
            batch.Add(client);
            if (behaviour is Behaviour.KilledMidMessage) batch.Add(KillLater(client, 30));
            if (behaviour is Behaviour.KilledIdle) batch.Add(KillLater(client, 50));
            if (faulty) _faults++;
        }
        return batch;
    }

    private void Client(Behaviour behaviour, List<byte[]> messages, int resetAfter)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Connect(Context.EchoEndPoint);
        if (behaviour == Behaviour.KilledIdle)
        {
            socket.Receive(new byte[16]); // nobody sends: only the kill ends this
            Ledger.Violate("echo: an idle client's receive returned although the server never sends first.");
            return;
        }
        if (behaviour == Behaviour.Reset)
        {
            var all = messages.SelectMany(m => m).Take(resetAfter).ToArray();
            socket.Send(all);
            socket.LingerState = new LingerOption(true, 0);
            socket.Close(); // RST mid-message
            return;
        }
        // Full duplex: a second greenlet sends while this one reads, so that 256 KiB messages cannot deadlock
        // against the kernel's buffers.
        var sender = Ledger.Spawn("echo.sender", () =>
        {
            foreach (var m in messages) socket.Send(m);
        }, behaviour == Behaviour.KilledMidMessage ? IsNetworkError : null);
        try
        {
            foreach (var sent in messages)
            {
                var received = new byte[sent.Length];
                int at = 0;
                while (at < received.Length)
                {
                    int chunk = behaviour == Behaviour.SlowReader ? Math.Min(4096, received.Length - at) : received.Length - at;
                    int n = socket.Receive(received, at, chunk, SocketFlags.None);
                    if (n == 0)
                    {
                        if (behaviour is Behaviour.Normal or Behaviour.SlowReader)
                            Ledger.Violate($"echo: the server closed a surviving client's connection after {at} of {sent.Length} bytes.");
                        return;
                    }
                    at += n;
                    if (behaviour == Behaviour.SlowReader && Random.Next(8) == 0) Thread.Sleep(Random.Next(1, 6));
                }
                if (Payload.Verify(received) is { } problem || !received.AsSpan().SequenceEqual(sent))
                {
                    Ledger.Violate($"echo: a message came back damaged ({Payload.Verify(received) ?? "bytes differ from those sent"}).");
                    return;
                }
                _verifiedBytes += received.Length;
                _verifiedMessages++;
            }
            sender.Join();
            socket.Shutdown(SocketShutdown.Send);
            if (socket.Receive(new byte[1]) != 0) Ledger.Violate("echo: the server sent bytes nobody had sent to it.");
        }
        finally
        {
            sender.Kill(); // a killed client takes its sender with it
        }
    }

    public override string Progress() => $"echo {_verifiedMessages} msgs/{_verifiedBytes / 1048576.0:0.0} MiB ok, {_faults} faults";
}
