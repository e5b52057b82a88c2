using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace GreenRuntime.Patch.Tests.PatchSets;

/// <summary>
/// A receive into an empty buffer waits on a blocking socket until data is there, and synchronous
/// <see cref="SslStream"/> makes one before every TLS record it reads. On a greenlet it must park like any receive: run
/// as the original it held the hub until the peer sent (a TLS server and its clients on one hub hung for good).
/// </summary>
public class ZeroByteReceiveTests : PatchedHubTest
{
    private static (Socket Client, Socket Server) Pair() => GreenRuntime.TestSupport.LoopbackPair.Connect();

    /// <summary>Runs <paramref name="wait"/> on a greenlet beside a ticker while a thread sends a byte after 300 ms; returns
    /// the ticks counted meanwhile.</summary>
    private static int TicksWhile(Socket sender, Action wait)
    {
        int ticks = 0;
        var waiter = Green.Spawn(wait);
        var ticker = Green.Spawn(() =>
        {
            while (!waiter.Ready)
            {
                Green.Sleep(10);
                ticks++;
            }
        });
        var late = new Thread(() =>
        {
            Thread.Sleep(300);
            sender.Send(new byte[] { 42 });
        });
        late.Start();
        Green.JoinAll([waiter, ticker], raiseError: true);
        late.Join();
        return ticks;
    }

    [Test]
    public void AnEmptyReceiveParksUntilDataIsThereAndTakesNone()
    {
        var (client, server) = Pair();
        using (client)
        using (server)
        {
            int spanResult = -1, arrayResult = -1;
            int ticks = TicksWhile(client, () => spanResult = server.Receive(Span<byte>.Empty));
            Assert.That(spanResult, Is.EqualTo(0));
            // 300 ms at a tick per 10 ms: about 30; a receive that held the hub gives 0.
            Assert.That(ticks, Is.GreaterThanOrEqualTo(5), "the other greenlets ran while the empty receive waited");
            var data = new byte[1];
            Assert.That(server.Receive(data), Is.EqualTo(1), "the empty receive took nothing");
            Assert.That(data[0], Is.EqualTo(42));

            ticks = TicksWhile(client, () => arrayResult = server.Receive(Array.Empty<byte>(), 0, 0, SocketFlags.None));
            Assert.That(arrayResult, Is.EqualTo(0));
            Assert.That(ticks, Is.GreaterThanOrEqualTo(5));
            Assert.That(server.Receive(data), Is.EqualTo(1));

            server.ReceiveTimeout = 50;
            var error = SocketError.Success;
            var timedOut = Green.Spawn(() => server.Receive(Span<byte>.Empty, SocketFlags.None, out error));
            Assert.That(timedOut.Get(TimeSpan.FromSeconds(10)), Is.EqualTo(0));
            Assert.That(error, Is.EqualTo(SocketError.TimedOut), "the socket's ReceiveTimeout holds for an empty receive too");
        }
    }

    [Test]
    public void ASynchronousTlsServerAndItsClientsShareOneHub()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var ephemeral = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        using var certificate = X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pfx), null);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        const int clients = 10, rounds = 5;
        var server = Green.Spawn(() =>
        {
            var handlers = new List<Greenlet>();
            for (int i = 0; i < clients; i++)
            {
                var connection = listener.AcceptTcpClient();
                handlers.Add(Green.Spawn(() =>
                {
                    using var tls = new SslStream(connection.GetStream());
                    tls.AuthenticateAsServer(certificate);
                    var buffer = new byte[64];
                    for (int r = 0; r < rounds; r++)
                    {
                        int n = tls.Read(buffer);
                        tls.Write(buffer.AsSpan(0, n)); // echo
                    }
                    connection.Dispose();
                }));
            }
            Green.JoinAll(handlers, raiseError: true);
        });
        var watch = Stopwatch.StartNew();
        var callers = Enumerable.Range(0, clients).Select(i => Green.Spawn(() =>
        {
            using var connection = new TcpClient();
            connection.Connect(IPAddress.Loopback, port);
            using var tls = new SslStream(connection.GetStream(), false, (_, _, _, _) => true);
            tls.AuthenticateAsClient("localhost");
            var reply = new byte[64];
            for (int r = 0; r < rounds; r++)
            {
                var message = System.Text.Encoding.ASCII.GetBytes($"client {i} round {r}");
                tls.Write(message);
                int n = tls.Read(reply);
                Assert.That(System.Text.Encoding.ASCII.GetString(reply, 0, n), Is.EqualTo($"client {i} round {r}"));
            }
            return i;
        })).ToList();
        var all = callers.Cast<Greenlet>().Append(server).ToList();
        Assert.That(Green.JoinAll(all, timeout: TimeSpan.FromSeconds(60), raiseError: true), Has.Count.EqualTo(all.Count),
            "every TLS exchange finished");
        TestContext.Out.WriteLine($"{clients} TLS clients × {rounds} echoes on one hub: {watch.ElapsedMilliseconds} ms");
    }
}
