namespace GreenRuntime.Servers;

/// <summary>
/// The read-only <see cref="HttpRequest.Body"/>: decodes a Content-Length or chunked body from the connection's
/// buffer and socket, enforcing MaxRequestBodySize. Sends "100 Continue" before the first read when asked to.
/// </summary>
/// <remarks>
/// Chunked decoding steps (RFC 9112 §7.1): chunk-size line (hex, optional extensions) → that many data bytes →
/// CRLF → repeat; a zero size is followed by trailer lines up to an empty line. A malformed body throws
/// <see cref="HttpProtocolException"/> (400; 413 past the size limit); any failure leaves the stream broken and
/// the connection marked to close, because the position of the next request is then unknown.
/// </remarks>
internal sealed class RequestBodyStream : Stream
{
    private const int MaxChunkLineLength = 4096;
    private readonly HttpConnection _connection;
    private readonly bool _chunked;
    private readonly long? _limit;
    private long _remaining;          // Content-Length mode: bytes left; chunked mode: bytes left in the current chunk
    private long _total;
    private ChunkState _state = ChunkState.Size;
    private bool _expectContinue;
    private bool _done;
    private IOException? _broken;

    private enum ChunkState : byte { Size, Data, DataEnd, Trailers }

    public RequestBodyStream(HttpConnection connection, long contentLength, bool chunked, bool expectContinue, long? limit)
    {
        _connection = connection;
        _chunked = chunked;
        _remaining = chunked ? 0 : contentLength;
        _expectContinue = expectContinue;
        _limit = limit;
        _done = !chunked && contentLength == 0;
    }

    /// <summary>A read failed; the rest of the body cannot be found.</summary>
    public bool Broken => _broken != null;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => _chunked ? throw new NotSupportedException("A chunked request body has no known length.") : _total + _remaining;
    public override long Position
    {
        get => _total;
        set => throw new NotSupportedException("The request body cannot seek.");
    }

    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    public override int Read(Span<byte> buffer)
    {
        if (_broken != null) throw new IOException($"The request body can no longer be read: {_broken.Message}", _broken);
        if (_done || buffer.IsEmpty) return 0;
        try
        {
            if (_expectContinue)
            {
                _expectContinue = false;
                _connection.SendContinue(); // a failed send breaks the body and the connection like a failed read
            }
            return _chunked ? ReadChunked(buffer) : ReadLength(buffer);
        }
        catch (TimeoutException e) when (e is not GreenTimeoutException)
        {
            // The server's own limits (IoTimeout, MinRequestBodyDataRate). A GreenTimeout of the handler's goes through
            // as it is, for its scope to recognise, and leaves the body readable: an interrupted wait took no bytes, and
            // the reader's state changes only once a whole line or some data has arrived.
            _broken = new HttpProtocolException(408, $"The request body stopped arriving: {e.Message}");
            _connection.MarkMustClose();
            throw _broken;
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or ObjectDisposedException)
        {
            _broken = e as HttpProtocolException ?? (e is IOException io ? io : new IOException($"Reading the request body failed: {e.Message}", e));
            _connection.MarkMustClose();
            throw _broken;
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Task.FromResult(Read(buffer, offset, count));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Read(buffer.Span));

    /// <summary>Reads and discards the rest of the body if it is at most <paramref name="maxBytes"/>; false when it was not (or failed).</summary>
    public bool TryDrain(long maxBytes)
    {
        if (_done) return true;
        if (_broken != null || _expectContinue) return false;
        if (!_chunked && _remaining - _connection.Buffered > maxBytes) return false;
        Span<byte> scratch = stackalloc byte[4096];
        long drained = 0;
        try
        {
            while (!_done)
            {
                drained += Read(scratch);
                if (drained > maxBytes) return false;
            }
            return true;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private int ReadLength(Span<byte> buffer)
    {
        if (_connection.Buffered == 0 && !_connection.FillBody())
            throw new HttpProtocolException(400, "The client closed the connection before sending the whole body.");
        int n = _connection.Take(buffer[..(int)Math.Min(buffer.Length, _remaining)]);
        _remaining -= n;
        _total += n;
        if (_remaining == 0) _done = true;
        return n;
    }

    private int ReadChunked(Span<byte> buffer)
    {
        while (true)
        {
            switch (_state)
            {
                case ChunkState.Size:
                {
                    long size = HttpHeadParser.ParseChunkSize(_connection.ReadLine(MaxChunkLineLength));
                    if (size == 0)
                    {
                        _state = ChunkState.Trailers;
                        break;
                    }
                    // Not _total + size: a size near long.MaxValue would wrap it below the limit.
                    if (_limit is { } limit && size > limit - _total)
                        throw new HttpProtocolException(413, $"The chunked request body is larger than the limit of {limit} bytes.");
                    _remaining = size;
                    _state = ChunkState.Data;
                    break;
                }
                case ChunkState.Data:
                {
                    if (_connection.Buffered == 0 && !_connection.FillBody())
                        throw new HttpProtocolException(400, "The client closed the connection in the middle of a chunk.");
                    int n = _connection.Take(buffer[..(int)Math.Min(buffer.Length, _remaining)]);
                    _remaining -= n;
                    _total += n;
                    if (_remaining == 0) _state = ChunkState.DataEnd;
                    return n;
                }
                case ChunkState.Trailers:
                    SkipTrailers(); // interrupted (a GreenTimeout of the handler), it goes on with the next trailer line
                    _done = true;
                    return 0;
                case ChunkState.DataEnd:
                    if (!_connection.ReadLine(2).IsEmpty)
                        throw new HttpProtocolException(400, "A chunk's data was not followed by CRLF.");
                    _state = ChunkState.Size;
                    break;
            }
        }
    }

    private void SkipTrailers()
    {
        int total = 0, count = 0;
        while (true)
        {
            var line = _connection.ReadLine(MaxChunkLineLength);
            if (line.IsEmpty) return;
            total += line.Length + 2;
            if (++count > _connection.MaxHeaderCount || total > _connection.MaxHeadersSize)
                throw new HttpProtocolException(431, "The chunked body's trailer section is too large.");
            HttpHeadParser.CheckTrailerField(line);
        }
    }

    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("The request body cannot seek.");
    public override void SetLength(long value) => throw new NotSupportedException("The request body is read-only.");
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("The request body is read-only; write the response through HttpResponse.");
}
