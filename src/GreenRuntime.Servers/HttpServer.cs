using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers;

/// <summary>
/// An HTTP/1.1 server for blocking handlers, like gevent's pywsgi: each request runs <c>handler(context)</c> on a
/// stackful greenlet of its connection, so the handler may block. On one hub (hub-only, like <see cref="StreamServer"/>),
/// or on every hub of <see cref="HttpServerOptions.Hubs"/>.
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
/// <para>With <see cref="HttpServerOptions.Hubs"/> every hub accepts on its own <c>SO_REUSEPORT</c> listener and serves
/// the connections it accepted for their whole life; the server may then be started and stopped from any thread, and
/// handlers of different hubs run in parallel (state they share needs ordinary thread safety).</para>
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
///
/// // On every core, started from the main thread:
/// using var group = new HubGroup(new HubGroupOptions { PinHubsToCpus = true });
/// using var wide = new HttpServer(new IPEndPoint(IPAddress.Any, 8080), Handle, new HttpServerOptions { Hubs = group });
/// wide.ServeForever();
/// </code>
/// </example>
public sealed class HttpServer : IDisposable
{
    private readonly StreamServer _server;

    /// <summary>Each hub's idle keep-alive connections; a set is touched only on its own hub (its greenlets never race).</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<Hub, HashSet<HttpConnection>> _idle = new();
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
        _server = new StreamServer(listen, (StreamServer.OwnedConnectionHandler)ServeConnectionAsync, options.MaxConnections, options.Pool, options.Backlog, options.Hubs)
        {
            ConfigureAccepted = static s => s.NoDelay = true,
            DisplayName = "HttpServer",
            OnFull = CloseIdleConnections,
            OnStopping = hub => CloseIdleConnectionsOf(hub),
        };
    }

    /// <summary>The options the server was created with.</summary>
    public HttpServerOptions Options { get; }

    /// <summary>The bound address, with the actual port when 0 was requested.</summary>
    /// <exception cref="InvalidOperationException">The server has not been started.</exception>
    public EndPoint LocalEndPoint => _server.LocalEndPoint;

    /// <summary>Open connections, idle or serving a request, on all hubs. Safe from any thread (a snapshot).</summary>
    public int ConnectionCount => _server.ConnectionCount;

    /// <summary>Open connections on each hub, in hub order (one entry without <see cref="HttpServerOptions.Hubs"/>). Safe from any thread (a snapshot).</summary>
    public IReadOnlyList<int> ConnectionCountPerHub => _server.ConnectionCountPerHub;

    /// <summary>Connections allowed at once, across all hubs (resolved at <see cref="Start"/> when the option is 0).</summary>
    public int MaxConnections => _server.MaxConnections;

    /// <summary>Whether new connections are being accepted.</summary>
    public bool IsAccepting => _server.IsAccepting;

    internal Action<HttpContext> Handler { get; }
    internal ILogger Logger => _server.Logger;
    internal bool IsStopping => _server.IsStopping;
    internal HttpSyntax.DateCache DateCache => _dateCache!;
    internal StreamServer StreamServer => _server;

    /// <summary>Binds, listens and starts accepting; call once. Without <see cref="HttpServerOptions.Hubs"/> on the hub that
    /// will run the server; with it, from any thread.</summary>
    /// <exception cref="InvalidOperationException">Already started.</exception>
    /// <exception cref="System.Net.Sockets.SocketException">The address could not be bound (e.g. in use).</exception>
    /// <exception cref="NotSupportedException">With a hub group: the system refuses <c>SO_REUSEPORT</c>.</exception>
    /// <exception cref="ObjectDisposedException">The hub group has been disposed.</exception>
    public void Start()
    {
        var time = (Options.Hubs is { } group ? group.Hubs[0] : Hub.Current).Options.TimeProvider;
        _dateCache ??= new HttpSyntax.DateCache(time);
        _server.Start();
    }

    /// <summary>Starts the server if needed and blocks the caller (a greenlet, or with a hub group any thread) until
    /// <see cref="Stop"/> is called, or the hub group is disposed.</summary>
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
    /// <c>Connection: close</c>), then kills the rest. Idempotent. Without a hub group on the server's hub; with one,
    /// from any thread (every hub drains its own connections, in parallel).
    /// </summary>
    public void Stop(TimeSpan? timeout = null)
    {
        // Mark stopping first so a connection woken now does not start another request; each hub then closes its idle
        // connections as its part of the stop begins (OnStopping).
        if (_server.IsStarted) _server.BeginStopping();
        _server.Stop(timeout);
    }

    /// <summary>Same as <see cref="Stop"/> with the default timeout.</summary>
    public void Dispose() => Stop();

    /// <inheritdoc/>
    public override string ToString() => _server.ToString();

    internal bool IsFull => _server.IsFull;

    /// <summary>
    /// At capacity, idle keep-alive connections are the cheapest to give up: closing one is a normal HTTP event the
    /// client retries. The slots are shared by all hubs, so the idle connections of every hub are closed, each on its own
    /// hub (<paramref name="full"/>'s at once, the others' through their inboxes).
    /// </summary>
    private void CloseIdleConnections(Hub full)
    {
        foreach (var hub in _idle.Keys)
        {
            if (hub == full) CloseIdleConnectionsOf(hub, keepAliveOnly: true);
            else if (!hub.IsDisposed) PostQuietly(hub, () => CloseIdleConnectionsOf(hub, keepAliveOnly: true));
        }
    }

    private static void PostQuietly(Hub hub, Action action)
    {
        try
        {
            hub.Post(action);
        }
        catch (ObjectDisposedException)
        {
            // That hub is gone, and its connections with it.
        }
    }

    /// <summary>Kills the idle connections of <paramref name="hub"/>: keep-alive connections between requests and, unless
    /// <paramref name="keepAliveOnly"/>, new ones that have not sent a byte yet. At capacity only the keep-alive ones go:
    /// a new connection's client is about to send, having just been let in. On that hub; never blocks.</summary>
    private void CloseIdleConnectionsOf(Hub hub, bool keepAliveOnly = false)
    {
        if (_idle.TryGetValue(hub, out var set))
            foreach (var idle in set.ToList())
                if (!keepAliveOnly || idle.Served) idle.Greenlet.Kill(block: false);
    }

    /// <summary>The set of <paramref name="hub"/>'s idle connections, which only that hub touches.</summary>
    internal HashSet<HttpConnection> IdleSetOf(Hub hub) => _idle.GetOrAdd(hub, static _ => new HashSet<HttpConnection>());

    /// <summary>Records whether a connection is idle. On the connection's hub.</summary>
    internal static void SetIdle(HttpConnection connection, bool idle)
    {
        if (idle) connection.IdleSet.Add(connection);
        else connection.IdleSet.Remove(connection);
    }

    // Not an async method: every state machine an idle connection keeps alive costs it memory.
    private Task ServeConnectionAsync(Socket socket, EndPoint remote)
    {
        var hub = Hub.Current; // the hub that accepted the connection serves it to the end
        return new HttpConnection(this, socket, remote, hub).RunAsync();
    }
}
