// HTTP/1.1 server engine: one HttpConnection per accepted socket, run by that connection's stackless greenlet,
// with its requests served on a stackful greenlet while the connection is busy.
//
// Glossary: the *head* is the request line plus header fields up to the empty line; the *input buffer* is one
// pooled array holding bytes received but not consumed ([_start, _end)); an *exchange* is one request and its
// response; *lingering close* shuts our sending side, then reads and discards for a moment so the kernel does not
// answer unread client bytes with a reset that would destroy the response we just sent.
//
// Design: a plain loop per connection — read a head, check it, run the handler, finish the response, drain what
// the handler left of the body, repeat while keep-alive holds. Framing and checking the head is HttpHeadParser's
// (pure, on spans over the input buffer: no regex, no per-byte allocation; strings are made only for what the
// handler sees); this class does the I/O and the timeouts around it.
// Pipelined requests need nothing special: bytes after one request stay in the buffer and are the next head, and
// responses go out in order because one greenlet serves the connection at a time.
//
// Idle connections hold no carrier: the connection itself is a stackless greenlet (RunAsync). It waits on the hub's
// reactor for the first bytes and gathers the head there (a client that sends part of a head and stalls costs no
// thread either), then spawns a stackful greenlet that serves requests (blocking handlers need a stack)
// for as long as the client keeps them coming. When a response is complete, nothing is buffered and a non-blocking
// receive finds nothing, that greenlet ends and hands the connection back idle: its buffers go back to the pool
// and the stackless greenlet awaits readability again, with no thread and no stack, for up to KeepAliveTimeout.
// A kill of the connection greenlet (Stop, a full server closing idle connections) cancels that wait or kills the
// serving greenlet. Where the hub has no reactor, the serving greenlet waits for the next request itself.
//
// Protocol of one exchange:
//   1. Wait for the head: an idle keep-alive connection waits up to KeepAliveTimeout for the first byte (then
//      closes silently), a new one up to RequestHeadersTimeout; from the first byte (or the accept) the whole head
//      must arrive within RequestHeadersTimeout, else 408 and close. Too long: 414 (request line) / 431.
//   2. Parse and check it: malformed → 400; unknown version → 505; Transfer-Encoding other than chunked → 501;
//      both Content-Length and Transfer-Encoding, conflicting lengths, or no Host in HTTP/1.1 → 400; body over
//      MaxRequestBodySize → 413; an Expect other than 100-continue → 417. Every error response closes.
//   3. Run the handler in this greenlet. An exception: 500 (or the HttpProtocolException's status) if the
//      response has not started, else close the connection.
//   4. Drain the unread body (up to 256 KiB; more, a pending 100-continue, or a broken body → close), send what
//      the response still owes, and go to 1 if the response promised keep-alive.
//
// Rejected: a parser that copies the head into strings before validating (allocations on garbage input); a
// separate greenlet for reading ahead (ordering of pipelined responses would need a queue, for no gain with
// blocking handlers); answering 400 to a client that closed mid-head (nobody would read it).

using System.Net;
using System.Net.Sockets;
using System.Text;
using GreenRuntime.LowLevel;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers;

/// <summary>Serves one connection of an <see cref="HttpServer"/>; see the header comment for the protocol.</summary>
/// <remarks>Invariant: 0 ≤ _start ≤ _end ≤ _buffer.Length, and [_start, _end) are exactly the bytes received and not
/// yet consumed (checked by <see cref="AssertBuffer"/> wherever the bounds move).</remarks>
internal sealed class HttpConnection
{
    private const int DrainLimit = 256 * 1024;
    private static readonly TimeSpan s_lingerTime = TimeSpan.FromMilliseconds(500);
    private static readonly byte[] s_continue = "HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray();

    private readonly HttpServer _server;

    /// <summary>
    /// The ambient context each request's handler starts from: the connection greenlet's, which is the server's
    /// Start context. Every request runs in a fresh copy of it, so what one request's handler sets (AsyncLocal
    /// values, Activity.Current, culture) is never seen by the next request on the same keep-alive connection.
    /// </summary>
    private readonly ExecutionContext? _requestContext = ExecutionContext.Capture();
    private readonly HttpServerOptions _options;
    private readonly ConnectionSocket _io;
    private readonly EndPoint _remote;
    private readonly EndPoint _local;
    private readonly TimeProvider _time;
    private byte[] _buffer;
    private int _start, _end;
    private bool _mustClose;

    /// <summary>A response write failed (FlushOutput): nothing more is sent on this connection.</summary>
    private bool _outputBroken;
    private bool _requestKeepAlive;
    private bool _served; // a request has been served: the next wait for bytes is a keep-alive wait

    /// <summary>A request has been served on this connection (an idle one is then a keep-alive connection, not a new one).</summary>
    public bool Served => _served;
    private long _headStarted; // when the head being gathered began to arrive (RequestHeadersTimeout counts from there)
    private bool _closedBeforeHead; // the client closed its side before sending a whole head
    private string _method = "", _target = "";
    private HttpResponse? _response;

    public HttpConnection(HttpServer server, Socket socket, EndPoint remote, Hub hub)
    {
        Hub = hub;
        IdleSet = server.IdleSetOf(hub);
        _server = server;
        _options = server.Options;
        _io = new ConnectionSocket(socket);
        _remote = remote;
        _local = socket.LocalEndPoint!;
        _time = hub.Options.TimeProvider;
        _buffer = [];
        Output = new OutputBuffer();
    }

    /// <summary>The hub that accepted the connection and serves it for its whole life.</summary>
    public Hub Hub { get; }

    /// <summary>Its hub's idle connections (HttpServer's), which this connection joins while it waits for a request.</summary>
    public HashSet<HttpConnection> IdleSet { get; }

    /// <summary>The connection's own (stackless) greenlet: killing it ends the connection, idle or busy.</summary>
    public Greenlet Greenlet { get; private set; } = null!;

    public OutputBuffer Output { get; }
    public ILogger Logger => _server.Logger;
    public byte[] Date => _server.DateCache.Current;
    public string? ServerHeader => _options.ServerHeader;
    public bool ServerStopping => _server.IsStopping;
    public bool ServerFull => _server.IsFull;
    public bool RequestAllowsKeepAlive => _requestKeepAlive && !_mustClose;
    public string CurrentMethod => _method;
    public string CurrentTarget => _target;
    public int MaxHeaderCount => _options.MaxRequestHeaderCount;
    public int MaxHeadersSize => _options.MaxRequestHeadersTotalSize;

    /// <summary>Bytes received and not yet consumed.</summary>
    public int Buffered => _end - _start;

    public void MarkMustClose() => _mustClose = true;

    /// <summary>
    /// Runs the connection until it ends, on its stackless greenlet: waits for bytes without a carrier, serves
    /// requests on a stackful greenlet while they keep coming, and waits again when the connection goes idle.
    /// </summary>
    public async Task RunAsync()
    {
        Greenlet = Green.Current;
        try
        {
            // A new connection's first bytes are awaited like an idle connection's next ones, within the head timeout. It is
            // idle meanwhile, for Stop (clients such as HttpClient open connections ahead of their requests, and Stop used
            // to wait its whole timeout for them); the close at capacity spares it (see HttpServer.CloseIdleConnectionsOf).
            HttpServer.SetIdle(this, true);
            try
            {
                if (_server.IsStopping) return;
                if (await CooperativeSocket.WaitReadableAsync(_io.Socket, _options.RequestHeadersTimeout, Greenlet.CancellationToken) != SocketError.Success)
                    return;
            }
            finally
            {
                HttpServer.SetIdle(this, false);
            }
            while (true)
            {
                // The head is gathered here, with no carrier: a client that sends part of a head and stalls (slowloris)
                // would otherwise hold a thread until RequestHeadersTimeout, one per connection. Awaited inline, as
                // below (each async method an idle connection is suspended in keeps a state machine alive).
                _headStarted = _time.GetTimestamp();
                while (GatherHead() is null)
                {
                    var headLeft = _options.RequestHeadersTimeout - _time.GetElapsedTime(_headStarted);
                    if (headLeft <= TimeSpan.Zero
                        || await CooperativeSocket.WaitReadableAsync(_io.Socket, headLeft, Greenlet.CancellationToken) != SocketError.Success)
                        break; // ReadHead, on the stackful greenlet, answers what is wrong (408) or sees the error itself
                }
                if (_end == _start && _closedBeforeHead) return;
                // A bound delegate, not a closure over a loop local: the state machine would keep that closure while idle.
                var serving = Green.Spawn(ServeWhileBusy, "HttpServer.requests");
                bool idle;
                using (Greenlet.CancellationToken.UnsafeRegister(static g => ((Greenlet)g!).Kill(block: false), serving))
                    idle = await serving;
                serving = null; // a hoisted local: the idle wait below would keep the finished greenlet alive
                if (!idle) return;
                _served = true;
                HttpServer.SetIdle(this, true);
                try
                {
                    // Stop marks the server stopping before it kills the idle connections: one that turns idle later
                    // sees the mark here.
                    if (_server.IsStopping) return;
                    var left = KeepAliveLeft;
                    if (left <= TimeSpan.Zero) return;
                    // Awaited here rather than in a helper: each async method an idle connection is suspended in
                    // keeps a state machine alive.
                    if (await CooperativeSocket.WaitReadableAsync(_io.Socket, left, Greenlet.CancellationToken) != SocketError.Success)
                        return;
                }
                finally
                {
                    HttpServer.SetIdle(this, false);
                }
            }
        }
        catch (OperationCanceledException) when (Greenlet.CancellationToken.IsCancellationRequested)
        {
            // Killed while idle (Stop, or a full server closing idle connections): the wait was cancelled.
        }
        catch (Exception e) when (e is not GreenletExit)
        {
            // The server runs this as the greenlet's body with nothing around it (StreamServer.OwnedConnectionHandler).
            ServerLog.HandlerFailed(Logger, e, _remote.ToString()!, e.GetType().Name);
        }
        finally
        {
            HttpServer.SetIdle(this, false);
            Close();
        }
    }

    /// <summary>
    /// One step of gathering a request head without a stack (<see cref="RunAsync"/>): receives what is there without
    /// waiting. True: a head is complete, or something is wrong with it or the connection (ReadHead, on the stackful
    /// greenlet, reports it as it would have); null: not complete yet, wait for more bytes.
    /// </summary>
    private bool? GatherHead()
    {
        if (_buffer.Length == 0) _buffer = IoBuffers.Pool.Rent(_options.MaxRequestHeadersTotalSize + 4096);
        try
        {
            while (true)
            {
                var pending = _buffer.AsSpan(_start, Buffered);
                pending = pending[HttpHeadParser.LeadingEmptyLines(pending)..];
                if (pending.Length > 0 && HttpHeadParser.FindHeadEnd(pending, 0, _options.MaxRequestHeadersTotalSize) > 0) return true;
                MakeRoom();
                if (_end == _buffer.Length) return true;
                int n = CooperativeSocket.ReceiveNow(_io.Socket, _buffer.AsSpan(_end), out var error);
                if (n < 0) return null;
                if (error != SocketError.Success) return true;
                if (n == 0)
                {
                    _closedBeforeHead = true;
                    return true;
                }
                _end += n;
                AssertBuffer();
            }
        }
        catch (HttpProtocolException)
        {
            return true; // too long a head: ReadHead finds it again and answers 414 / 431
        }
    }

    /// <summary>
    /// Serves requests on the current stackful greenlet until the connection ends (closing it; returns false) or
    /// goes idle with nothing buffered and nothing to read (returns true, leaving it open for <see cref="RunAsync"/>).
    /// </summary>
    public bool ServeWhileBusy()
    {
        bool first = !_served;
        if (_buffer.Length == 0) _buffer = IoBuffers.Pool.Rent(_options.MaxRequestHeadersTotalSize + 4096);
        bool killed = false, idle = false;
        try
        {
            idle = Serve(first);
        }
        catch (GreenletExit)
        {
            killed = true;
            throw;
        }
        catch (Exception e) when (e is IOException or SocketException or TimeoutException or ObjectDisposedException)
        {
            ServerLog.ConnectionEnded(Logger, _remote.ToString()!, e.Message);
        }
        finally
        {
            if (idle)
            {
                // An idle connection keeps no buffer and nothing of its last exchange: thousands of them would pin megabytes.
                ReleaseBuffers();
                _response = null;
                _method = _target = "";
            }
            else
            {
                if (!killed) LingeringClose();
                Close();
            }
        }
        return idle;
    }

    /// <summary>Gives the input and output buffers back to the pool (no operation outlives its call, see
    /// ConnectionSocket, so nothing can still write into them).</summary>
    private void ReleaseBuffers()
    {
        if (_buffer.Length > 0) IoBuffers.Pool.Return(_buffer);
        _buffer = [];
        _start = _end = 0;
        Output.Release();
    }

    /// <summary>Releases everything and closes the socket. Idempotent.</summary>
    private void Close()
    {
        ReleaseBuffers();
        _io.Socket.Dispose();
    }

    /// <summary>Serves exchanges; returns true when the connection went idle (see <see cref="ServeWhileBusy"/>).</summary>
    private bool Serve(bool first)
    {
        // A connection accepted before Stop still gets its first request served (within Stop's grace period).
        while (first || !_server.IsStopping)
        {
            int headLength;
            try
            {
                headLength = ReadHead(first);
                if (headLength == 0) return false;
                if (headLength < 0) return true;
                first = false;
                if (!Exchange(headLength)) return false;
            }
            catch (HttpProtocolException e)
            {
                ServerLog.BadRequest(Logger, _remote.ToString()!, e.Status, e.Message);
                SendError(e.Status, e.Message, e.Allow);
                return false;
            }
        }
        return false;
    }

    /// <summary>Step 1: waits for a complete head. Returns its length in bytes (from _start, final CRLFCRLF included), 0 when
    /// the connection ended quietly, or -1 when it is idle (a keep-alive connection with nothing to read yet).</summary>
    private int ReadHead(bool first)
    {
        // RFC 9112 §2.2: empty lines before a request line are ignored. Dropped here, the CRLF some clients send after a
        // body no longer counts as a request begun: the connection goes idle instead of waiting out RequestHeadersTimeout
        // on its stackful greenlet and answering 408.
        if (!first) _start += HttpHeadParser.LeadingEmptyLines(_buffer.AsSpan(_start, Buffered));
        if (!first && Buffered == 0)
        {
            switch (FillNow())
            {
                case true: break; // a request is here (at capacity, its response says Connection: close)
                case false: return 0;
                case null when _server.IsFull: return 0; // clients wait for a slot: do not hold one idle
                case null when Parking.ParkingHubSilent() is not null: // nothing there yet: idle, not off a hub
                    switch (AwaitNextRequestBriefly())
                    {
                        case true: break;
                        case false: return 0;
                        case null: return -1;
                    }
                    break;
                case null: break;
            }
        }
        if (!first && Buffered == 0)
        {
            HttpServer.SetIdle(this, true);
            try
            {
                if (!Fill(_options.KeepAliveTimeout)) return 0;
            }
            catch (TimeoutException)
            {
                return 0;
            }
            finally
            {
                HttpServer.SetIdle(this, false);
            }
        }
        // A head gathered in part by the stackless greenlet has been arriving since then.
        long started = _headStarted != 0 ? _headStarted : _time.GetTimestamp();
        _headStarted = 0;
        int limit = _options.MaxRequestHeadersTotalSize;
        int scanned = 0;
        while (true)
        {
            // RFC 9112 §2.2: ignore empty lines before the request line.
            int skip = HttpHeadParser.LeadingEmptyLines(_buffer.AsSpan(_start, Buffered));
            if (skip > 0)
            {
                _start += skip;
                scanned = 0;
            }
            var pending = _buffer.AsSpan(_start, Buffered);
            int length = HttpHeadParser.FindHeadEnd(pending, scanned, limit);
            if (length > 0) return length;
            scanned = pending.Length;
            var left = _options.RequestHeadersTimeout - _time.GetElapsedTime(started);
            try
            {
                if (left <= TimeSpan.Zero) throw new TimeoutException();
                if (!Fill(left)) return 0;
            }
            catch (TimeoutException)
            {
                if (Buffered == 0) return 0;
                throw new HttpProtocolException(408, $"The request head did not arrive within {_options.RequestHeadersTimeout.TotalSeconds:0.###} s.");
            }
        }
    }

    /// <summary>Steps 2–4 for a head of <paramref name="headLength"/> bytes at _start. Returns whether to read another request.</summary>
    private bool Exchange(int headLength)
    {
        var head = HttpHeadParser.Parse(_buffer.AsSpan(_start, headLength), _options);
        _start += headLength;
        _method = head.Method;
        _target = head.Target;
        _requestKeepAlive = head.KeepAlive;
        if (head.Close) _mustClose = true;

        StartBodyClock();
        var body = new RequestBodyStream(this, head.ContentLength ?? 0, head.Chunked, head.ExpectContinue, _options.MaxRequestBodySize);
        var request = new HttpRequest(head.Method, head.Target, head.Path, head.QueryString, head.Http10 ? "HTTP/1.0" : "HTTP/1.1", head.Headers, head.ContentLength, head.Chunked, body);
        var response = new HttpResponse(this, head.Method == "HEAD", head.Http10, _options.ResponseBufferSize);
        var context = new HttpContext(request, response, _remote, _local);
        _response = response;
        bool handlerDone = false;
        try
        {
            try
            {
                if (_requestContext != null)
                    ExecutionContext.Run(_requestContext, static s => { var (server, c) = ((HttpServer, HttpContext))s!; server.Handler(c); }, (_server, context));
                else
                    _server.Handler(context); // flow was suppressed when the server started: there is no context to isolate
            }
            catch (Exception e) when (e is not GreenletExit)
            {
                int status = e is HttpProtocolException p && body.Broken ? p.Status : 500;
                if (response.HasStarted)
                {
                    ServerLog.HttpHandlerFailed(Logger, e, _method, _target, _remote.ToString()!, e.GetType().Name, "the response had started, so the connection was closed");
                    return false;
                }
                if (status == 500) ServerLog.HttpHandlerFailed(Logger, e, _method, _target, _remote.ToString()!, e.GetType().Name, "answered 500");
                else ServerLog.BadRequest(Logger, _remote.ToString()!, status, e.Message);
                response.ResetForError(status, status == 500 ? "The server failed to handle the request.\n" : e.Message + "\n");
                if (status != 500) _mustClose = true;
            }
            handlerDone = true;
            if (!response.HasStarted && !body.TryDrain(DrainLimit)) _mustClose = true;
            bool keepAlive = response.Complete(_mustClose);
            if (keepAlive && !body.TryDrain(DrainLimit)) return false;
            return keepAlive && !_mustClose;
        }
        finally
        {
            if (!handlerDone || !response.Completed) response.Abandon();
        }
    }

    /// <summary>Sends "100 Continue" if the response has not started (called before the first body read).</summary>
    public void SendContinue()
    {
        if (_response is { HasStarted: false }) _io.Send(s_continue, _options.IoTimeout);
    }

    /// <summary>
    /// How long a keep-alive connection waits for its next request on its serving greenlet before it goes idle
    /// without a carrier. A busy client's next request usually comes within it, and resuming a parked greenlet costs
    /// one hand-off, where ending it and starting another from the stackless connection greenlet costs a greenlet and
    /// three hand-offs: without this grace, wrk's throughput against a 20 ms handler halves.
    /// </summary>
    private static readonly TimeSpan s_idleGrace = TimeSpan.FromMilliseconds(100);

    /// <summary>When the connection last went quiet (for the keep-alive timeout across the grace and the idle wait).</summary>
    private long _quietSince;

    /// <summary>The keep-alive time left after the grace on the serving greenlet.</summary>
    private TimeSpan KeepAliveLeft => _options.KeepAliveTimeout - _time.GetElapsedTime(_quietSince);

    /// <summary>Waits up to the grace with the carrier: true when bytes came, false when the connection ended, null
    /// when it stayed quiet (go idle without a carrier).</summary>
    private bool? AwaitNextRequestBriefly()
    {
        _quietSince = _time.GetTimestamp();
        var grace = _options.KeepAliveTimeout < s_idleGrace ? _options.KeepAliveTimeout : s_idleGrace;
        HttpServer.SetIdle(this, true);
        try
        {
            var error = CooperativeSocket.WaitReadable(_io.Socket, grace);
            if (error == SocketError.TimedOut) return null;
            if (error != SocketError.Success) return false;
        }
        finally
        {
            HttpServer.SetIdle(this, false);
        }
        return FillNow() is { } got ? got : null;
    }

    /// <summary>One receive that never waits: true when bytes came, false when the client closed its side, null when
    /// nothing is there yet (or this is not a greenlet that may park).</summary>
    /// <exception cref="SocketException">The connection failed.</exception>
    private bool? FillNow()
    {
        if (Parking.ParkingHubSilent() is null) return null; // off a hub: the blocking path waits for the next request
        MakeRoom();
        int n = CooperativeSocket.ReceiveNow(_io.Socket, _buffer.AsSpan(_end), out var error);
        if (n < 0) return null;
        if (error != SocketError.Success) throw new SocketException((int)error);
        if (n == 0) return false;
        _end += n;
        AssertBuffer();
        return true;
    }

    /// <summary>Receives more bytes into the input buffer. False when the client closed its side.</summary>
    /// <exception cref="TimeoutException">Nothing arrived within <paramref name="timeout"/>.</exception>
    public bool Fill(TimeSpan? timeout) => Receive(timeout) > 0;

    private int Receive(TimeSpan? timeout)
    {
        MakeRoom();
        int n = _io.Receive(_buffer.AsSpan(_end), timeout);
        _end += n;
        AssertBuffer();
        return n;
    }

    /// <summary>Past this allowance, and with no IoTimeout, a body read waits as long as it takes (a day of waiting at
    /// the minimum rate is far behind the bytes that earned it).</summary>
    private const double MaxBoundedWaitSeconds = 86_400;

    // The request body's clock (MinRequestBodyDataRate): the time spent waiting for its bytes, and the bytes that came.
    private TimeSpan _bodyWaited;
    private long _bodyReceived;

    /// <summary>Starts the clock of a new request's body.</summary>
    private void StartBodyClock()
    {
        _bodyWaited = TimeSpan.Zero;
        _bodyReceived = 0;
    }

    /// <summary><see cref="Fill"/> for the request body: each wait is bounded by IoTimeout and by what is left of the body's
    /// allowance, the grace period plus a second per MinRequestBodyDataRate bytes received so far.</summary>
    /// <exception cref="TimeoutException">Nothing arrived within IoTimeout, or the body fell below the minimum rate.</exception>
    public bool FillBody()
    {
        var timeout = _options.IoTimeout;
        bool rateBound = false;
        if (_options.MinRequestBodyDataRate is { } rate)
        {
            // In seconds, as a double: a large body at a tiny rate earns an allowance past what a TimeSpan holds.
            double left = _options.MinRequestBodyDataRateGracePeriod.TotalSeconds + _bodyReceived / rate - _bodyWaited.TotalSeconds;
            if (left <= 0) throw RateTooLow(rate);
            if (left < (timeout?.TotalSeconds ?? MaxBoundedWaitSeconds))
            {
                timeout = TimeSpan.FromSeconds(left);
                rateBound = true;
            }
        }
        long started = _time.GetTimestamp();
        try
        {
            int n = Receive(timeout);
            _bodyReceived += n;
            return n > 0;
        }
        catch (TimeoutException e) when (rateBound && e is not GreenTimeoutException) // not the handler's own GreenTimeout
        {
            throw RateTooLow(_options.MinRequestBodyDataRate!.Value);
        }
        finally
        {
            _bodyWaited += _time.GetElapsedTime(started);
        }
    }

    private TimeoutException RateTooLow(double rate) =>
        new($"it arrived slower than the minimum of {rate} bytes/s (MinRequestBodyDataRate, after a grace period of {_options.MinRequestBodyDataRateGracePeriod.TotalSeconds} s): {_bodyReceived} bytes in {_bodyWaited.TotalSeconds:0.###} s of waiting.");

    /// <summary>Before every receive: room after _end. A receive into no room returns 0, which reads as the client
    /// closing; a request that consumed the buffer to its very end left exactly that (the next request on the
    /// connection was closed unanswered).</summary>
    private void MakeRoom()
    {
        if (_start == _end) _start = _end = 0;
        else if (_buffer.Length - _end < 1024 && _start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
            throw new InvalidOperationException("Internal error: the input buffer is full although every reader bounds what it buffers.");
    }

    /// <summary>Copies buffered bytes into <paramref name="destination"/> and consumes them.</summary>
    public int Take(Span<byte> destination)
    {
        int n = Math.Min(destination.Length, Buffered);
        _buffer.AsSpan(_start, n).CopyTo(destination);
        _start += n;
        AssertBuffer();
        return n;
    }

    [System.Diagnostics.Conditional("DEBUG")]
    private void AssertBuffer()
    {
        if (_start < 0 || _start > _end || _end > _buffer.Length)
            throw new InvalidOperationException($"Internal error: the input buffer bounds are broken (start {_start}, end {_end}, capacity {_buffer.Length}); every reader must consume only bytes it was given.");
    }

    /// <summary>Reads one CRLF-terminated line of at most <paramref name="maxLength"/> bytes and consumes it; the span is valid until the next read.</summary>
    public ReadOnlySpan<byte> ReadLine(int maxLength)
    {
        int scanned = 0;
        while (true)
        {
            var pending = _buffer.AsSpan(_start, Buffered);
            int from = Math.Max(0, scanned - 1);
            int found = pending[from..].IndexOf("\r\n"u8);
            if (found >= 0)
            {
                int length = from + found;
                if (length > maxLength) break;
                var line = pending[..length];
                if (line.IndexOfAny((byte)'\r', (byte)'\n') >= 0)
                    throw new HttpProtocolException(400, "A line of the chunked body contains a bare CR or LF.");
                _start += length + 2;
                return _buffer.AsSpan(_start - length - 2, length);
            }
            if (pending.Length > maxLength + 1) break;
            HttpHeadParser.RejectBareLineBreaks(pending, from, "chunked body");
            scanned = pending.Length;
            if (!FillBody())
                throw new HttpProtocolException(400, "The client closed the connection in the middle of a chunked body.");
        }
        throw new HttpProtocolException(400, $"A line of the chunked body is longer than {maxLength} bytes.");
    }

    /// <summary>
    /// Sends and clears <see cref="Output"/>. A send that fails (the client went away, or did not read within the
    /// IoTimeout) may have sent part of it, and the response can no longer be framed: the connection is closed after
    /// the exchange, and every later write of it fails the same way (a handler that swallows the exception must not
    /// send the unsent rest again, nor more body, on a connection a client or proxy would read as in step).
    /// </summary>
    /// <exception cref="IOException">This send, or an earlier one of the connection, failed.</exception>
    public void FlushOutput()
    {
        if (_outputBroken)
        {
            Output.Clear();
            throw new IOException("The response cannot be sent any more: an earlier write to the client failed.");
        }
        if (Output.Length == 0) return;
        try
        {
            _io.Send(Output.Memory.Span, _options.IoTimeout);
        }
        catch (Exception e) when (e is SocketException or TimeoutException)
        {
            _outputBroken = true;
            _mustClose = true;
            Output.Clear();
            throw new IOException($"Sending the response to the client failed: {e.Message}", e);
        }
        Output.Clear();
    }

    private void SendError(int status, string message, string? allow)
    {
        Output.Clear();
        var body = Encoding.UTF8.GetBytes(message + "\n");
        Output.Append("HTTP/1.1 "u8);
        Output.AppendDecimal(status);
        Output.Append(" "u8);
        Output.AppendLatin1(HttpSyntax.ReasonPhrase(status));
        Output.Append("\r\nDate: "u8);
        Output.Append(Date);
        Output.AppendCrlf();
        if (ServerHeader is { } server)
        {
            Output.Append("Server: "u8);
            Output.AppendLatin1(server);
            Output.AppendCrlf();
        }
        if (allow != null)
        {
            Output.Append("Allow: "u8);
            Output.AppendLatin1(allow);
            Output.AppendCrlf();
        }
        Output.Append("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "u8);
        Output.AppendDecimal(body.Length);
        Output.Append("\r\n\r\n"u8);
        Output.Append(body);
        try
        {
            FlushOutput();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The client is gone; there is nobody to tell.
        }
    }

    private void LingeringClose()
    {
        var socket = _io.Socket;
        try
        {
            socket.Shutdown(SocketShutdown.Send);
            long started = _time.GetTimestamp();
            var scratch = _buffer.Length > 0 ? _buffer : new byte[4096];
            int discarded = 0;
            while (discarded < 64 * 1024)
            {
                var left = s_lingerTime - _time.GetElapsedTime(started);
                if (left <= TimeSpan.Zero) break;
                int n = _io.Receive(scratch, left);
                if (n == 0) break;
                discarded += n;
            }
        }
        catch (Exception e) when (e is SocketException or TimeoutException or ObjectDisposedException)
        {
            // Closing anyway.
        }
    }
}
