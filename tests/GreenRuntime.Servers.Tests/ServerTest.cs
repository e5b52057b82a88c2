using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.Tests;

namespace GreenRuntime.Servers.Tests;

/// <summary>
/// Servers run on the test's hub (the test thread); clients run on thread-pool threads and the test waits for
/// them with Green.Wait, so the hub keeps serving meanwhile.
/// </summary>
public abstract class ServerTest : HubTest
{
    protected static readonly IPEndPoint AnyLoopbackPort = new(IPAddress.Loopback, 0);

    /// <summary>Runs <paramref name="client"/> on the thread pool and waits for it cooperatively.</summary>
    protected static T Client<T>(Func<T> client, int timeoutSeconds = 30) =>
        Green.Wait(Task.Run(client), TimeSpan.FromSeconds(timeoutSeconds));

    protected static void Client(Action client, int timeoutSeconds = 30) =>
        Green.Wait(Task.Run(client), TimeSpan.FromSeconds(timeoutSeconds));

    protected static T ClientAsync<T>(Func<Task<T>> client, int timeoutSeconds = 30) =>
        Green.Wait(Task.Run(client), TimeSpan.FromSeconds(timeoutSeconds));

    /// <summary>Lets the hub run until <paramref name="condition"/> holds; fails after a generous timeout.</summary>
    protected static void WaitUntil(Func<bool> condition, string what, int timeoutSeconds = 10)
    {
        var deadline = DateTime.UtcNow.AddSeconds(timeoutSeconds);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"Timed out waiting until {what}.");
            Green.Sleep(5);
        }
    }

    protected static Socket Connect(EndPoint endPoint)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        s.Connect(endPoint);
        s.ReceiveTimeout = 15_000;
        s.SendTimeout = 15_000;
        return s;
    }

    protected static void SendText(Socket s, string text) => s.Send(Encoding.Latin1.GetBytes(text));

    /// <summary>Reads until the peer closes (or resets) the connection.</summary>
    protected static byte[] ReadToEnd(Socket s)
    {
        var all = new MemoryStream();
        var buffer = new byte[16 * 1024];
        try
        {
            int n;
            while ((n = s.Receive(buffer)) > 0) all.Write(buffer, 0, n);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
        }
        return all.ToArray();
    }
}

/// <summary>One parsed HTTP response, as a strict client sees it.</summary>
public sealed record RawResponse(string Version, int Status, string Reason, List<KeyValuePair<string, string>> Headers, byte[] Body)
{
    public string? Header(string name) =>
        Headers.Where(h => h.Key.Equals(name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).FirstOrDefault();

    public string BodyText => Encoding.UTF8.GetString(Body);
}

/// <summary>
/// A strict HTTP/1.1 response reader over a raw socket: it throws FormatException on anything that is not a
/// well-formed response, so tests can tell "well-formed response" from "garbage".
/// </summary>
public sealed class ResponseReader(Socket socket)
{
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start, _end;
    private bool _eof;

    /// <summary>Whether the peer closed and every byte was consumed.</summary>
    public bool AtEnd
    {
        get
        {
            if (_start < _end) return false;
            if (!_eof) Fill();
            return _start == _end && _eof;
        }
    }

    /// <summary>Reads the next response; null if the connection ended cleanly before one began.</summary>
    public RawResponse? Read(bool forHead = false)
    {
        while (true)
        {
            string? statusLine = ReadLine();
            if (statusLine == null) return null;
            var parts = statusLine.Split(' ', 3);
            if (parts.Length < 2 || !parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal) || parts[1].Length != 3 || !int.TryParse(parts[1], out int status))
                throw new FormatException($"Bad status line \"{statusLine}\".");
            var headers = new List<KeyValuePair<string, string>>();
            string? line;
            while ((line = ReadLine()) is { Length: > 0 })
            {
                int colon = line.IndexOf(':');
                if (colon <= 0) throw new FormatException($"Bad header line \"{line}\".");
                headers.Add(new(line[..colon], line[(colon + 1)..].Trim()));
            }
            if (line == null) throw new FormatException("The connection ended inside a response head.");
            if (status == 100) continue; // interim response
            var response = new RawResponse(parts[0], status, parts.Length > 2 ? parts[2] : "", headers, []);
            if (forHead || status is 204 or 304) return response;
            var te = response.Header("Transfer-Encoding");
            var cl = response.Header("Content-Length");
            if (te != null)
            {
                if (!te.Equals("chunked", StringComparison.OrdinalIgnoreCase)) throw new FormatException($"Unexpected Transfer-Encoding {te}.");
                return response with { Body = ReadChunked() };
            }
            if (cl != null)
            {
                if (!long.TryParse(cl, out long length) || length < 0) throw new FormatException($"Bad Content-Length {cl}.");
                return response with { Body = ReadExactly((int)length) };
            }
            // Close-delimited body.
            var rest = new MemoryStream();
            while (true)
            {
                if (_start == _end && !Fill()) break;
                rest.Write(_buffer, _start, _end - _start);
                _start = _end;
            }
            return response with { Body = rest.ToArray() };
        }
    }

    public RawResponse ReadRequired(bool forHead = false) => Read(forHead) ?? throw new FormatException("The connection closed before a response.");

    private byte[] ReadChunked()
    {
        var body = new MemoryStream();
        while (true)
        {
            var sizeLine = ReadLine() ?? throw new FormatException("The connection ended inside a chunked body.");
            int semi = sizeLine.IndexOf(';');
            var hex = semi >= 0 ? sizeLine[..semi] : sizeLine;
            int size = Convert.ToInt32(hex.Trim(), 16);
            if (size == 0)
            {
                string? trailer;
                while ((trailer = ReadLine()) is { Length: > 0 }) { }
                if (trailer == null) throw new FormatException("The connection ended inside chunked trailers.");
                return body.ToArray();
            }
            body.Write(ReadExactly(size));
            if (ReadLine() != "") throw new FormatException("A chunk is not followed by CRLF.");
        }
    }

    private byte[] ReadExactly(int count)
    {
        var result = new byte[count];
        int got = 0;
        while (got < count)
        {
            if (_start == _end && !Fill()) throw new FormatException($"The connection ended after {got} of {count} body bytes.");
            int n = Math.Min(count - got, _end - _start);
            Array.Copy(_buffer, _start, result, got, n);
            _start += n;
            got += n;
        }
        return result;
    }

    private string? ReadLine()
    {
        var line = new StringBuilder();
        while (true)
        {
            if (_start == _end && !Fill())
            {
                if (line.Length == 0) return null;
                throw new FormatException("The connection ended inside a line.");
            }
            byte b = _buffer[_start++];
            if (b == '\n')
            {
                if (line.Length == 0 || line[^1] != '\r') throw new FormatException("A bare LF in a response line.");
                return line.ToString(0, line.Length - 1);
            }
            line.Append((char)b);
            if (line.Length > 100_000) throw new FormatException("A response line is too long.");
        }
    }

    private bool Fill()
    {
        if (_eof) return false;
        if (_start == _end) _start = _end = 0;
        if (_end == _buffer.Length)
        {
            Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        int n;
        try
        {
            n = socket.Receive(_buffer, _end, _buffer.Length - _end, SocketFlags.None);
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted)
        {
            n = 0;
        }
        if (n == 0)
        {
            _eof = true;
            return false;
        }
        _end += n;
        return true;
    }
}
