using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Tests;

namespace GreenRuntime.Servers.Tests;

/// <summary>
/// Sends 10,000 random and mutated requests over raw sockets. Every connection must end with zero or more
/// well-formed responses followed by a close; afterwards a good request still works and only the server's own
/// greenlet is alive. The client half-closes after sending, so a truncated request ends at EOF instead of
/// waiting for a timeout.
/// </summary>
public class HttpFuzzTests : ServerTest
{
    private const int Connections = 10_000;
    private const int Workers = 16;
    private const int Seed = 20261125;

    private static readonly string[] Seeds =
    [
        "GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\n\r\n",
        "PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /throw HTTP/1.1\r\nHost: x\r\n\r\n",
        "DELETE /big HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz\r\n\r\n",
        "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after-head HTTP/1.1\r\nHost: x\r\n\r\n",
    ];

    private static readonly string[] Tokens =
    [
        "\r\n", "\n", "\r", ":", " ", "\t", "\0", "\u007f", "\u00ff", "chunked", "Content-Length: 5\r\n", "Content-Length: 99999999999\r\n",
        "Transfer-Encoding: chunked\r\n", "Transfer-Encoding: gzip\r\n", "Expect: 100-continue\r\n", "Host: y\r\n", "ffffffffffffffffff",
        "HTTP/1.0", "HTTP/1.1", "HTTP/9.9", "-1", "\r\n\r\n", "0\r\n\r\n", "Connection: close\r\n", " folded\r\n", new string('A', 20_000),
    ];

    private static void Handler(HttpContext ctx)
    {
        if (ctx.Request.Path == "/throw") throw new InvalidOperationException("fuzz handler failure");
        var body = new MemoryStream();
        ctx.Request.Body.CopyTo(body);
        if (ctx.Request.Method == "HEAD") return; // keeps the strict client simple: HEAD answers have Content-Length 0
        if (ctx.Request.Path == "/big")
        {
            ctx.Response.Write(new string('b', 40_000));
            return;
        }
        ctx.Response.Write($"{ctx.Request.Method} {ctx.Request.Target} {body.Length}");
    }

    private static byte[] Mutate(Random random)
    {
        if (random.Next(10) == 0)
        {
            var garbage = new byte[random.Next(1, 300)];
            random.NextBytes(garbage);
            return garbage;
        }
        var data = new List<byte>(Encoding.Latin1.GetBytes(Seeds[random.Next(Seeds.Length)]));
        int mutations = random.Next(0, 5);
        for (int m = 0; m < mutations && data.Count > 0; m++)
        {
            int at = random.Next(data.Count);
            switch (random.Next(7))
            {
                case 0: data[at] = (byte)random.Next(256); break;
                case 1: data.InsertRange(at, Enumerable.Range(0, random.Next(1, 8)).Select(_ => (byte)random.Next(256))); break;
                case 2: data.RemoveRange(at, random.Next(1, Math.Min(16, data.Count - at) + 1)); break;
                case 3:
                {
                    int length = random.Next(1, Math.Min(32, data.Count - at) + 1);
                    data.InsertRange(at, data.GetRange(at, length));
                    break;
                }
                case 4: data.RemoveRange(at, data.Count - at); break;
                case 5: data.InsertRange(at, Encoding.Latin1.GetBytes(Tokens[random.Next(Tokens.Length)])); break;
                case 6:
                {
                    char c = (char)data[at];
                    data[at] = (byte)(char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
                    break;
                }
            }
        }
        return data.ToArray();
    }

    private static readonly int[] AllowedStatuses = [200, 400, 405, 408, 413, 414, 417, 431, 500, 501, 505];

    [Test]
    public void TenThousandRandomAndMutatedRequestsNeverBreakTheServer()
    {
        var options = new HttpServerOptions { MaxRequestBodySize = 64 * 1024, RequestHeadersTimeout = TimeSpan.FromSeconds(5) };
        using var server = new HttpServer(AnyLoopbackPort, Handler, options);
        int baseline = Hub.AliveCount;
        server.Start();
        int serverOwn = Hub.AliveCount;
        Assert.That(serverOwn, Is.EqualTo(baseline + 1));
        var endPoint = server.LocalEndPoint;
        var watch = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, Workers).Select(w => Task.Factory.StartNew(() =>
        {
            var random = new Random(Seed + w);
            var statuses = new Dictionary<int, int>();
            int closedWithoutResponse = 0;
            for (int i = w; i < Connections; i += Workers)
            {
                var request = Mutate(random);
                using var s = Connect(endPoint);
                try
                {
                    s.Send(request);
                    s.Shutdown(SocketShutdown.Send);
                }
                catch (SocketException)
                {
                    // The server may already have answered and closed (e.g. 431 on a huge head): read what it sent.
                }
                var reader = new ResponseReader(s);
                int responses = 0;
                try
                {
                    while (reader.Read() is { } response)
                    {
                        responses++;
                        if (!AllowedStatuses.Contains(response.Status))
                            throw new FormatException($"Unexpected status {response.Status}.");
                        statuses[response.Status] = statuses.GetValueOrDefault(response.Status) + 1;
                    }
                }
                catch (FormatException e)
                {
                    throw new AssertionException($"Connection {i} (worker seed {Seed + w}): {e.Message}\nRequest: {Encoding.Latin1.GetString(request).ReplaceLineEndings("⏎")}");
                }
                if (responses == 0) closedWithoutResponse++;
            }
            return (statuses, closedWithoutResponse);
        }, TaskCreationOptions.LongRunning)).ToList();
        var results = Green.Wait(Task.WhenAll(workers), TimeSpan.FromSeconds(120));
        var totals = results.SelectMany(r => r.statuses).GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Sum(p => p.Value));
        int silent = results.Sum(r => r.closedWithoutResponse);
        TestContext.Out.WriteLine($"{Connections} connections in {watch.Elapsed.TotalSeconds:0.0} s; statuses: {string.Join(", ", totals.OrderBy(p => p.Key).Select(p => $"{p.Key}×{p.Value}"))}; closed without response: {silent}");

        Assert.That(totals.GetValueOrDefault(200), Is.GreaterThan(500), "many mutated requests are still valid and served");
        Assert.That(totals.GetValueOrDefault(400), Is.GreaterThan(500), "many are rejected as malformed");
        Assert.That(totals.GetValueOrDefault(500), Is.GreaterThan(0), "handler failures were answered too");

        var good = Client(() =>
        {
            using var s = Connect(endPoint);
            SendText(s, "POST /after HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            return new ResponseReader(s).ReadRequired();
        });
        Assert.That(good.Status, Is.EqualTo(200));
        Assert.That(good.BodyText, Is.EqualTo("POST /after 2"));
        // A connection's slot is freed by a link callback that runs just after its greenlet dies.
        WaitUntil(() => Hub.AliveCount == serverOwn && server.ConnectionCount == 0, "only the accept loop is alive and no connection is open", 15);
        Assert.That(Logs.Entries.Any(e => e.EventId.Id == 1), Is.False, "no connection greenlet died of an unhandled exception");
    }
}
