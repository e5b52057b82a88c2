using System.Text;
using GreenRuntime.LowLevel;

namespace GreenRuntime.Servers;

/// <summary>
/// The response an <see cref="HttpServer"/> handler writes: status, headers, then the body through
/// <see cref="Body"/> or <see cref="Write(ReadOnlySpan{byte})"/>, with ordinary blocking calls.
/// </summary>
/// <remarks>
/// <para>Framing is automatic. Body bytes are buffered (up to <see cref="HttpServerOptions.ResponseBufferSize"/>)
/// until the handler returns, so a short response gets a <c>Content-Length</c>; a longer one, or one the handler
/// flushes, is sent with chunked transfer coding — or, to an HTTP/1.0 client, delimited by closing the connection.
/// Setting <see cref="ContentLength"/> first sends the body as it is written, with that length.</para>
/// <para><c>Date</c> and <c>Server</c> are added unless the handler sets them. <c>Connection</c> and
/// <c>Transfer-Encoding</c> belong to the server: setting <c>Connection: close</c> closes the connection after this
/// response; setting Transfer-Encoding is refused. For HEAD the body is counted (for Content-Length) but not sent.</para>
/// <para>Once the head has been sent (<see cref="HasStarted"/>), status and headers can no longer change; a handler
/// exception then closes the connection instead of sending a 500.</para>
/// </remarks>
public sealed class HttpResponse
{
    private readonly HttpConnection _connection;
    private readonly bool _isHead;
    private readonly bool _http10;
    private readonly int _bufferSize;
    private readonly List<KeyValuePair<string, string>> _headers = new();
    private int _statusCode = 200;
    private string? _reasonPhrase;
    private long? _contentLength;
    private bool _handlerClose;
    private byte[]? _buffer;
    private int _buffered;
    private long _written;
    private Framing _framing;
    private bool _keepAlive;
    private bool _completed;
    private Stream? _body;

    private enum Framing : byte { NotStarted, Length, Chunked, UntilClose, None }

    internal HttpResponse(HttpConnection connection, bool isHead, bool http10, int bufferSize)
    {
        _connection = connection;
        _isHead = isHead;
        _http10 = http10;
        _bufferSize = bufferSize;
    }

    /// <summary>The status code, 200 by default. Range 200–999 (1xx responses are the server's business).</summary>
    /// <exception cref="InvalidOperationException">The head has already been sent.</exception>
    public int StatusCode
    {
        get => _statusCode;
        set
        {
            if (value is < 200 or > 999)
                throw new ArgumentOutOfRangeException(nameof(value), value, "The status code must be between 200 and 999; informational (1xx) responses are sent by the server itself.");
            ThrowIfStarted();
            _statusCode = value;
        }
    }

    /// <summary>The reason phrase; null (default) uses the standard one for <see cref="StatusCode"/>.</summary>
    public string? ReasonPhrase
    {
        get => _reasonPhrase;
        set
        {
            if (value != null && !HttpSyntax.IsValidHeaderValue(value))
                throw new ArgumentException("The reason phrase must not contain control characters such as CR or LF.", nameof(value));
            ThrowIfStarted();
            _reasonPhrase = value;
        }
    }

    /// <summary>The declared body length; null (default) lets the server choose the framing. Writing more fails; writing
    /// less closes the connection (and is logged).</summary>
    public long? ContentLength
    {
        get => _contentLength;
        set
        {
            if (value is < 0) throw new ArgumentOutOfRangeException(nameof(value), value, "ContentLength must not be negative.");
            ThrowIfStarted();
            if (value < _written)
                throw new InvalidOperationException($"{_written} body bytes were already written; a ContentLength of {value} cannot be declared now.");
            _contentLength = value;
        }
    }

    /// <summary>The <c>Content-Type</c> header, or null when not set.</summary>
    public string? ContentType
    {
        get => GetHeader("Content-Type");
        set
        {
            if (value == null) RemoveHeader("Content-Type");
            else SetHeader("Content-Type", value);
        }
    }

    /// <summary>Whether the status line and headers have been sent.</summary>
    public bool HasStarted => _framing != Framing.NotStarted;

    /// <summary>The headers the handler set, in order (the server adds Date, Server, framing and Connection when sending).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Headers => _headers;

    /// <summary>A write-only stream over the body; same as <see cref="Write(ReadOnlySpan{byte})"/>.</summary>
    public Stream Body => _body ??= new ResponseBodyStream(this);

    /// <summary>Replaces every header named <paramref name="name"/> (case-insensitive) with one field.</summary>
    /// <exception cref="ArgumentException">The name is not a token, the value contains CR/LF or other controls, or the header is Transfer-Encoding.</exception>
    public void SetHeader(string name, string value)
    {
        if (TrySpecialHeader(name, value)) return;
        RemoveHeader(name);
        _headers.Add(new(name, value));
    }

    /// <summary>Adds a header field, keeping existing ones with the same name (e.g. several Set-Cookie).</summary>
    public void AddHeader(string name, string value)
    {
        if (TrySpecialHeader(name, value)) return;
        _headers.Add(new(name, value));
    }

    /// <summary>Removes every header named <paramref name="name"/> (case-insensitive).</summary>
    public void RemoveHeader(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfStarted();
        for (int i = _headers.Count - 1; i >= 0; i--) // no closure: SetHeader (ContentType) runs on every request
            if (_headers[i].Key.Equals(name, StringComparison.OrdinalIgnoreCase)) _headers.RemoveAt(i);
    }

    /// <summary>The value of a header the handler set, or null.</summary>
    public string? GetHeader(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        foreach (var h in _headers) if (h.Key.Equals(name, StringComparison.OrdinalIgnoreCase)) return h.Value;
        return null;
    }

    /// <summary>Writes body bytes, blocking only the handler's greenlet while the client is slow.</summary>
    /// <exception cref="InvalidOperationException">The status has no body (204, 304), more than <see cref="ContentLength"/> would be written, or the exchange is over.</exception>
    /// <exception cref="IOException">The client went away or did not read within <see cref="HttpServerOptions.IoTimeout"/>.</exception>
    public void Write(ReadOnlySpan<byte> data)
    {
        if (_completed)
            throw new InvalidOperationException("The response is complete (the handler returned); it cannot be written any more.");
        if (data.IsEmpty) return;
        if (!StatusAllowsBody)
            throw new InvalidOperationException($"A {_statusCode} response has no body; set another StatusCode before writing.");
        if (_contentLength is { } declared && _written + data.Length > declared)
            throw new InvalidOperationException($"Writing {data.Length} more bytes would exceed the declared ContentLength of {declared} ({_written} written).");
        _written += data.Length;
        if (_isHead) return;
        if (_framing == Framing.NotStarted)
        {
            if (_contentLength == null && _buffered + data.Length <= _bufferSize)
            {
                _buffer ??= IoBuffers.Pool.Rent(_bufferSize);
                data.CopyTo(_buffer.AsSpan(_buffered));
                _buffered += data.Length;
                return;
            }
            SendHead(final: false);
            AppendBody(_buffer.AsSpan(0, _buffered));
            ReleaseBuffer();
        }
        AppendBody(data);
        _connection.FlushOutput();
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8.</summary>
    public void Write(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        if (max <= 1024)
        {
            Span<byte> small = stackalloc byte[max];
            Write(small[..Encoding.UTF8.GetBytes(text, small)]);
            return;
        }
        var rented = IoBuffers.Pool.Rent(max);
        try
        {
            Write(rented.AsSpan(0, Encoding.UTF8.GetBytes(text, rented)));
        }
        finally
        {
            IoBuffers.Pool.Return(rented);
        }
    }

    /// <summary>Sends the head and everything buffered now; the rest of the body then streams (chunked unless <see cref="ContentLength"/> is set).</summary>
    public void Flush()
    {
        if (_completed || _framing != Framing.NotStarted) return;
        SendHead(final: false);
        AppendBody(_buffer.AsSpan(0, _buffered));
        ReleaseBuffer();
        _connection.FlushOutput();
    }

    /// <inheritdoc cref="HttpRequest.ToString"/>
    public override string ToString() => $"{_statusCode} {_reasonPhrase ?? HttpSyntax.ReasonPhrase(_statusCode)}";

    internal bool Completed => _completed;

    internal long BytesWritten => _written;

    private bool StatusAllowsBody => _statusCode is not (204 or 304);

    /// <summary>
    /// Ends the exchange after the handler returned: sends what is still owed (the whole response, or the last
    /// chunk). Returns whether the connection may carry another request.
    /// </summary>
    internal bool Complete(bool mustClose)
    {
        if (_completed) return false;
        if (_framing == Framing.NotStarted)
        {
            if (_contentLength is { } declared && declared != _written && !_isHead && StatusAllowsBody)
            {
                ServerLog.ContentLengthMismatch(_connection.Logger, _connection.CurrentMethod, _connection.CurrentTarget, declared, _written);
                ResetForError(500, "The handler wrote fewer bytes than the ContentLength it declared.\n");
                mustClose = true;
            }
            SendHead(final: true, mustClose);
            if (!_isHead && StatusAllowsBody) _connection.Output.Append(_buffer.AsSpan(0, _buffered));
            _connection.FlushOutput();
        }
        else if (_framing == Framing.Chunked && !_isHead)
        {
            _connection.Output.Append("0\r\n\r\n"u8);
            _connection.FlushOutput();
        }
        else if (_framing == Framing.Length && !_isHead && _written != _contentLength)
        {
            ServerLog.ContentLengthMismatch(_connection.Logger, _connection.CurrentMethod, _connection.CurrentTarget, _contentLength ?? 0, _written);
            _keepAlive = false;
        }
        _completed = true;
        ReleaseBuffer();
        return _keepAlive && !mustClose;
    }

    /// <summary>Replaces an unstarted response with a short plain-text error.</summary>
    internal void ResetForError(int status, string message)
    {
        if (HasStarted)
            throw new InvalidOperationException("Internal error: an error response can replace only a response that has not started.");
        _headers.Clear();
        _statusCode = status;
        _reasonPhrase = null;
        _contentLength = null;
        _buffered = 0;
        _written = 0;
        _headers.Add(new("Content-Type", "text/plain; charset=utf-8"));
        var bytes = Encoding.UTF8.GetBytes(message);
        _buffer ??= IoBuffers.Pool.Rent(Math.Max(_bufferSize, bytes.Length));
        if (_buffer.Length < bytes.Length)
        {
            IoBuffers.Pool.Return(_buffer);
            _buffer = IoBuffers.Pool.Rent(bytes.Length);
        }
        bytes.CopyTo(_buffer, 0);
        _buffered = bytes.Length;
        _written = bytes.Length;
    }

    /// <summary>Frees the body buffer if the handler's exchange ended without <see cref="Complete"/> (connection aborted).</summary>
    internal void Abandon()
    {
        _completed = true;
        ReleaseBuffer();
    }

    private void SendHead(bool final, bool mustClose = false)
    {
        var o = _connection.Output;
        if (!StatusAllowsBody) _framing = Framing.None;
        else if (_contentLength != null) _framing = Framing.Length;
        else if (final) { _framing = Framing.Length; _contentLength = _written; }
        else if (_isHead) _framing = Framing.None;
        else if (!_http10) _framing = Framing.Chunked;
        else _framing = Framing.UntilClose;
        _keepAlive = _connection.RequestAllowsKeepAlive && !_handlerClose && !mustClose && _framing != Framing.UntilClose && !_connection.ServerStopping && !_connection.ServerFull;

        o.Append("HTTP/1.1 "u8);
        o.AppendDecimal(_statusCode);
        o.Append(" "u8);
        o.AppendLatin1(_reasonPhrase ?? HttpSyntax.ReasonPhrase(_statusCode));
        o.AppendCrlf();
        bool hasDate = false, hasServer = false;
        foreach (var h in _headers)
        {
            hasDate |= h.Key.Equals("Date", StringComparison.OrdinalIgnoreCase);
            hasServer |= h.Key.Equals("Server", StringComparison.OrdinalIgnoreCase);
        }
        if (!hasDate)
        {
            o.Append("Date: "u8);
            o.Append(_connection.Date);
            o.AppendCrlf();
        }
        if (!hasServer && _connection.ServerHeader is { } server)
        {
            o.Append("Server: "u8);
            o.AppendLatin1(server);
            o.AppendCrlf();
        }
        if (_framing == Framing.Length && (_statusCode != 204))
        {
            o.Append("Content-Length: "u8);
            o.AppendDecimal(_contentLength!.Value);
            o.AppendCrlf();
        }
        else if (_framing == Framing.Chunked)
        {
            o.Append("Transfer-Encoding: chunked\r\n"u8);
        }
        if (!_keepAlive) o.Append("Connection: close\r\n"u8);
        else if (_http10) o.Append("Connection: keep-alive\r\n"u8);
        foreach (var h in _headers)
        {
            o.AppendLatin1(h.Key);
            o.Append(": "u8);
            o.AppendLatin1(h.Value);
            o.AppendCrlf();
        }
        o.AppendCrlf();
    }

    private void AppendBody(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty || _isHead || _framing == Framing.None) return;
        var o = _connection.Output;
        const int piece = 64 * 1024;
        while (!data.IsEmpty)
        {
            var part = data[..Math.Min(piece, data.Length)];
            if (_framing == Framing.Chunked)
            {
                o.AppendHex(part.Length);
                o.AppendCrlf();
                o.Append(part);
                o.AppendCrlf();
            }
            else
            {
                o.Append(part);
            }
            data = data[part.Length..];
            if (!data.IsEmpty) _connection.FlushOutput();
        }
    }

    private bool TrySpecialHeader(string name, string value)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(value);
        if (!HttpSyntax.IsToken(name))
            throw new ArgumentException($"\"{name}\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only).", nameof(name));
        if (!HttpSyntax.IsValidHeaderValue(value))
            throw new ArgumentException($"The value of {name} must not contain CR, LF or other control characters.", nameof(value));
        ThrowIfStarted();
        if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
        {
            if (!long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long length))
                throw new ArgumentException($"Content-Length must be a non-negative integer, not \"{value}\".", nameof(value));
            ContentLength = length;
            return true;
        }
        if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException("The server chooses the transfer coding (chunked when the length is unknown); set ContentLength to send a fixed length instead.", nameof(name));
        if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase))
        {
            if (HttpSyntax.ListContains(value, "close")) _handlerClose = true;
            return true;
        }
        return false;
    }

    private void ThrowIfStarted()
    {
        if (HasStarted)
            throw new InvalidOperationException("The response head has already been sent; set the status and headers before writing the body (or before Flush).");
    }

    private void ReleaseBuffer()
    {
        if (_buffer != null) IoBuffers.Pool.Return(_buffer);
        _buffer = null;
        _buffered = 0;
    }
}
