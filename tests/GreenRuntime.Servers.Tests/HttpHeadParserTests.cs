using System.Text;

namespace GreenRuntime.Servers.Tests;

/// <summary>The request-head parser fed bytes directly: no sockets, no hub.</summary>
public class HttpHeadParserTests
{
    private static readonly HttpServerOptions Defaults = new();

    private static byte[] Bytes(string s) => Encoding.Latin1.GetBytes(s);

    private static HttpRequestHead Parse(string head, HttpServerOptions? options = null) =>
        HttpHeadParser.Parse(Bytes(head), options ?? Defaults);

    private static int Status(string head, HttpServerOptions? options = null) =>
        Assert.Throws<HttpProtocolException>(() => Parse(head, options))!.Status;

    [Test]
    public void AGoodRequestKeepsItsFieldsInOrderAsSent()
    {
        var head = Parse("GET /a/b?x=1 HTTP/1.1\r\nHost: example\r\nX-Custom:  spaced value \t\r\nAccept: */*\r\nx-custom: second\r\n\r\n");
        Assert.That(head.Method, Is.EqualTo("GET"));
        Assert.That(head.Target, Is.EqualTo("/a/b?x=1"));
        Assert.That(head.Http10, Is.False);
        Assert.That(head.Headers, Is.EqualTo(new KeyValuePair<string, string>[]
        {
            new("Host", "example"), new("X-Custom", "spaced value"), new("Accept", "*/*"), new("x-custom", "second"),
        }));
        Assert.That(head.ContentLength, Is.Null);
        Assert.That(head.Chunked, Is.False);
        Assert.That(head.KeepAlive, Is.True, "HTTP/1.1 keeps the connection by default");
        Assert.That(head.Close, Is.False);
    }

    [Test]
    public void HeaderValuesAreLatin1AndCommonNamesAreShared()
    {
        var head = Parse("POST /p HTTP/1.1\r\nHost: h\r\nX-Name: caf\u00e9\r\nContent-Length: 3\r\n\r\n");
        Assert.That(head.Headers[1].Value, Is.EqualTo("caf\u00e9"));
        Assert.That(head.ContentLength, Is.EqualTo(3));
        Assert.That(head.Headers[0].Key, Is.SameAs("Host"), "a common name is not allocated per request");
        Assert.That(head.Method, Is.SameAs("POST"));
    }

    [Test]
    public void Http10ClosesUnlessItAsksForKeepAlive()
    {
        var plain = Parse("GET / HTTP/1.0\r\n\r\n");
        Assert.That((plain.Http10, plain.KeepAlive), Is.EqualTo((true, false)), "HTTP/1.0 needs no Host");
        var kept = Parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        Assert.That(kept.KeepAlive, Is.True);
        var closed = Parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n");
        Assert.That((closed.Close, closed.KeepAlive), Is.EqualTo((true, false)));
    }

    [Test]
    public void PipelinedHeadsAreFramedOneAfterTheOther()
    {
        var bytes = Bytes("\r\n\r\nGET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HT");
        var pending = bytes.AsSpan();
        var targets = new List<string>();
        while (true)
        {
            pending = pending[HttpHeadParser.LeadingEmptyLines(pending)..];
            int length = HttpHeadParser.FindHeadEnd(pending, 0, Defaults.MaxRequestHeadersTotalSize);
            if (length < 0) break;
            targets.Add(HttpHeadParser.Parse(pending[..length], Defaults).Target);
            pending = pending[length..];
        }
        Assert.That(targets, Is.EqualTo(new[] { "/1", "/2" }));
        Assert.That(Encoding.ASCII.GetString(pending), Is.EqualTo("GET /3 HT"), "the incomplete third head stays buffered");
    }

    [Test]
    public void AHeadFedByteByByteIsFoundWhenItsLastByteArrives()
    {
        var bytes = Bytes("GET / HTTP/1.1\r\nHost: h\r\n\r\nNEXT");
        int scanned = 0, found = -1, have = 0;
        while (found < 0)
        {
            have++;
            found = HttpHeadParser.FindHeadEnd(bytes.AsSpan(0, have), scanned, 1024);
            scanned = have; // the next call resumes where this one stopped, as the connection does
        }
        Assert.That(have, Is.EqualTo(bytes.Length - 4), "found when the final LF arrived, not before");
        Assert.That(found, Is.EqualTo(bytes.Length - 4));
    }

    [TestCase("GET /\r\nHost: h\r\n\r\n", 400)]
    [TestCase("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400)]
    [TestCase("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400)]
    [TestCase("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400)]
    [TestCase("GET /\u00e9 HTTP/1.1\r\nHost: h\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\nX: y\r\nHost: h\r\n\r\n", 400)]
    [TestCase("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505)]
    [TestCase("GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\n: empty name\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nName : space before colon\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nX: bell\u0007\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 12a\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1234567890123456789\r\n\r\n", 400)]
    [TestCase("GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417)]
    public void MalformedHeadsAreRefusedWithTheirStatus(string head, int status) =>
        Assert.That(Status(head), Is.EqualTo(status));

    [Test]
    public void RepeatedEqualContentLengthsAreOneLength()
    {
        Assert.That(Parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").ContentLength, Is.EqualTo(5));
    }

    [Test]
    public void ABodyOverTheLimitIsRefusedBeforeItIsRead()
    {
        var options = new HttpServerOptions { MaxRequestBodySize = 10 };
        Assert.That(Status("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", options), Is.EqualTo(413));
        Assert.That(Parse("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", options).ContentLength, Is.EqualTo(10));
    }

    [Test]
    public void OversizedHeadsAre414ForTheRequestLineAnd431ForTheFields()
    {
        const int limit = 64;
        var longLine = Bytes("GET /" + new string('a', 100) + " HTTP/1.1\r\n");
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.FindHeadEnd(longLine, 0, limit))!.Status, Is.EqualTo(414));
        var longFields = Bytes("GET / HTTP/1.1\r\nHost: h\r\nX: " + new string('b', 100));
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.FindHeadEnd(longFields, 0, limit))!.Status, Is.EqualTo(431));
        var completeButLong = Bytes("GET / HTTP/1.1\r\nHost: h\r\nX: " + new string('b', 40) + "\r\n\r\n");
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.FindHeadEnd(completeButLong, 0, limit))!.Status, Is.EqualTo(431));
        var fits = Bytes("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        Assert.That(HttpHeadParser.FindHeadEnd(fits, 0, fits.Length), Is.EqualTo(fits.Length), "a head of exactly the limit fits");
    }

    [Test]
    public void TooManyFieldsAre431()
    {
        var options = new HttpServerOptions { MaxRequestHeaderCount = 3 };
        Assert.That(Parse("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", options).Headers, Has.Count.EqualTo(3));
        Assert.That(Status("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", options), Is.EqualTo(431));
    }

    [Test]
    public void ChunkedFramingIsAcceptedAloneAndCaseInsensitively()
    {
        var head = Parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
        Assert.That((head.Chunked, head.ContentLength, head.KeepAlive), Is.EqualTo((true, (long?)null, true)));
    }

    [TestCase("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400, Description = "both framings: request smuggling")]
    [TestCase("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400)]
    [TestCase("Transfer-Encoding: gzip, chunked\r\n", 501)]
    [TestCase("Transfer-Encoding: gzip\r\n", 501)]
    [TestCase("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 501, Description = "chunked twice is two codings")]
    [TestCase("Transfer-Encoding: chunked,\r\n", 400)]
    [TestCase("Transfer-Encoding: ,chunked\r\n", 400)]
    public void ChunkedEdgeCasesOfTheHeadAreRefused(string fields, int status) =>
        Assert.That(Status("POST / HTTP/1.1\r\nHost: h\r\n" + fields + "\r\n"), Is.EqualTo(status));

    [Test]
    public void ChunkedOverHttp10ClosesTheConnectionAfterwards()
    {
        var head = Parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n");
        Assert.That((head.Chunked, head.Close, head.KeepAlive), Is.EqualTo((true, true, false)));
    }

    [Test]
    public void ExpectContinueIsHonouredOnlyWhenABodyFollowsOnHttp11()
    {
        Assert.That(Parse("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n").ExpectContinue, Is.True);
        Assert.That(Parse("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n").ExpectContinue, Is.True);
        Assert.That(Parse("GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n").ExpectContinue, Is.False, "no body to wait for");
        Assert.That(Parse("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").ExpectContinue, Is.False, "HTTP/1.0 clients do not wait");
    }

    [TestCase("0", 0L)]
    [TestCase("1a", 26L)]
    [TestCase("FF", 255L)]
    [TestCase("a;name=value", 10L)]
    [TestCase("a ;ext", 10L)]
    [TestCase("a\t;ext", 10L)]
    [TestCase("fffffffffffffff", 0xfffffffffffffffL)]
    [TestCase("1000000000000000", 0x1000000000000000L)]
    [TestCase("7fffffffffffffff", long.MaxValue)]
    [TestCase("0000000000000000005", 5L)] // leading zeros: 1*HEXDIG, the value is what counts
    [TestCase("00000000000000000000000000000000000000000000000000000000000000000000000000000000a;ext", 10L)]
    [TestCase("00000000000000000000", 0L)]
    public void ChunkSizesAreHexWithOptionalExtensions(string line, long size) =>
        Assert.That(HttpHeadParser.ParseChunkSize(Bytes(line)), Is.EqualTo(size));

    [TestCase("")]
    [TestCase(";ext")]
    [TestCase("g")]
    [TestCase("-1")]
    [TestCase("0x10")]
    [TestCase("10 ")]
    [TestCase("10 x")]
    [TestCase("8000000000000000")] // over long.MaxValue: refused, not wrapped
    [TestCase("10000000000000005")]
    [TestCase("0000ffffffffffffffff")]
    [TestCase("5;ext\u0001")]
    public void MalformedChunkSizeLinesAre400(string line) =>
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.ParseChunkSize(Bytes(line)))!.Status, Is.EqualTo(400));

    [Test]
    public void TrailerFieldsAreCheckedLikeHeaderFields()
    {
        Assert.DoesNotThrow(() => HttpHeadParser.CheckTrailerField(Bytes("Checksum: abc")));
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.CheckTrailerField(Bytes("no colon")))!.Status, Is.EqualTo(400));
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.CheckTrailerField(Bytes("Bad Name: x")))!.Status, Is.EqualTo(400));
        Assert.That(Assert.Throws<HttpProtocolException>(() => HttpHeadParser.CheckTrailerField(Bytes("X: \u0000")))!.Status, Is.EqualTo(400));
    }

    [Test]
    public void AHeadWithoutItsFinalEmptyLineIsACallerError() =>
        Assert.Throws<ArgumentException>(() => HttpHeadParser.Parse(Bytes("GET / HTTP/1.1\r\nHost: h\r\n"), Defaults));
}
