using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using GreenRuntime.Tests;

namespace GreenRuntime.Servers.Tests;

public class HttpServerTests : ServerTest
{
    private HttpServer _server = null!;
    private string _base = "";

    private HttpServer Serve(Action<HttpContext> handler, HttpServerOptions? options = null)
    {
        _server = new HttpServer(AnyLoopbackPort, handler, options);
        _server.Start();
        _base = $"http://{_server.LocalEndPoint}";
        return _server;
    }

    [TearDown]
    public void StopServer() => _server?.Stop();

    /// <summary>Answers with what it saw: method, target, body length and SHA-256, and the client's port.</summary>
    private static void Describe(HttpContext ctx)
    {
        using var sha = SHA256.Create();
        var body = new MemoryStream();
        ctx.Request.Body.CopyTo(body);
        ctx.Response.ContentType = "text/plain";
        ctx.Response.Write($"{ctx.Request.Method} {ctx.Request.Target} {ctx.Request.Protocol} len={body.Length} sha={Convert.ToHexString(SHA256.HashData(body.ToArray()))[..16]} port={((IPEndPoint)ctx.RemoteEndPoint).Port}");
    }

    private static string Sha(byte[] data) => Convert.ToHexString(SHA256.HashData(data))[..16];

    [Test]
    public void HttpClientReusesOneKeepAliveConnectionAndGetsDateAndContentLength()
    {
        Serve(Describe);
        var (bodies, first) = ClientAsync(async () =>
        {
            using var client = new HttpClient();
            var bodies = new List<string>();
            HttpResponseMessage? firstResponse = null;
            for (int i = 0; i < 5; i++)
            {
                var response = await client.GetAsync($"{_base}/item/{i}?q=1");
                firstResponse ??= response;
                bodies.Add(await response.Content.ReadAsStringAsync());
            }
            return (bodies, firstResponse!);
        });
        Assert.That(bodies[0], Does.StartWith("GET /item/0?q=1 HTTP/1.1 len=0"));
        var ports = bodies.Select(b => b[(b.IndexOf("port=", StringComparison.Ordinal) + 5)..]).Distinct().ToList();
        Assert.That(ports, Has.Count.EqualTo(1), "all five requests went over one connection");
        Assert.That(first.Content.Headers.ContentLength, Is.EqualTo(Encoding.UTF8.GetByteCount(bodies[0])));
        Assert.That(first.Headers.Date, Is.Not.Null);
        Assert.That(first.Headers.TransferEncodingChunked, Is.Not.True);
        Assert.That(first.Content.Headers.ContentType!.MediaType, Is.EqualTo("text/plain"));
    }

    private static readonly AsyncLocal<string?> s_requestLocal = new();

    [Test]
    public void RequestsDoNotSeeEachOthersAsyncLocalsOnOneKeepAliveConnectionOrAcrossConnections()
    {
        s_requestLocal.Value = "server start";
        Serve(ctx =>
        {
            var seen = s_requestLocal.Value ?? "null";
            s_requestLocal.Value = "request " + ctx.Request.Target;
            Green.Sleep(1);
            ctx.Response.Write(seen + "|" + s_requestLocal.Value + "|" + ((IPEndPoint)ctx.RemoteEndPoint).Port);
        });
        s_requestLocal.Value = "changed after Start";
        var bodies = ClientAsync(async () =>
        {
            var bodies = new List<string>();
            using (var client = new HttpClient())
            {
                for (int i = 0; i < 3; i++) bodies.Add(await client.GetStringAsync($"{_base}/a{i}"));
            }
            using (var other = new HttpClient())
            {
                bodies.Add(await other.GetStringAsync($"{_base}/b"));
            }
            return bodies;
        });
        s_requestLocal.Value = null;
        var ports = bodies.Take(3).Select(b => b.Split('|')[2]).Distinct().ToList();
        Assert.That(ports, Has.Count.EqualTo(1), "the first three requests shared one keep-alive connection");
        Assert.That(bodies[3].Split('|')[2], Is.Not.EqualTo(ports[0]), "the last one came on another connection");
        for (int i = 0; i < 3; i++)
            Assert.That(bodies[i], Does.StartWith($"server start|request /a{i}|"));
        Assert.That(bodies[3], Does.StartWith("server start|request /b|"));
    }

    [Test]
    public void ChunkedBothWaysWithHttpClient()
    {
        var payload = RandomNumberGenerator.GetBytes(300_000);
        Serve(ctx =>
        {
            var body = new MemoryStream();
            ctx.Request.Body.CopyTo(body);
            var data = body.ToArray();
            Assert.That(ctx.Request.IsChunked, Is.True);
            // Echo back in uneven pieces; more than the response buffer, so the server must stream it chunked.
            for (int i = 0; i < data.Length; i += 7_001)
                ctx.Response.Body.Write(data, i, Math.Min(7_001, data.Length - i));
        });
        var (chunked, echoed) = ClientAsync(async () =>
        {
            using var client = new HttpClient();
            var content = new StreamContent(new NonSeekableStream(payload));
            var request = new HttpRequestMessage(HttpMethod.Post, $"{_base}/echo") { Content = content };
            request.Headers.TransferEncodingChunked = true;
            var response = await client.SendAsync(request);
            return (response.Headers.TransferEncodingChunked, await response.Content.ReadAsByteArrayAsync());
        });
        Assert.That(chunked, Is.True, "a long response of unknown length is chunked");
        Assert.That(echoed.AsSpan().SequenceEqual(payload), Is.True, "the echo is byte-for-byte the upload");
    }

    [Test]
    public void ContentLengthBodiesAndExpectContinueWithHttpClient()
    {
        Serve(Describe);
        var payload = RandomNumberGenerator.GetBytes(50_000);
        var text = ClientAsync(async () =>
        {
            using var client = new HttpClient();
            var request = new HttpRequestMessage(HttpMethod.Put, $"{_base}/upload") { Content = new ByteArrayContent(payload) };
            request.Headers.ExpectContinue = true;
            var response = await client.SendAsync(request);
            return await response.Content.ReadAsStringAsync();
        });
        Assert.That(text, Does.StartWith($"PUT /upload HTTP/1.1 len=50000 sha={Sha(payload)}"));
    }

    [Test]
    public void ExpectContinueIsAnsweredOnlyWhenTheHandlerReadsTheBody()
    {
        Serve(ctx =>
        {
            if (ctx.Request.Path == "/read") Describe(ctx);
            else { ctx.Response.StatusCode = 403; ctx.Response.Write("no"); }
        });
        var (interim, final, refused, closed) = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            SendText(s, "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
            var buffer = new byte[100];
            int n = s.Receive(buffer);
            var interim = Encoding.ASCII.GetString(buffer, 0, n);
            SendText(s, "hello");
            var reader = new ResponseReader(s);
            var final = reader.ReadRequired();
            using var s2 = Connect(_server.LocalEndPoint);
            SendText(s2, "POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
            var reader2 = new ResponseReader(s2);
            var refused = reader2.ReadRequired();
            return (interim, final, refused, reader2.AtEnd);
        });
        Assert.That(interim, Is.EqualTo("HTTP/1.1 100 Continue\r\n\r\n"));
        Assert.That(final.BodyText, Does.StartWith($"POST /read HTTP/1.1 len=5 sha={Sha("hello"u8.ToArray())}"));
        Assert.That(refused.Status, Is.EqualTo(403), "no 100 Continue before a final response that ignores the body");
        Assert.That(refused.Header("Connection"), Is.EqualTo("close"));
        Assert.That(closed, Is.True, "the unsent body leaves the framing unknown, so the connection closes");
    }

    [Test]
    public void CurlGetAndPost()
    {
        if (!File.Exists("/usr/bin/curl")) Assert.Ignore("/usr/bin/curl is missing; .ci/run should install the curl package.");
        Serve(Describe);
        string Curl(string args) => Client(() =>
        {
            var psi = new ProcessStartInfo("/usr/bin/curl", args) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.That(p.ExitCode, Is.EqualTo(0), p.StandardError.ReadToEnd());
            return output;
        });
        var get = Curl($"-s -i {_base}/a/b?c=d {_base}/again");
        Assert.That(get, Does.StartWith("HTTP/1.1 200 OK"));
        Assert.That(get, Does.Contain("GET /a/b?c=d HTTP/1.1 len=0"));
        Assert.That(get, Does.Contain("GET /again HTTP/1.1 len=0"));
        var post = Curl($"-s -H \"Transfer-Encoding: chunked\" --data-binary hello-world {_base}/post");
        Assert.That(post, Does.StartWith($"POST /post HTTP/1.1 len=11 sha={Sha("hello-world"u8.ToArray())}"));
        var http10 = Curl($"-s -i --http1.0 {_base}/old");
        Assert.That(http10, Does.Contain("GET /old HTTP/1.0 len=0"));
        Assert.That(http10, Does.Contain("Connection: close"));
    }

    [Test]
    public void PipelinedRequestsAreAnsweredInOrderOnOneConnection()
    {
        Serve(ctx =>
        {
            if (ctx.Request.Path == "/slow") Green.Sleep(50); // a slow first request must not be overtaken
            Describe(ctx);
        });
        var responses = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            SendText(s,
                "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" +
                "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
                "POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n1;ext=1\r\nf\r\n0\r\nTrailer: t\r\n\r\n" +
                "HEAD /four HTTP/1.1\r\nHost: x\r\n\r\n" +
                "GET /five HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            var reader = new ResponseReader(s);
            var list = new List<RawResponse>();
            for (int i = 0; i < 5; i++) list.Add(reader.ReadRequired(forHead: i == 3));
            Assert.That(reader.AtEnd, Is.True, "Connection: close ends the connection after the fifth response");
            return list;
        });
        Assert.That(responses[0].BodyText, Does.StartWith("GET /slow"));
        Assert.That(responses[1].BodyText, Does.StartWith($"POST /two HTTP/1.1 len=3 sha={Sha("abc"u8.ToArray())}"));
        Assert.That(responses[2].BodyText, Does.StartWith($"POST /three HTTP/1.1 len=3 sha={Sha("def"u8.ToArray())}"));
        Assert.That(responses[3].Body, Is.Empty, "HEAD has no body");
        Assert.That(long.Parse(responses[3].Header("Content-Length")!), Is.GreaterThan(0), "HEAD reports the length GET would have");
        Assert.That(responses[4].BodyText, Does.StartWith("GET /five"));
        Assert.That(responses[4].Header("Connection"), Is.EqualTo("close"));
        var ports = responses.Where(r => r.Body.Length > 0).Select(r => r.BodyText[(r.BodyText.IndexOf("port=", StringComparison.Ordinal) + 5)..]).Distinct();
        Assert.That(ports.Count(), Is.EqualTo(1), "one connection (same client port)");
    }

    [Test]
    public void AKeepAliveRequestAfterOneThatFilledTheInputBufferToItsEndIsAnswered()
    {
        // The input buffer is rented from a power-of-two pool: with 4 KiB of head limit it holds 8 KiB. A first request
        // of exactly that size leaves the buffer consumed to its very end; the next request's receive must still get
        // room (a receive into no room returned 0, read as the client closing: the connection closed unanswered).
        const int headLimit = 4096;
        int bufferLength = (int)System.Numerics.BitOperations.RoundUpToPowerOf2(headLimit + 4096);
        Serve(Describe, new HttpServerOptions { MaxRequestHeadersTotalSize = headLimit });
        for (int total = bufferLength - 2; total <= bufferLength + 2; total++)
        {
            var (first, second) = Client(() =>
            {
                using var s = Connect(_server.LocalEndPoint);
                string head = "POST /fill HTTP/1.1\r\nHost: x\r\nContent-Length: ";
                int bodyLength = total - head.Length - "\r\n\r\n".Length;
                bodyLength -= bodyLength.ToString(System.Globalization.CultureInfo.InvariantCulture).Length;
                var request = Encoding.ASCII.GetBytes($"{head}{bodyLength}\r\n\r\n{new string('b', bodyLength)}");
                Assert.That(request, Has.Length.EqualTo(total));
                s.Send(request);
                var reader = new ResponseReader(s);
                var one = reader.ReadRequired();
                SendText(s, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
                return (one, reader.ReadRequired());
            });
            Assert.That(first.BodyText, Does.StartWith("POST /fill HTTP/1.1 len="), $"a first request of {total} bytes");
            Assert.That(second.BodyText, Does.StartWith("GET /next"), $"the request after one of {total} bytes");
        }
    }

    [Test]
    public void Http10ClientsGetCloseOrKeepAliveAsTheyAsk()
    {
        Serve(ctx =>
        {
            if (ctx.Request.Path == "/big") ctx.Response.Write(new string('x', 100_000));
            else Describe(ctx);
        });
        var (plain, plainClosed, kept, second, big, bigClosed) = Client(() =>
        {
            using var a = Connect(_server.LocalEndPoint);
            SendText(a, "GET /plain HTTP/1.0\r\n\r\n");
            var ra = new ResponseReader(a);
            var plain = ra.ReadRequired();
            bool plainClosed = ra.AtEnd;
            using var b = Connect(_server.LocalEndPoint);
            SendText(b, "GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            var rb = new ResponseReader(b);
            var kept = rb.ReadRequired();
            SendText(b, "GET /second HTTP/1.0\r\n\r\n");
            var second = rb.ReadRequired();
            using var c = Connect(_server.LocalEndPoint);
            SendText(c, "GET /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            var rc = new ResponseReader(c);
            var big = rc.ReadRequired();
            return (plain, plainClosed, kept, second, big, rc.AtEnd);
        });
        Assert.That(plain.BodyText, Does.StartWith("GET /plain HTTP/1.0"));
        Assert.That(plain.Header("Connection"), Is.EqualTo("close"));
        Assert.That(plainClosed, Is.True);
        Assert.That(kept.Header("Connection"), Is.EqualTo("keep-alive"));
        Assert.That(second.BodyText, Does.StartWith("GET /second HTTP/1.0"));
        Assert.That(big.Header("Transfer-Encoding"), Is.Null, "HTTP/1.0 has no chunked coding");
        Assert.That(big.Header("Content-Length"), Is.Null);
        Assert.That(big.Body.Length, Is.EqualTo(100_000), "the body is delimited by closing the connection");
        Assert.That(bigClosed, Is.True);
    }

    [Test]
    public void DeclaredContentLengthStreamsAndHandlerHeadersAreSent()
    {
        Serve(ctx =>
        {
            ctx.Response.StatusCode = 201;
            ctx.Response.SetHeader("X-Custom", "v1");
            ctx.Response.AddHeader("Set-Cookie", "a=1");
            ctx.Response.AddHeader("Set-Cookie", "b=2");
            ctx.Response.AddHeader("X-Dup", "1");
            ctx.Response.AddHeader("x-dup", "2");
            ctx.Response.SetHeader("X-DUP", "3"); // replaces both, whatever their case, and nothing else
            Assert.That(ctx.Response.Headers.Select(h => h.Key + "=" + h.Value), Is.EqualTo(new[] { "X-Custom=v1", "Set-Cookie=a=1", "Set-Cookie=b=2", "X-DUP=3" }));
            ctx.Response.ContentLength = 40_000;
            Assert.That(() => ctx.Response.SetHeader("Bad\r\nName", "x"), Throws.ArgumentException);
            Assert.That(() => ctx.Response.SetHeader("X-Inject", "a\r\nb: c"), Throws.ArgumentException);
            Assert.That(() => ctx.Response.SetHeader("Transfer-Encoding", "gzip"), Throws.ArgumentException.With.Message.Contains("ContentLength"));
            for (int i = 0; i < 4; i++) ctx.Response.Write(new byte[10_000]);
            Assert.That(ctx.Response.HasStarted, Is.True);
            Assert.That(() => ctx.Response.StatusCode = 500, Throws.InvalidOperationException);
            Assert.That(() => ctx.Response.Write("x"), Throws.InvalidOperationException.With.Message.Contains("ContentLength"));
        });
        var r = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            SendText(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            return new ResponseReader(s).ReadRequired();
        });
        Assert.That(r.Status, Is.EqualTo(201));
        Assert.That(r.Reason, Is.EqualTo("Created"));
        Assert.That(r.Header("Content-Length"), Is.EqualTo("40000"));
        Assert.That(r.Header("X-Custom"), Is.EqualTo("v1"));
        Assert.That(r.Headers.Count(h => h.Key == "Set-Cookie"), Is.EqualTo(2));
        Assert.That(r.Body.Length, Is.EqualTo(40_000));
        Assert.That(r.Header("Server"), Is.EqualTo("GreenRuntime"));
    }

    // ---- bad input ----

    private RawResponse SendRaw(string request, out bool closed)
    {
        var (response, isClosed) = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            SendText(s, request);
            var reader = new ResponseReader(s);
            var r = reader.ReadRequired();
            return (r, reader.AtEnd);
        });
        closed = isClosed;
        return response;
    }

    private void AssertRejected(string request, int status)
    {
        var r = SendRaw(request, out bool closed);
        Assert.That(r.Status, Is.EqualTo(status), $"answer to {request[..Math.Min(60, request.Length)].ReplaceLineEndings("⏎")}");
        Assert.That(r.Header("Connection"), Is.EqualTo("close"));
        Assert.That(closed, Is.True, "an error response closes the connection");
    }

    [TestCase("GARBAGE\r\n\r\n")]
    [TestCase("GET /\r\nHost: x\r\n\r\n")]
    [TestCase("GET  / HTTP/1.1\r\nHost: x\r\n\r\n")]
    [TestCase("GET / HTTP/1.1 \r\nHost: x\r\n\r\n")]
    [TestCase("GE(T / HTTP/1.1\r\nHost: x\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: x\r\nName : v\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: x\r\n folded: v\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: x\r\nA: b\u0001c\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")]
    [TestCase("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [TestCase("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")]
    [TestCase("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")]
    [TestCase("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n")]
    [TestCase("GET /caf\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n")]
    [TestCase("GET / XTTP/1.1\r\nHost: x\r\n\r\n")]
    [TestCase("GET / HTTP/1.1\nHost: x\n\n")] // lines ended by LF alone: refused at once, not after the head's timeout (408)
    [TestCase("GET / HTTP/1.1\r\nHost: x\n\n")]
    public void MalformedRequestsGet400(string request)
    {
        Serve(Describe);
        AssertRejected(request, 400);
    }

    [TestCase("2\r\nab\r\nzz\r\n0\r\n\r\n")]
    [TestCase("2\r\nabc\r\n0\r\n\r\n")]
    [TestCase("2 \r\nab\r\n0\r\n\r\n")]
    [TestCase("10000000000000000\r\n")]
    [TestCase("8000000000000000\r\n")]
    [TestCase("0000000000000000010000000000000000\r\n")]
    [TestCase("2\r\nab\r\n0\r\nbad trailer\r\n\r\n")]
    [TestCase("5\nhello\n0\n\n")] // as above: at once, not after IoTimeout (408)
    public void MalformedChunkedBodiesGet400(string body)
    {
        Serve(Describe);
        AssertRejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body, 400);
    }

    // ---- request-target forms (RFC 9112 §3.2); the expectations are what Kestrel answers to the same bytes ----

    private static void EchoTarget(HttpContext ctx) =>
        ctx.Response.Write($"{ctx.Request.Method} path=[{ctx.Request.Path}] query=[{ctx.Request.QueryString}] host=[{ctx.Request.GetHeader("Host")}]");

    private string Echo(string request)
    {
        var r = SendRaw(request, out _);
        Assert.That(r.Status, Is.EqualTo(200), $"answer to {request[..Math.Min(60, request.Length)].ReplaceLineEndings("⏎")}");
        return Encoding.ASCII.GetString(r.Body);
    }

    [TestCase("http://example.com/a/b?x=1", "example.com", "/a/b", "x=1")]
    [TestCase("http://example.com:80/a", "example.com", "/a", "")]
    [TestCase("http://example.com/a", "example.com:80", "/a", "")]
    [TestCase("https://example.com:443/a", "example.com", "/a", "")]
    [TestCase("http://example.com:8080/a%20b/c%2Fd?x=%41&y", "example.com:8080", "/a%20b/c%2Fd", "x=%41&y")] // still encoded, as origin-form paths are
    [TestCase("http://example.com", "example.com", "/", "")]
    [TestCase("http://example.com?q=1", "example.com", "/", "q=1")]
    [TestCase("http://user:pw@example.com/a", "example.com", "/a", "")]
    [TestCase("http://[::1]:5000/a", "[::1]:5000", "/a", "")]
    [TestCase("http://example.com/a#frag", "example.com", "/a", "")]
    [TestCase("http://Example.COM/a", "example.com", "/a", "")]
    public void AbsoluteFormTargetsGiveTheirPathAndQuery(string target, string host, string path, string query)
    {
        Serve(EchoTarget);
        Assert.That(Echo($"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            Is.EqualTo($"GET path=[{path}] query=[{query}] host=[{host}]"));
    }

    [Test]
    public void AnAbsoluteFormTargetNeedsNoHostInHttp10ButAMatchingOneIfAny()
    {
        Serve(EchoTarget);
        Assert.That(Echo("GET http://example.com/a/b?x=1 HTTP/1.0\r\n\r\n"), Is.EqualTo("GET path=[/a/b] query=[x=1] host=[]"));
        AssertRejected("GET http://example.com/a/b?x=1 HTTP/1.0\r\nHost: other.org\r\n\r\n", 400);
        AssertRejected("GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: other.org\r\n\r\n", 400);
        AssertRejected("GET http://example.com/a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", 400);
        AssertRejected("GET http://example.com/a/b?x=1 HTTP/1.1\r\n\r\n", 400);
    }

    [Test]
    public void AsteriskAndAuthorityFormsAreForOptionsAndConnectOnly()
    {
        Serve(EchoTarget);
        Assert.That(Echo("OPTIONS * HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"), Is.EqualTo("OPTIONS path=[] query=[] host=[example.com]"));
        Assert.That(Echo("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n"),
            Is.EqualTo("CONNECT path=[] query=[] host=[example.com:443]"));
        Assert.That(Echo("CONNECT /a HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"), Is.EqualTo("CONNECT path=[/a] query=[] host=[example.com]"));

        var star = SendRaw("GET * HTTP/1.1\r\nHost: example.com\r\n\r\n", out bool closed);
        Assert.That((star.Status, star.Header("Allow"), star.Header("Connection"), closed), Is.EqualTo((405, "OPTIONS", "close", true)));
        var authority = SendRaw("GET example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", out closed);
        Assert.That((authority.Status, authority.Header("Allow"), authority.Header("Connection"), closed), Is.EqualTo((405, "CONNECT", "close", true)));
    }

    [TestCase("GET HTTP://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n")] // the scheme is matched as sent, as by Kestrel
    [TestCase("GET ftp://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n")]
    [TestCase("GET http:///a HTTP/1.1\r\nHost: example.com\r\n\r\n")]
    [TestCase("GET http://example.com\\a HTTP/1.1\r\nHost: example.com\r\n\r\n")]
    [TestCase("GET a/b HTTP/1.1\r\nHost: example.com\r\n\r\n")]
    [TestCase("OPTIONS *x HTTP/1.1\r\nHost: example.com\r\n\r\n")]
    [TestCase("CONNECT example.com:443 HTTP/1.1\r\nHost: other.org\r\n\r\n")]
    public void MalformedOrMismatchedTargetsGet400(string request)
    {
        Serve(EchoTarget);
        AssertRejected(request, 400);
    }

    [TestCase("0000000000000000005\r\nhello\r\n0\r\n\r\n")]
    [TestCase("00000000000000000000000000000000000000000000000000000000000000000000000000000002\r\nhe\r\n3\r\nllo\r\n00000000000000000000\r\n\r\n")]
    [TestCase("5;name=value;x=\"q s\"\r\nhello\r\n0;last\r\n\r\n")]
    [TestCase("5 ;name=value\r\nhello\r\n0\r\n\r\n")]
    public void ChunkSizesWithLeadingZerosAndExtensionsAreRead(string body)
    {
        Serve(ctx => ctx.Response.Write(ctx.Request.ReadBodyAsString()));
        var r = SendRaw("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body, out _);
        Assert.That((r.Status, Encoding.ASCII.GetString(r.Body)), Is.EqualTo((200, "hello")));
    }

    [Test]
    public void AChunkSizeNearTheLargestValueIsOverTheLimitNotWrappedUnderIt()
    {
        Serve(Describe);
        AssertRejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\n", 413);
        AssertRejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7ffffffffffffffe\r\n", 413);
    }

    [Test]
    public void UnsupportedVersionTransferEncodingAndExpectationAreRefused()
    {
        Serve(Describe);
        AssertRejected("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
        AssertRejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
        AssertRejected("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
        AssertRejected("POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417);
    }

    [Test]
    public void OversizedHeadsGet431Or414()
    {
        Serve(Describe, new HttpServerOptions { MaxRequestHeaderCount = 10, MaxRequestHeadersTotalSize = 2048 });
        var many = string.Concat(Enumerable.Range(0, 11).Select(i => $"X-{i}: v\r\n"));
        AssertRejected($"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n", 431);
        AssertRejected($"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {new string('a', 3000)}\r\n\r\n", 431);
        AssertRejected($"GET /{new string('a', 3000)} HTTP/1.1\r\nHost: x\r\n\r\n", 414);
        var fits = string.Concat(Enumerable.Range(0, 8).Select(i => $"X-{i}: v\r\n")); // + Host + Connection = 10
        Assert.That(SendRaw($"GET / HTTP/1.1\r\nHost: x\r\n{fits}Connection: close\r\n\r\n", out _).Status, Is.EqualTo(200), "ten headers are within the limit");
    }

    [Test]
    public void TheDefaultHeadLimitsAre16KiBAnd100Headers()
    {
        Serve(Describe);
        var many = string.Concat(Enumerable.Range(0, 98).Select(i => $"X-{i}: v\r\n"));
        Assert.That(SendRaw($"GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n", out _).Status, Is.EqualTo(200), "100 header fields are allowed");
        AssertRejected($"GET / HTTP/1.1\r\nHost: x\r\n{many}X-99: v\r\nX-100: v\r\n\r\n", 431);
        AssertRejected($"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {new string('a', 16 * 1024)}\r\n\r\n", 431);
    }

    [Test]
    public void BodiesOverTheLimitGet413()
    {
        bool handlerRan = false;
        Serve(ctx => { if (ctx.Request.Path == "/mark") handlerRan = true; Describe(ctx); }, new HttpServerOptions { MaxRequestBodySize = 1000 });
        AssertRejected("POST /mark HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + new string('a', 1001), 413);
        Assert.That(handlerRan, Is.False, "a declared length over the limit is refused before the handler runs");
        var chunk = new string('a', 600);
        AssertRejected($"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n", 413);
        Assert.That(SendRaw("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" + new string('a', 1000), out _).Status, Is.EqualTo(200));
    }

    [Test]
    public void ASlowlorisClientGets408AndIsClosed()
    {
        int baseline = Hub.AliveCount;
        Serve(Describe, new HttpServerOptions { RequestHeadersTimeout = TimeSpan.FromMilliseconds(200) });
        int serverOwn = Hub.AliveCount;
        var (r, closed, elapsed) = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            var watch = Stopwatch.StartNew();
            SendText(s, "GET / HTTP/1.1\r\nHost: x\r\n");
            Thread.Sleep(100);
            SendText(s, "X-A: 1\r\n"); // still dribbling, but the head's deadline does not move
            var reader = new ResponseReader(s);
            var r = reader.ReadRequired();
            return (r, reader.AtEnd, watch.Elapsed);
        });
        Assert.That(r.Status, Is.EqualTo(408));
        Assert.That(closed, Is.True);
        Assert.That(elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromMilliseconds(150)));
        var silent = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            return ReadToEnd(s).Length; // a client that sends nothing is closed without an answer
        });
        Assert.That(silent, Is.EqualTo(0));
        WaitUntil(() => Hub.AliveCount == serverOwn, "the connection greenlets have ended");
        Assert.That(serverOwn, Is.EqualTo(baseline + 1), "the server's own greenlet is its accept loop");
    }

    [Test]
    public void HandlerExceptionsGive500AndKeepTheConnectionUnlessTheResponseStarted()
    {
        Serve(ctx =>
        {
            if (ctx.Request.Path == "/fail") throw new InvalidOperationException("handler bug");
            if (ctx.Request.Path == "/fail-late")
            {
                ctx.Response.Write(new string('x', 20_000)); // over the buffer: the head is out
                throw new InvalidOperationException("late handler bug");
            }
            Describe(ctx);
        });
        var (failed, after, late, lateError) = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            SendText(s, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
            var reader = new ResponseReader(s);
            var failed = reader.ReadRequired();
            var after = reader.ReadRequired();
            using var s2 = Connect(_server.LocalEndPoint);
            SendText(s2, "GET /fail-late HTTP/1.1\r\nHost: x\r\n\r\n");
            var r2 = new ResponseReader(s2);
            var late = r2.ReadRequired(forHead: true);
            Exception? lateError = null;
            try { r2.Read(); } catch (FormatException e) { lateError = e; }
            return (failed, after, late, lateError);
        });
        Assert.That(failed.Status, Is.EqualTo(500));
        Assert.That(failed.BodyText, Does.Not.Contain("handler bug"), "exception details are logged, not sent");
        Assert.That(after.Status, Is.EqualTo(200), "the connection survived a failure before the response started");
        Assert.That(late.Status, Is.EqualTo(200));
        Assert.That(lateError, Is.Not.Null, "a failure after the head was sent cuts the chunked body short (closed, no last chunk)");
        var logged = Logs.Entries.Where(e => e.EventId.Id == 206).ToList();
        Assert.That(logged, Has.Count.EqualTo(2));
        Assert.That(logged.All(e => e.Category == "GreenRuntime.Servers"), Is.True);
    }

    [Test]
    public void StopClosesIdleKeepAliveConnectionsAtOnce()
    {
        int baseline = Hub.AliveCount;
        Serve(Describe);
        var endPoint = _server.LocalEndPoint;
        var client = Task.Run(() =>
        {
            using var s = Connect(endPoint);
            SendText(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            var reader = new ResponseReader(s);
            var first = reader.ReadRequired();
            return (first, reader.AtEnd); // waits for the server to close the idle connection
        });
        WaitUntil(() => _server.ConnectionCount == 1, "the client is connected");
        Green.Sleep(100);
        var watch = Stopwatch.StartNew();
        _server.Stop(TimeSpan.FromSeconds(5));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(4)), "idle connections do not hold up Stop");
        var (first, closed) = Green.Wait(client, TimeSpan.FromSeconds(10));
        Assert.That(first.Status, Is.EqualTo(200));
        Assert.That(closed, Is.True);
        Assert.That(Hub.AliveCount, Is.EqualTo(baseline));
    }

    [Test]
    public void StopClosesConnectionsThatHaveNotSentARequestYetAtOnce()
    {
        // HttpClient opens connections ahead of its requests and may leave some unused: Stop waited its whole timeout
        // for them, as for a request in progress. Kestrel closes them at once, as idle keep-alive connections are.
        int baseline = Hub.AliveCount;
        Serve(Describe);
        var endPoint = _server.LocalEndPoint;
        var silent = Enumerable.Range(0, 3).Select(_ => Task.Run(() =>
        {
            using var s = Connect(endPoint);
            return new ResponseReader(s).AtEnd; // waits for the server to close the connection
        })).ToList();
        WaitUntil(() => _server.ConnectionCount == 3, "the clients are connected");
        Green.Sleep(100);
        var watch = Stopwatch.StartNew();
        _server.Stop(TimeSpan.FromSeconds(5));
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(4)), "connections with no request do not hold up Stop");
        Assert.That(silent.Select(t => Green.Wait(t, TimeSpan.FromSeconds(10))), Has.All.True, "each was closed");
        Assert.That(Hub.AliveCount, Is.EqualTo(baseline));
    }

    [Test]
    public void AFailedResponseWriteEndsTheResponseEvenWhenTheHandlerSwallowsTheFailure()
    {
        // A client that does not read within IoTimeout fails the write halfway through a chunk. Legacy handler code that
        // swallows every exception writes on: nothing of it may go out, and the half-sent chunk must not be sent again
        // (the body would no longer be what its framing says, on a connection still kept alive).
        const int chunk = 1 << 20, chunks = 8;
        var failures = new List<Exception>();
        Serve(ctx =>
        {
            ctx.Response.ContentLength = (long)chunk * chunks;
            var data = new byte[chunk];
            for (int i = 0; i < chunks; i++)
            {
                Array.Fill(data, (byte)(i + 1));
                try
                {
                    ctx.Response.Write(data);
                }
                catch (Exception e)
                {
                    failures.Add(e);
                }
            }
        }, new HttpServerOptions { IoTimeout = TimeSpan.FromMilliseconds(200) });
        var received = Client(() =>
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
            s.Connect(_server.LocalEndPoint);
            SendText(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            Thread.Sleep(1000); // the server's writes time out meanwhile
            s.ReceiveTimeout = 10_000;
            var all = new MemoryStream();
            var buffer = new byte[65536];
            int n;
            while ((n = s.Receive(buffer)) > 0) all.Write(buffer, 0, n);
            return all.ToArray();
        });
        int bodyStart = received.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        Assert.That(bodyStart, Is.GreaterThan(4), "the head arrived");
        var body = received.AsSpan(bodyStart);
        Assert.That(body.Length, Is.LessThan(chunk * chunks), "the response was cut short and the connection closed");
        int wrong = -1;
        for (int j = 0; j < body.Length && wrong < 0; j++)
            if (body[j] != (byte)(j / chunk + 1)) wrong = j;
        Assert.That(wrong, Is.EqualTo(-1), $"every body byte is where the handler wrote it (of {body.Length} received)");
        Assert.That(failures, Is.Not.Empty);
        Assert.That(failures, Has.All.InstanceOf<IOException>(), "the documented exception");
    }

    [Test]
    public void SlowBodiesAndIdleConnectionsTimeOutWithoutLeakingGreenlets()
    {
        int baseline = Hub.AliveCount;
        Serve(Describe, new HttpServerOptions { IoTimeout = TimeSpan.FromMilliseconds(200), KeepAliveTimeout = TimeSpan.FromMilliseconds(300) });
        var (stalledBody, idleClosed) = Client(() =>
        {
            using var a = Connect(_server.LocalEndPoint);
            SendText(a, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"); // 7 bytes never come
            var stalled = new ResponseReader(a).Read();
            using var b = Connect(_server.LocalEndPoint);
            SendText(b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            var reader = new ResponseReader(b);
            reader.ReadRequired();
            var watch = Stopwatch.StartNew();
            bool closed = reader.AtEnd; // the server closes the idle keep-alive connection
            return (stalled, closed && watch.Elapsed < TimeSpan.FromSeconds(10));
        });
        Assert.That(stalledBody, Is.Not.Null.And.Property("Status").EqualTo(408), "a body that stops arriving fails the handler's read: 408 and close");
        Assert.That(idleClosed, Is.True);
        WaitUntil(() => Hub.AliveCount == baseline + 1, "only the accept loop is left");
    }

    private static readonly HttpServerOptions s_minimumRate100 = new()
    {
        MinRequestBodyDataRate = 100,
        MinRequestBodyDataRateGracePeriod = TimeSpan.FromMilliseconds(300),
    };

    /// <summary>Sends <paramref name="head"/>, then <paramref name="bytesPerStep"/> body bytes every 100 ms until the server
    /// answers or closes (or <paramref name="steps"/> were sent), and reads the response.</summary>
    private (RawResponse? Response, bool Closed, TimeSpan Elapsed) Dribble(string head, int bytesPerStep, int steps)
    {
        using var s = Connect(_server.LocalEndPoint);
        var watch = Stopwatch.StartNew();
        SendText(s, head);
        try
        {
            for (int i = 0; i < steps && !s.Poll(100_000, SelectMode.SelectRead); i++)
                SendText(s, new string('a', bytesPerStep));
        }
        catch (SocketException)
        {
            // closed by the server between the poll and the send
        }
        var reader = new ResponseReader(s);
        var r = reader.Read();
        return (r, reader.AtEnd, watch.Elapsed);
    }

    [Test]
    public void ABodyArrivingSlowerThanTheMinimumRateGets408AndIsClosed()
    {
        // Each byte comes well within IoTimeout (30 s), so only the rate over the whole body can end this request.
        var failures = new List<Exception>();
        Serve(ctx =>
        {
            try
            {
                Describe(ctx);
            }
            catch (IOException e)
            {
                failures.Add(e);
                throw;
            }
        }, s_minimumRate100);
        var (r, closed, elapsed) = Client(() => Dribble("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", bytesPerStep: 1, steps: 1000));
        Assert.That(r, Is.Not.Null.And.Property("Status").EqualTo(408));
        Assert.That(closed, Is.True);
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "the grace period plus a second per 100 bytes, not 1,000 bytes at 10 a second");
        Assert.That(failures, Has.Count.EqualTo(1));
        Assert.That(failures[0].Message, Does.Contain("MinRequestBodyDataRate"));
    }

    [TestCase("Content-Length: 10\r\n\r\n01234", "56789", "0123456789")]
    [TestCase("Transfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n", "5\r\n56789\r\n0\r\n\r\n", "0123456789")]
    [TestCase("Transfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n0\r\nX-Trailer: 1\r\n", "\r\n", "01234")]
    public void AGreenTimeoutAroundABodyReadIsTheHandlersAndLeavesTheBodyReadable(string headAndFirstPart, string rest, string expected)
    {
        // The handler's own timeout is a TimeoutException too: taken for the server's limit, it became a 408 the client
        // never caused, WithTimeout did not see its timeout, and the connection (with a pipelined request) was closed.
        Serve(ctx =>
        {
            var body = new MemoryStream();
            var buffer = new byte[100];
            int timedOut = 0;
            while (true)
            {
                int n = Green.WithTimeout(TimeSpan.FromMilliseconds(100), () => ctx.Request.Body.Read(buffer, 0, buffer.Length), -1);
                if (n == 0) break;
                if (n < 0) timedOut++;
                else body.Write(buffer, 0, n);
            }
            ctx.Response.Write($"{Encoding.ASCII.GetString(body.ToArray())} timed out {(timedOut > 0 ? "yes" : "no")}");
        });
        var (first, second) = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            SendText(s, "POST / HTTP/1.1\r\nHost: x\r\n" + headAndFirstPart);
            Thread.Sleep(400);
            SendText(s, rest + "POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n0");
            var reader = new ResponseReader(s);
            return (reader.Read(), reader.Read());
        });
        Assert.That(first, Is.Not.Null);
        Assert.That((first!.Status, first.BodyText), Is.EqualTo((200, expected + " timed out yes")));
        Assert.That(first.Header("Connection"), Is.Not.EqualTo("close"));
        Assert.That(second, Is.Not.Null, "the pipelined request is answered on the same connection");
        Assert.That((second!.Status, second.BodyText), Is.EqualTo((200, "0 timed out no")));
    }

    [Test]
    public void ABodyArrivingInSmallPiecesAboveTheMinimumRateIsServed()
    {
        Serve(Describe, s_minimumRate100);
        var (r, _, _) = Client(() => Dribble("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 400\r\n\r\n", bytesPerStep: 40, steps: 10)); // 400 bytes/s
        Assert.That(r, Is.Not.Null);
        Assert.That(r!.Status, Is.EqualTo(200));
        Assert.That(r.BodyText, Does.StartWith("POST / HTTP/1.1 len=400 "));
    }

    [Test]
    public void AnUnreadBodyDrainedTooSlowlyEndsTheConnectionAfterTheResponse()
    {
        Serve(ctx => ctx.Response.Write("did not read the body"), s_minimumRate100);
        var (r, closed, elapsed) = Client(() => Dribble("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", bytesPerStep: 1, steps: 1000));
        Assert.That(r, Is.Not.Null);
        Assert.That(r!.Status, Is.EqualTo(200));
        Assert.That(r.Header("Connection"), Is.EqualTo("close"));
        Assert.That(closed, Is.True);
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(10)));
    }

    [Test]
    public void ACrlfAfterABodyLeavesTheConnectionIdleRatherThanStartingARequest()
    {
        Serve(Describe, new HttpServerOptions { RequestHeadersTimeout = TimeSpan.FromMilliseconds(300) });
        var (first, second) = Client(() =>
        {
            using var s = Connect(_server.LocalEndPoint);
            var reader = new ResponseReader(s);
            SendText(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\n"); // the stray CRLF some clients add
            var first = reader.ReadRequired();
            Thread.Sleep(900); // three head timeouts: an idle connection waits for the keep-alive timeout instead
            SendText(s, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
            return (first, reader.Read());
        });
        Assert.That(first.Status, Is.EqualTo(200));
        Assert.That(second, Is.Not.Null, "the connection was still open");
        Assert.That(second!.Status, Is.EqualTo(200), "no 408 for a request that never began");
        Assert.That(second.BodyText, Does.StartWith("GET /next "));
    }

    [Test]
    public void StopLetsARequestInProgressFinishWithConnectionClose()
    {
        bool started = false;
        Serve(ctx =>
        {
            started = true;
            while (_server.IsAccepting) Green.Sleep(5); // until Stop has begun (accepting ends first)
            Green.Sleep(50);
            ctx.Response.Write("finished");
        });
        var endPoint = _server.LocalEndPoint;
        var client = Task.Run(() =>
        {
            using var s = Connect(endPoint);
            SendText(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            var reader = new ResponseReader(s);
            return (reader.ReadRequired(), reader.AtEnd);
        });
        WaitUntil(() => started, "the request is in progress");
        _server.Stop(TimeSpan.FromSeconds(5));
        var (response, closed) = Green.Wait(client, TimeSpan.FromSeconds(10));
        Assert.That(response.BodyText, Is.EqualTo("finished"));
        Assert.That(response.Header("Connection"), Is.EqualTo("close"));
        Assert.That(closed, Is.True);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void MaxConnectionsQueuesExtraClientsInsteadOfFailingThem(bool withPool)
    {
        int running = 0, peak = 0;
        Serve(ctx =>
        {
            running++;
            peak = Math.Max(peak, running);
            Green.Sleep(100);
            running--;
            ctx.Response.Write("ok");
        }, withPool ? new HttpServerOptions { Pool = new GreenPool(3) } : new HttpServerOptions { MaxConnections = 3 });
        var bodies = ClientAsync(async () =>
        {
            using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 10 });
            var all = Enumerable.Range(0, 10).Select(_ => client.GetStringAsync($"{_base}/")).ToList();
            return await Task.WhenAll(all);
        });
        Assert.That(bodies, Is.All.EqualTo("ok"));
        Assert.That(peak, Is.EqualTo(3));
    }

    [Test]
    public void OptionsAreValidated()
    {
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { MaxRequestHeaderCount = 0 }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { RequestHeadersTimeout = TimeSpan.Zero }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { ServerHeader = "a\r\nb" }), Throws.ArgumentException);
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { MinRequestBodyDataRate = 0 }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { MinRequestBodyDataRate = double.NaN }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { MinRequestBodyDataRateGracePeriod = TimeSpan.Zero }), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => new HttpServer(AnyLoopbackPort, Describe, new HttpServerOptions { Pool = new GreenPool(2), MaxConnections = 5 }), Throws.ArgumentException.With.Message.Contains("either Pool or MaxConnections"));
    }

    /// <summary>A stream without a length, so HttpClient must send it chunked.</summary>
    private sealed class NonSeekableStream(byte[] data) : Stream
    {
        private int _position;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, 10_000), data.Length - _position);
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
