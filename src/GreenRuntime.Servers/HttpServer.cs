using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers;

/// <summary>
/// An HTTP/1.1 server for blocking handlers, like gevent's pywsgi: each request runs <c>handler(context)</c> on a
/// stackful greenlet of its connection, so the handler may block. Hub-only, like <see cref="StreamServer"/>.
/// </summary>
/// <remarks>
/// <para>Implements keep-alive and <c>Connection: close</c>, pipelined requests, Content-Length and chunked request
/// bodies, chunked responses when the length is unknown, <c>Expect: 100-continue</c>, HEAD, automatic
/// <c>Date</c>/<c>Content-Length</c>, and HTTP/1.0 clients. Bad input is answered and the connection closed: 400
/// malformed, 408 head too slow, 413 body too large, 414/431 head too large, 417 unknown Expect, 501 unsupported
/// Transfer-Encoding, 505 unknown HTTP version; a handler exception gives 500 (logged), or closes the connection if
/// the response had started. Limits and timeouts are in <see cref="HttpServerOptions"/>.</para>
/// <para>A keep-alive connection between requests holds no greenlet stack and no carrier thread: it waits on the hub's
/// reactor, so idle connections are limited by file descriptors, not threads.</para>
/// <para>At <see cref="HttpServerOptions.MaxConnections"/>, keep-alive yields to waiting clients: responses say
/// <c>Connection: close</c> and idle keep-alive connections are closed, so clients queued in the backlog get served.</para>
/// <para>The HTTP types live in <c>GreenRuntime.Servers</c> because <c>HttpContext</c>, <c>HttpRequest</c> and
/// <c>HttpResponse</c> would collide with ASP.NET Core's in projects that import both.</para>
/// </remarks>
/// <example>
/// <code>
/// using var server = new HttpServer(new IPEndPoint(IPAddress.Any, 8080), ctx =>
/// {
///     Thread.Sleep(20);                      // yields under Patch.All()
///     ctx.Response.ContentType = "text/plain";
///     ctx.Response.Write($"Hello from {ctx.Request.Path}\n");
/// });
/// server.ServeForever();
/// </code>
/// </example>
public sealed class HttpServer : IDisposable
{
    private readonly StreamServer _server;
    private readonly HashSet<HttpConnection> _idle = new();
    private HttpSyntax.DateCache? _dateCache;

    /// <summary>Creates a server; nothing is bound until <see cref="Start"/>.</summary>
    /// <param name="listen">Address and port; port 0 picks a free port (see <see cref="LocalEndPoint"/>).</param>
    /// <param name="handler">Runs once per request, on the connection's greenlet; may block cooperatively.</param>
    /// <param name="options">Limits and timeouts; null uses the defaults.</param>
    public HttpServer(IPEndPoint listen, Action<HttpContext> handler, HttpServerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(listen);
        ArgumentNullException.ThrowIfNull(handler);
        options ??= new HttpServerOptions();
        options.Validate();
        Options = options;
        Handler = handler;
        // Connections are stackless greenlets (HttpConnection.RunAsync), so idle keep-alive connections hold no carrier.
        _server = new StreamServer(listen, (Func<Socket, EndPoint, Task>)ServeConnectionAsync, options.MaxConnections, options.Pool, options.Backlog)
        {
            ConfigureAccepted = static s => s.NoDelay = true,
            DisplayName = "HttpServer",
            OnFull = CloseIdleConnections,
        };
    }

    /// <summary>The options the server was created with.</summary>
    public HttpServerOptions Options { get; }

    /// <summary>The bound address, with the actual port when 0 was requested.</summary>
    /// <exception cref="InvalidOperationException">The server has not been started.</exception>
    public EndPoint LocalEndPoint => _server.LocalEndPoint;

    /// <summary>Open connections, idle or serving a request.</summary>
    public int ConnectionCount => _server.ConnectionCount;

    /// <summary>Whether new connections are being accepted.</summary>
    public bool IsAccepting => _server.IsAccepting;

    internal Action<HttpContext> Handler { get; }
    internal ILogger Logger => _server.Logger;
    internal bool IsStopping => _server.IsStopping;
    internal HttpSyntax.DateCache DateCache => _dateCache!;

    /// <summary>Binds, listens and starts accepting. Hub-only; call once.</summary>
    public void Start()
    {
        _dateCache = new HttpSyntax.DateCache(Hub.Current.Options.TimeProvider);
        _server.Start();
    }

    /// <summary>Starts the server if needed and blocks the calling greenlet until <see cref="Stop"/> is called.</summary>
    public void ServeForever()
    {
        if (!_server.IsStarted) Start();
        _server.ServeForever();
    }

    /// <summary>Stops accepting (clients queue in the backlog); open connections continue.</summary>
    public void StopAccepting() => _server.StopAccepting();

    /// <summary>Resumes accepting after <see cref="StopAccepting"/>.</summary>
    public void StartAccepting() => _server.StartAccepting();

    /// <summary>
    /// Stops accepting, closes idle keep-alive connections at once, lets requests in progress finish for up to
    /// <paramref name="timeout"/> (default <see cref="StreamServer.DefaultStopTimeout"/>; their responses say
    /// <c>Connection: close</c>), then kills the rest. Idempotent. Hub-only.
    /// </summary>
    public void Stop(TimeSpan? timeout = null)
    {
        if (_server.IsStarted && !_server.IsStopping)
        {
            // Mark stopping first so a connection woken now does not start another request.
            _server.BeginStopping();
            foreach (var idle in _idle.ToList()) idle.Greenlet.Kill(block: false);
        }
        _server.Stop(timeout);
    }

    /// <summary>Same as <see cref="Stop"/> with the default timeout.</summary>
    public void Dispose() => Stop();

    /// <inheritdoc/>
    public override string ToString() => _server.ToString();

    internal bool IsFull => _server.IsFull;

    /// <summary>At capacity, idle keep-alive connections are the cheapest to give up: closing one is a normal HTTP event the client retries.</summary>
    private void CloseIdleConnections()
    {
        foreach (var idle in _idle.ToList()) idle.Greenlet.Kill(block: false);
    }

    internal void SetIdle(HttpConnection connection, bool idle)
    {
        if (idle) _idle.Add(connection);
        else _idle.Remove(connection);
    }

    // Not an async method: every state machine an idle connection keeps alive costs it memory.
    private Task ServeConnectionAsync(Socket socket, EndPoint remote) =>
        new HttpConnection(this, socket, remote, _server.Hub!.Options.TimeProvider).RunAsync();
}
