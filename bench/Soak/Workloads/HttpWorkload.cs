using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Servers;

namespace GreenRuntime.Soak.Workloads;

/// <summary>
/// The <see cref="HttpServer"/> under good keep-alive requests, pipelined requests, malformed requests, oversized
/// heads and bodies, slowloris clients and clients that vanish mid-body. Invariants: every good request gets the
/// right status and body; every bad one gets its error status (or a close); the server closes what it must close
/// (no client waits forever); when quiet, the server holds no connection.
/// </summary>
internal sealed class HttpWorkload(SoakContext context) : Workload(context, "http")
{
    private enum Behaviour { Good, Pipelined, Malformed, HugeHead, HugeBody, Slowloris, VanishMidBody }

    private const int MaxBody = 512 * 1024;
    private static readonly TimeSpan HeadTimeout = TimeSpan.FromSeconds(2);
    private HttpServer? _server;
    private long _goodAnswers, _errorAnswers;

    public override void Start()
    {
        _server = new HttpServer(new IPEndPoint(IPAddress.Loopback, 0), Handle, new HttpServerOptions
        {
            MaxRequestBodySize = MaxBody,
            MaxRequestHeadersTotalSize = 8 * 1024,
            RequestHeadersTimeout = HeadTimeout,
            KeepAliveTimeout = TimeSpan.FromSeconds(5),
            IoTimeout = TimeSpan.FromSeconds(10),
        });
        _server.Start();
    }

    public override void Stop() => _server?.Stop(TimeSpan.FromSeconds(5));

    public override void CheckQuiet()
    {
        // Clients have all ended; the server may still be finishing its side of the last closes.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (_server!.ConnectionCount > 0 && DateTime.UtcNow < deadline) Green.Sleep(20);
        if (_server.ConnectionCount > 0)
            Ledger.Violate($"http: the server still holds {_server.ConnectionCount} connection(s) 15 s after every client ended.");
    }

    /// <summary>GET /gen?n=N&amp;s=S answers N bytes of seed S; POST /echo answers the body's length and checksum;
    /// /sleep sleeps (patched Thread.Sleep) first.</summary>
    private static void Handle(HttpContext ctx)
    {
        var request = ctx.Request;
        if (request.Path == "/sleep") Thread.Sleep(5);
        byte[] body;
        if (request.Path is "/gen" or "/sleep")
        {
            var query = System.Web.HttpUtility.ParseQueryString(request.QueryString);
            body = new byte[int.Parse(query["n"]!)];
            Payload.Fill(body, uint.Parse(query["s"]!));
        }
        else
        {
            var ms = new MemoryStream();
            request.Body.CopyTo(ms);
            body = Encoding.ASCII.GetBytes($"{ms.Length} {Payload.Checksum(ms.GetBuffer().AsSpan(0, (int)ms.Length))}");
        }
        ctx.Response.ContentType = "application/octet-stream";
        ctx.Response.ContentLength = body.Length;
        ctx.Response.Write(body);
    }

    protected override IReadOnlyList<Greenlet> Round()
    {
        var batch = new List<Greenlet>();
        int clients = Random.Next(3, 9);
        for (int i = 0; i < clients; i++)
        {
            var behaviour = Random.Next(100) switch
            {
                < 40 => Behaviour.Good,
                < 55 => Behaviour.Pipelined,
                < 65 => Behaviour.Malformed,
                < 72 => Behaviour.HugeHead,
                < 80 => Behaviour.HugeBody,
                < 88 => Behaviour.Slowloris,
                _ => Behaviour.VanishMidBody,
            };
            var requests = Enumerable.Range(0, Random.Next(1, 5)).Select(_ => NewRequest()).ToList();
            bool faulty = behaviour is Behaviour.Slowloris or Behaviour.VanishMidBody or Behaviour.HugeBody
                or Behaviour.Malformed or Behaviour.HugeHead;
            // A peer that breaks the protocol may see its connection reset while it still writes: acceptable for it.
            batch.Add(Ledger.Spawn($"http.client.{behaviour}", () => Client(behaviour, requests),
                faulty ? EchoWorkload.IsNetworkError : null));
        }
        return batch;
    }

    private sealed record Request(byte[] Bytes, Func<Response, string?> Check);

    private Request NewRequest()
    {
        if (Random.Next(2) == 0)
        {
            int n = Payload.RandomSize(Random);
            uint seed = (uint)Random.Next();
            string path = Random.Next(4) == 0 ? "/sleep" : "/gen";
            var head = $"GET {path}?n={n}&s={seed} HTTP/1.1\r\nHost: soak\r\n\r\n";
            return new Request(Encoding.ASCII.GetBytes(head), r =>
            {
                var expected = new byte[n];
                Payload.Fill(expected, seed);
                return r.Status != 200 ? $"status {r.Status}" : r.Body.AsSpan().SequenceEqual(expected) ? null : $"a {n}-byte generated body came back different";
            });
        }
        else
        {
            var body = new byte[Math.Min(Payload.RandomSize(Random), MaxBody)];
            Random.NextBytes(body);
            var head = $"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: {body.Length}\r\n\r\n";
            var expected = $"{body.Length} {Payload.Checksum(body)}";
            return new Request([.. Encoding.ASCII.GetBytes(head), .. body], r =>
                r.Status != 200 ? $"status {r.Status}" : Encoding.ASCII.GetString(r.Body) == expected ? null : $"echo answer '{Encoding.ASCII.GetString(r.Body)}' instead of '{expected}'");
        }
    }

    private void Client(Behaviour behaviour, List<Request> requests)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Connect(_server!.LocalEndPoint);
        var reader = new ResponseReader(socket);
        switch (behaviour)
        {
            case Behaviour.Good:
                foreach (var request in requests)
                {
                    socket.Send(request.Bytes);
                    Expect(request, reader.Read(), behaviour);
                }
                break;
            case Behaviour.Pipelined:
                socket.Send(requests.SelectMany(r => r.Bytes).ToArray());
                foreach (var request in requests) Expect(request, reader.Read(), behaviour);
                break;
            case Behaviour.Malformed:
                socket.Send(Encoding.ASCII.GetBytes("GET /\u0001bad HTTP/1.1 extra\r\nHost soak\r\n\r\n"));
                ExpectError(reader, 400, behaviour);
                break;
            case Behaviour.HugeHead:
                socket.Send(Encoding.ASCII.GetBytes($"GET / HTTP/1.1\r\nHost: soak\r\nX-Big: {new string('a', 12 * 1024)}\r\n\r\n"));
                ExpectError(reader, 431, behaviour);
                break;
            case Behaviour.HugeBody:
                socket.Send(Encoding.ASCII.GetBytes($"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: {MaxBody + 1}\r\n\r\n"));
                ExpectError(reader, 413, behaviour);
                break;
            case Behaviour.Slowloris:
                // A byte every 300 ms never completes the head within the server's 2 s limit: 408, then a close.
                var head = Encoding.ASCII.GetBytes("GET /slow HTTP/1.1\r\nHost: soak\r\nX-Slow: " + new string('s', 40));
                var watchdog = GreenTimeout.Start(TimeSpan.FromSeconds(30));
                try
                {
                    foreach (var b in head)
                    {
                        if (socket.Poll(0, SelectMode.SelectRead)) break; // the server answered or closed
                        socket.Send([b]);
                        Thread.Sleep(300);
                    }
                    ExpectError(reader, 408, behaviour);
                }
                catch (GreenTimeoutException e) when (e.Scope == watchdog)
                {
                    Ledger.Violate("http: the server kept a slowloris connection open for 30 s (its head timeout is 2 s).");
                }
                finally { watchdog.Cancel(); }
                break;
            case Behaviour.VanishMidBody:
                socket.Send(Encoding.ASCII.GetBytes($"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: {MaxBody}\r\n\r\n"));
                socket.Send(new byte[Random.Next(1, 20_000)]);
                socket.LingerState = new LingerOption(true, 0);
                socket.Close();
                break;
        }
    }

    private void Expect(Request request, Response? response, Behaviour behaviour)
    {
        if (response == null)
        {
            Ledger.Violate($"http: a {behaviour} client's good request got no answer (connection closed).");
            throw new DeliberateException("no answer");
        }
        if (request.Check(response) is { } problem)
        {
            Ledger.Violate($"http: a {behaviour} client's good request got a wrong answer: {problem}.");
            throw new DeliberateException("wrong answer");
        }
        _goodAnswers++;
    }

    private void ExpectError(ResponseReader reader, int status, Behaviour behaviour)
    {
        Response? response;
        try { response = reader.Read(); }
        catch (SocketException) { response = null; } // reset after the answer: acceptable, the server closed
        if (response != null && response.Status != status)
            Ledger.Violate($"http: a {behaviour} client got status {response.Status} instead of {status}.");
        if (response != null) _errorAnswers++;
        // Every error closes the connection: what follows must be the end of the stream.
        try
        {
            if (response != null && reader.Read() is { } extra)
                Ledger.Violate($"http: after a {status} answer the server sent another response ({extra.Status}) instead of closing.");
        }
        catch (SocketException) { }
    }

    public override string Progress() => $"http {_goodAnswers} good/{_errorAnswers} error answers ok";

    private sealed record Response(int Status, byte[] Body);

    /// <summary>A minimal HTTP/1.1 response reader over a blocking socket (Content-Length framing, or to EOF).</summary>
    private sealed class ResponseReader(Socket socket)
    {
        private byte[] _buffer = new byte[64 * 1024];
        private int _start, _end;

        /// <summary>The next response, or null at a clean end of stream before any byte of it.</summary>
        public Response? Read()
        {
            int headEnd;
            while ((headEnd = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n\r\n"u8)) < 0)
                if (!Fill())
                {
                    if (_end == _start) return null;
                    throw new InvalidDataException($"the response head ended early: '{Encoding.ASCII.GetString(_buffer, _start, _end - _start)}'");
                }
            var head = Encoding.ASCII.GetString(_buffer, _start, headEnd);
            _start += headEnd + 4;
            var lines = head.Split("\r\n");
            int status = int.Parse(lines[0].Split(' ')[1]);
            long? length = null;
            foreach (var line in lines.Skip(1))
                if (line.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase))
                    length = long.Parse(line.AsSpan(15).Trim());
            var body = new MemoryStream();
            while (length is not { } l || body.Length < l)
            {
                if (_start == _end && !Fill()) break;
                int take = (int)Math.Min(_end - _start, (length ?? long.MaxValue) - body.Length);
                body.Write(_buffer, _start, take);
                _start += take;
            }
            if (length is { } expected && body.Length != expected)
                throw new InvalidDataException($"the response body ended after {body.Length} of {expected} bytes");
            return new Response(status, body.ToArray());
        }

        private bool Fill()
        {
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length) Array.Resize(ref _buffer, _buffer.Length * 2);
            int n = socket.Receive(_buffer, _end, _buffer.Length - _end, SocketFlags.None);
            _end += n;
            return n > 0;
        }
    }
}
