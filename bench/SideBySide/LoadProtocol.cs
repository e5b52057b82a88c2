using System.Buffers.Text;
using System.Net.Sockets;
using System.Text;

namespace GreenRuntime.SideBySide;

/// <summary>
/// What one request/response exchange of <see cref="LoadClient"/> looks like on the wire: the bytes sent, and how
/// to tell that the whole response has arrived. The client stays protocol-agnostic so the same timing code
/// measures echo and HTTP servers.
/// </summary>
internal abstract class LoadProtocol
{
    /// <summary>The bytes sent for each request (the same every time: the servers under test do not look at them).</summary>
    public abstract ReadOnlyMemory<byte> Request { get; }

    /// <summary>
    /// Reads exactly one response; throws <see cref="IOException"/> if the server closes or answers nonsense.
    /// Returns false when the server announced it closes the connection after this response (HTTP's
    /// <c>Connection: close</c>; HttpListener says so every 100 requests), so the client reconnects instead of failing.
    /// </summary>
    public abstract ValueTask<bool> ReadResponseAsync(Socket socket, byte[] buffer, CancellationToken cancel);

    public static LoadProtocol Parse(string name) => name switch
    {
        "echo" => new Echo(),
        "http" => new Http(),
        _ => throw new ArgumentException($"unknown load protocol '{name}'; use echo or http"),
    };

    /// <summary>64 bytes out, the same 64 back: the shape of the anchors' echo clients.</summary>
    private sealed class Echo : LoadProtocol
    {
        private const int Size = 64;
        private static readonly byte[] Message = Enumerable.Repeat((byte)'x', Size).ToArray();

        public override ReadOnlyMemory<byte> Request => Message;

        public override async ValueTask<bool> ReadResponseAsync(Socket socket, byte[] buffer, CancellationToken cancel)
        {
            int got = 0;
            while (got < Size)
            {
                int n = await socket.ReceiveAsync(buffer.AsMemory(got, Size - got), SocketFlags.None, cancel);
                if (n == 0) throw new IOException("the echo server closed the connection");
                got += n;
            }
            return true;
        }
    }

    /// <summary>
    /// A keep-alive HTTP/1.1 GET. Responses must carry Content-Length, which every server under test sends for its
    /// small fixed body; the request is not pipelined, so nothing follows the response in the buffer.
    /// </summary>
    private sealed class Http : LoadProtocol
    {
        private static readonly byte[] Get = Encoding.ASCII.GetBytes("GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

        public override ReadOnlyMemory<byte> Request => Get;

        public override async ValueTask<bool> ReadResponseAsync(Socket socket, byte[] buffer, CancellationToken cancel)
        {
            int have = 0, total = -1;
            bool keepAlive = true;
            while (total < 0 || have < total)
            {
                if (have == buffer.Length) throw new IOException("the response does not fit the client's buffer");
                int n = await socket.ReceiveAsync(buffer.AsMemory(have), SocketFlags.None, cancel);
                if (n == 0) throw new IOException("the HTTP server closed the connection without announcing it");
                have += n;
                if (total < 0) (total, keepAlive) = ParseHead(buffer.AsSpan(0, have));
            }
            if (have > total) throw new IOException("the HTTP server sent more than one response");
            return keepAlive;
        }

        /// <summary>Head plus body length once the head is complete (-1 while it is not), and whether the connection stays open.</summary>
        private static (int Total, bool KeepAlive) ParseHead(ReadOnlySpan<byte> data)
        {
            int headEnd = data.IndexOf("\r\n\r\n"u8);
            if (headEnd < 0) return (-1, true);
            var head = data[..headEnd];
            if (!head.StartsWith("HTTP/1.1 200"u8))
                throw new IOException("the HTTP server did not answer HTTP/1.1 200: " + Encoding.ASCII.GetString(head[..Math.Min(head.Length, 60)]));
            int length = -1;
            bool keepAlive = true;
            foreach (var range in head.Split("\r\n"u8))
            {
                var line = head[range];
                int colon = line.IndexOf((byte)':');
                if (colon < 0) continue;
                var name = line[..colon];
                var value = line[(colon + 1)..].Trim((byte)' ');
                if (Ascii.EqualsIgnoreCase(name, "Content-Length"u8) && !Utf8Parser.TryParse(value, out length, out _))
                    throw new IOException("the HTTP server sent a malformed Content-Length");
                if (Ascii.EqualsIgnoreCase(name, "Connection"u8) && Ascii.EqualsIgnoreCase(value, "close"u8))
                    keepAlive = false;
            }
            if (length < 0) throw new IOException("the HTTP response has no Content-Length (chunked responses are not expected from these servers)");
            return (headEnd + 4 + length, keepAlive);
        }
    }
}
