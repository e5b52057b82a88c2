// Servers: a TCP accept loop that runs each connection's handler in its own greenlet (gevent's StreamServer).
//
// Glossary: the *listener* is the bound, listening socket; the *accept loop* is the one greenlet that accepts;
// a *connection* is an accepted socket plus the stackful greenlet running the handler for it; a *slot* is room
// under MaxConnections.
//
// Design: one stackful greenlet per connection, so handlers may be ordinary blocking code (with Patch.All(),
// or the runtime's cooperative calls such as Green.Wait(socket.ReceiveAsync(...))). A server made with ForAsync
// runs a stackless greenlet per connection instead: it holds no carrier while it awaits, so its default connection
// limit comes from the file descriptors the process may open rather than from the carrier cap. The accept loop parks
// in a cooperative accept (the core's GreenRuntime.LowLevel.CooperativeSocket). Backpressure: when every slot is taken the accept loop
// parks until a connection ends, and new clients wait in the kernel's backlog instead of being refused.
//
// Protocol:
//   1. Start binds and listens (so LocalEndPoint is known at once, port 0 included) and spawns the accept loop.
//   2. The accept loop: wait for a slot; accept; spawn the connection's greenlet; repeat.
//   3. A connection's greenlet runs the handler, logs an exception it throws (other than GreenletExit), and
//      disposes the socket. A link on the greenlet frees the slot and wakes the accept loop, even if the
//      greenlet was killed before it started.
//   4. StopAccepting kills the accept loop (its pending accept is cancelled; the listener stays open, so
//      clients queue in the backlog); StartAccepting spawns a new one.
//   5. Stop: stop accepting, close the listener, wait for the handlers up to the timeout, then kill the rest
//      and close their sockets (which also ends calls that are not cooperative), and wake ServeForever.
//
// Rejected: a thread per connection (the point of the runtime is not to need one); failing new connections
// when full (gevent's pool backpressure keeps them waiting instead); an async-handler constructor overload (C#
// binds a blocking lambda whose end is unreachable, `(s, r) => { while (true) ... }`, to the Task-returning
// delegate, so the common blocking loop would silently become stackless: ForAsync is a named factory).
//
// Invariant: the number of live connections equals the number of slots taken, and never exceeds
// MaxConnections (with a GreenPool, the pool enforces its size). It is checked by AssertSlots where it changes.

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers;

/// <summary>
/// A TCP server that runs <c>handle(socket, remoteEndPoint)</c> in a new stackful greenlet for every accepted
/// connection, like gevent's <c>StreamServer</c>. Hub-only: create, start and stop it on one hub's thread or
/// greenlets.
/// </summary>
/// <remarks>
/// <para>The handler may use ordinary blocking <see cref="Socket"/>/<see cref="NetworkStream"/> calls once
/// Patch.All() is applied, or cooperative calls such as <c>Green.Wait(socket.ReceiveAsync(buffer))</c>
/// without it. The socket is disposed when the handler returns.</para>
/// <para>A handler exception is logged (event 202, category <c>GreenRuntime.Servers</c>) and closes only that
/// connection. When <see cref="MaxConnections"/> handlers are running, the server stops accepting until one
/// ends: new clients wait in the listen backlog instead of failing.</para>
/// <para>The connection limit is either a count (<c>maxConnections</c>) or a <see cref="GreenPool"/> whose members the
/// connections become (gevent's <c>spawn=pool</c>).</para>
/// </remarks>
/// <example>
/// <code>
/// using var server = new StreamServer(new IPEndPoint(IPAddress.Loopback, 0), (socket, remote) =>
/// {
///     var buffer = new byte[4096];
///     int n;
///     while ((n = Green.Wait(socket.ReceiveAsync(buffer))) > 0)
///         Green.Wait(socket.SendAsync(buffer.AsMemory(0, n)));
/// });
/// server.ServeForever();
/// </code>
/// </example>
[DebuggerDisplay("{ToString(),nq} connections={ConnectionCount}")]
public sealed class StreamServer : IDisposable
{
    /// <summary>How long <see cref="Stop"/> waits for handlers when no timeout is given (gevent's default).</summary>
    public static readonly TimeSpan DefaultStopTimeout = TimeSpan.FromSeconds(1);

    private readonly IPEndPoint _listen;
    private readonly Action<Socket, EndPoint>? _handle;
    private readonly Func<Socket, EndPoint, Task>? _handleAsync;
    private readonly int _requestedMaxConnections;
    private readonly HashSet<Connection> _connections = new();
    private readonly List<ParkToken> _serveWaiters = new();
    private Hub? _hub;
    private ILogger _logger = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    private Socket? _listener;
    private EndPoint? _localEndPoint;
    private Greenlet? _acceptLoop;

    /// <summary>
    /// The ambient context captured by <see cref="Start"/>. The accept loop, and so every connection greenlet it
    /// creates, runs under it, whichever greenlet later calls <see cref="StartAccepting"/>: a connection never
    /// starts from another request's context.
    /// </summary>
    private ExecutionContext? _startContext;
    private CancellationTokenSource? _acceptCancel;
    private ParkToken? _slotWaiter;
    private int _maxConnections;
    private readonly GreenPool? _pool;
    private bool _stopping;
    private bool _stopCalled;
    private bool _stopped;

    /// <summary>Creates a server; nothing is bound until <see cref="Start"/>.</summary>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port (read <see cref="LocalEndPoint"/> after Start).</param>
    /// <param name="handle">Runs once per connection in its own greenlet; the socket is disposed when it returns.</param>
    /// <param name="maxConnections">Handlers allowed at once; 0 (default) means the hub's carrier cap
    /// minus a reserve of up to 64, since every suspended connection keeps a carrier thread.</param>
    /// <param name="backlog">The listen backlog: connections the kernel queues while the server is full or not accepting (default 511, 1–65535).</param>
    public StreamServer(IPEndPoint listen, Action<Socket, EndPoint> handle, int maxConnections = 0, int backlog = 511)
        : this(listen, (Delegate)handle, maxConnections, null, backlog)
    {
    }

    /// <summary>Creates a server whose connections run as members of <paramref name="pool"/> (gevent's <c>spawn=pool</c>):
    /// while the pool is full the server stops accepting, so the pool's size is the connection limit, shared with
    /// whatever else runs in it.</summary>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port.</param>
    /// <param name="handle">Runs once per connection in its own greenlet; the socket is disposed when it returns.</param>
    /// <param name="pool">The pool every connection's greenlet joins; it must belong to the hub that starts the server.</param>
    /// <param name="backlog">The listen backlog (default 511, 1–65535).</param>
    public StreamServer(IPEndPoint listen, Action<Socket, EndPoint> handle, GreenPool pool, int backlog = 511)
        : this(listen, (Delegate)handle, 0, pool ?? throw new ArgumentNullException(nameof(pool)), backlog)
    {
    }

    /// <summary>
    /// Creates a server that runs <c>await handle(socket, remoteEndPoint)</c> in a new <em>stackless</em> greenlet for
    /// every accepted connection. Such a connection holds no carrier thread while it awaits, so a server can keep
    /// tens of thousands of mostly idle connections; the default <paramref name="maxConnections"/> is therefore the
    /// process's file-descriptor limit minus a reserve, not the carrier cap.
    /// </summary>
    /// <remarks>A named factory rather than a constructor overload: C# would bind a blocking handler whose end is
    /// unreachable (<c>(s, r) =&gt; { while (true) { ... } }</c>) to a Task-returning delegate. The greenlet's
    /// <see cref="Greenlet.CancellationToken"/> is cancelled when the connection is killed (at <see cref="Stop"/>);
    /// pass it to the awaited calls.</remarks>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port.</param>
    /// <param name="handle">Runs once per connection; the socket is disposed when its task ends.</param>
    /// <param name="maxConnections">Connections allowed at once; 0 (default) derives it from the file-descriptor limit.</param>
    /// <param name="backlog">The listen backlog (default 511, 1–65535).</param>
    public static StreamServer ForAsync(IPEndPoint listen, Func<Socket, EndPoint, Task> handle, int maxConnections = 0, int backlog = 511) =>
        new(listen, handle ?? throw new ArgumentNullException(nameof(handle)), maxConnections, null, backlog);

    /// <summary>Like <see cref="ForAsync(IPEndPoint, Func{Socket, EndPoint, Task}, int, int)"/>, with connections that
    /// run as members of <paramref name="pool"/>, whose size is then the connection limit.</summary>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port.</param>
    /// <param name="handle">Runs once per connection; the socket is disposed when its task ends.</param>
    /// <param name="pool">The pool every connection's greenlet joins; it must belong to the hub that starts the server.</param>
    /// <param name="backlog">The listen backlog (default 511, 1–65535).</param>
    public static StreamServer ForAsync(IPEndPoint listen, Func<Socket, EndPoint, Task> handle, GreenPool pool, int backlog = 511) =>
        new(listen, handle ?? throw new ArgumentNullException(nameof(handle)), 0, pool ?? throw new ArgumentNullException(nameof(pool)), backlog);

    /// <summary>The constructor behind the public ones: <paramref name="handle"/> is an <c>Action&lt;Socket, EndPoint&gt;</c>
    /// (stackful connections) or a <c>Func&lt;Socket, EndPoint, Task&gt;</c> (stackless).</summary>
    internal StreamServer(IPEndPoint listen, Delegate handle, int maxConnections, GreenPool? pool, int backlog)
    {
        ArgumentNullException.ThrowIfNull(listen);
        ArgumentNullException.ThrowIfNull(handle);
        if (maxConnections < 0)
            throw new ArgumentOutOfRangeException(nameof(maxConnections), maxConnections, "maxConnections must be positive, or 0 for the default.");
        if (backlog is < 1 or > 65535)
            throw new ArgumentOutOfRangeException(nameof(backlog), backlog, "backlog must be between 1 and 65535.");
        _listen = listen;
        switch (handle)
        {
            case Action<Socket, EndPoint> blocking: _handle = blocking; break;
            case Func<Socket, EndPoint, Task> async: _handleAsync = async; break;
            default: throw new ArgumentException($"A handler must be an Action<Socket, EndPoint> or a Func<Socket, EndPoint, Task>, not {handle.GetType()}.", nameof(handle));
        }
        _requestedMaxConnections = maxConnections;
        _pool = pool;
        Backlog = backlog;
    }

    /// <summary>Whether connections run as stackless greenlets (<see cref="ForAsync(IPEndPoint, Func{Socket, EndPoint, Task}, int, int)"/>).</summary>
    public bool IsAsync => _handleAsync != null;

    /// <summary>The pool connections run in, when the server was created with one.</summary>
    public GreenPool? Pool => _pool;

    /// <summary>The listen backlog.</summary>
    public int Backlog { get; }

    /// <summary>Handlers allowed at once (resolved at <see cref="Start"/> when 0 was passed).</summary>
    public int MaxConnections => _maxConnections != 0 ? _maxConnections : _requestedMaxConnections;

    /// <summary>The bound address, with the actual port when 0 was requested.</summary>
    /// <exception cref="InvalidOperationException">The server has not been started.</exception>
    public EndPoint LocalEndPoint => _localEndPoint ?? throw new InvalidOperationException("The server is not bound yet; call Start() first.");

    /// <summary>Connections whose handler is running.</summary>
    public int ConnectionCount => _connections.Count;

    /// <summary>Whether the accept loop is running (started, not stopped, not paused by <see cref="StopAccepting"/>).</summary>
    public bool IsAccepting => _acceptLoop is { Dead: false };

    /// <summary>Whether <see cref="Start"/> has been called.</summary>
    public bool IsStarted => _hub != null;

    /// <summary>Whether <see cref="Stop"/> has begun: handlers may use it to finish early (HttpServer closes keep-alive connections).</summary>
    public bool IsStopping => _stopping;

    /// <summary>Marks the server as stopping before <see cref="Stop"/> runs, so handlers see <see cref="IsStopping"/> while the caller closes idle work.</summary>
    internal void BeginStopping() => _stopping = true;

    /// <summary>Whether every slot is taken (the accept loop waits for one).</summary>
    internal bool IsFull => _hub != null && (_pool?.IsFull ?? _connections.Count >= _maxConnections);

    /// <summary>Called on the accept loop when every slot is taken, before it waits (HttpServer closes idle keep-alive connections). Must not block.</summary>
    internal Action? OnFull { get; init; }

    /// <summary>Configures each accepted socket before its handler runs (HttpServer turns Nagle off).</summary>
    internal Action<Socket>? ConfigureAccepted { get; init; }

    /// <summary>The display name used in logs and by <see cref="ToString"/>.</summary>
    internal string DisplayName { get; init; } = "StreamServer";

    internal ILogger Logger => _logger;

    internal Hub? Hub => _hub;

    /// <summary>Binds, listens and starts accepting. Hub-only; call once.</summary>
    /// <exception cref="InvalidOperationException">Already started.</exception>
    /// <exception cref="SocketException">The address could not be bound (e.g. in use).</exception>
    public void Start()
    {
        var hub = Hub.Current;
        if (_hub != null)
            throw new InvalidOperationException($"{this} was already started; create a new server to listen again.");
        var listener = new Socket(_listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(_listen);
            listener.Listen(Backlog);
        }
        catch
        {
            listener.Dispose();
            throw;
        }
        _hub = hub;
        _startContext = ExecutionContext.Capture();
        _logger = hub.Options.LoggerFactory.CreateLogger(ServerLog.Category);
        _listener = listener;
        _localEndPoint = listener.LocalEndPoint;
        int carriers = hub.CarrierCapacity;
        _maxConnections = _pool?.Size is { } poolSize ? poolSize
            : _requestedMaxConnections != 0 ? _requestedMaxConnections
            : IsAsync ? DescriptorLimit.ForConnections()
            : Math.Max(1, carriers - Math.Min(64, carriers / 2));
        ServerLog.Started(_logger, ToString(), _localEndPoint!.ToString()!);
        StartAccepting();
    }

    /// <summary>Starts the server if needed and blocks the calling greenlet until <see cref="Stop"/> is called (from another greenlet).</summary>
    /// <remarks>If the waiting greenlet is killed, the server is stopped before the exception propagates.</remarks>
    public void ServeForever()
    {
        if (_hub == null) Start();
        var hub = _hub!;
        bool stopped = false;
        try
        {
            while (!_stopped)
            {
                var token = Parking.BeginPark(WaitReason.Other);
                _serveWaiters.Add(token);
                Parking.EndPark(token);
            }
            stopped = true;
        }
        finally
        {
            if (!stopped) Stop();
        }
    }

    /// <summary>Stops accepting new connections; the listener stays open, so clients queue in the backlog. Running handlers continue.</summary>
    /// <remarks>An accept that completes in the same instant is dropped (the client sees its connection closed).</remarks>
    public void StopAccepting()
    {
        RequireStarted();
        var loop = _acceptLoop;
        _acceptLoop = null;
        if (loop == null || loop.Dead) return;
        _acceptCancel?.Cancel();
        loop.Kill(block: Parking.CanPark && loop != Green.Current);
    }

    /// <summary>Resumes accepting after <see cref="StopAccepting"/>. No-op while accepting.</summary>
    /// <exception cref="InvalidOperationException">The server was stopped, or never started.</exception>
    public void StartAccepting()
    {
        RequireStarted();
        if (_stopping)
            throw new InvalidOperationException($"{this} has been stopped; create a new server to accept again.");
        if (_acceptLoop is { Dead: false }) return;
        _acceptCancel?.Dispose();
        var cancel = new CancellationTokenSource();
        _acceptCancel = cancel;
        if (_startContext == null)
            _acceptLoop = Green.Spawn(() => AcceptLoop(cancel.Token), $"{DisplayName}.accept");
        else // the accept loop captures the Start context, not the caller's
            ExecutionContext.Run(_startContext, static s =>
            {
                var (server, token) = ((StreamServer, CancellationToken))s!;
                server._acceptLoop = Green.Spawn(() => server.AcceptLoop(token), $"{server.DisplayName}.accept");
            }, (this, cancel.Token));
    }

    /// <summary>
    /// Stops accepting, closes the listener, waits up to <paramref name="timeout"/> (default
    /// <see cref="DefaultStopTimeout"/>) for running handlers, then kills the rest and closes their sockets.
    /// Idempotent. Hub-only.
    /// </summary>
    /// <remarks>Called from a hub callback (e.g. <c>hub.Post(() => server.Stop())</c> from a Ctrl+C handler) it cannot
    /// wait, so running handlers are killed at once; spawn a greenlet that calls Stop to keep the grace period.</remarks>
    public void Stop(TimeSpan? timeout = null)
    {
        if (timeout is { } t && t < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), t, "The timeout must not be negative.");
        if (_hub == null || _stopCalled) return;
        AssertOnHub(_hub);
        _stopCalled = true;
        _stopping = true;
        try
        {
            StopAccepting();
            _listener?.Dispose();
            var current = Green.Current;
            var running = _connections.Where(c => c.Greenlet != current).ToList();
            if (running.Count > 0 && Parking.CanPark)
                Green.JoinAll(running.Select(c => c.Greenlet), timeout ?? DefaultStopTimeout);
            var left = running.Where(c => !c.Greenlet.Dead).ToList();
            if (left.Count > 0)
            {
                ServerLog.HandlersKilledAtStop(_logger, ToString(), left.Count);
                Green.KillAll(left.Select(c => c.Greenlet), block: false);
                foreach (var c in left) c.Socket.Dispose();
                if (Parking.CanPark) Green.JoinAll(left.Select(c => c.Greenlet), TimeSpan.FromSeconds(1));
            }
        }
        finally
        {
            _stopped = true;
            _acceptCancel?.Dispose();
            _acceptCancel = null;
            foreach (var token in _serveWaiters) token.TryWake();
            _serveWaiters.Clear();
            ServerLog.Stopped(_logger, ToString());
        }
    }

    /// <summary>Same as <see cref="Stop"/> with the default timeout.</summary>
    public void Dispose() => Stop();

    /// <summary>Names the server and its address for logs.</summary>
    public override string ToString() => $"<{DisplayName} {(_localEndPoint ?? _listen)}>";

    private void AcceptLoop(CancellationToken cancel)
    {
        var hub = _hub!;
        int backoffMs = 5;
        while (true)
        {
            while (IsFull)
            {
                OnFull?.Invoke();
                if (!IsFull) break;
                if (_pool != null) _pool.WaitAvailable();
                else WaitForSlot(hub);
            }
            Socket socket;
            try
            {
                socket = CooperativeSocket.Accept(_listener!, cancel);
                backoffMs = 5;
            }
            catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException || _stopping || cancel.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                // Out of file descriptors and the like: keep serving the connections we have and retry.
                ServerLog.AcceptFailed(_logger, e, _localEndPoint!.ToString()!, e.SocketErrorCode.ToString(), backoffMs);
                Green.Sleep(backoffMs);
                backoffMs = Math.Min(backoffMs * 2, 1000);
                continue;
            }
            SpawnConnection(socket);
        }
    }

    private void WaitForSlot(Hub hub)
    {
        var token = Parking.BeginPark(WaitReason.Other);
        _slotWaiter = token;
        try
        {
            Parking.EndPark(token);
        }
        finally
        {
            _slotWaiter = null;
        }
    }

    private void SpawnConnection(Socket socket)
    {
        EndPoint remote;
        try
        {
            ConfigureAccepted?.Invoke(socket);
            remote = socket.RemoteEndPoint!;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            socket.Dispose(); // the client is already gone
            return;
        }
        var connection = new Connection(socket, remote);
        _connectionName ??= $"{DisplayName}.conn"; // one string for all: thousands of idle connections each pay for what they hold
        var g = _handleAsync != null
            ? Greenlet.ForAsync(() => RunConnectionAsync(connection), _connectionName)
            : new Greenlet(() => RunConnection(connection), _connectionName);
        connection.Greenlet = g;
        _connections.Add(connection);
        AssertSlots();
        g.RawLink(_ => ConnectionEnded(connection)); // on the hub, however the greenlet ends (even unstarted)
        try
        {
            _pool?.Add(g); // a free slot was seen just before accepting; if another user of the pool took it, wait here
        }
        catch
        {
            g.Kill(block: false); // never started: its link still runs and closes the socket
            throw;
        }
        g.Start();
    }

    private void RunConnection(Connection connection)
    {
        try
        {
            _handle!(connection.Socket, connection.Remote);
        }
        catch (Exception e) when (e is not GreenletExit)
        {
            ServerLog.HandlerFailed(_logger, e, connection.Remote.ToString()!, e.GetType().Name);
        }
        finally
        {
            connection.Socket.Dispose();
        }
    }

    private async Task RunConnectionAsync(Connection connection)
    {
        try
        {
            await _handleAsync!(connection.Socket, connection.Remote);
        }
        catch (OperationCanceledException) when (connection.Greenlet.CancellationToken.IsCancellationRequested)
        {
            // The connection was killed (Stop): its cancellation token ended the handler's await. Not a failure.
        }
        catch (Exception e) when (e is not GreenletExit)
        {
            ServerLog.HandlerFailed(_logger, e, connection.Remote.ToString()!, e.GetType().Name);
        }
        finally
        {
            connection.Socket.Dispose();
        }
    }

    private void ConnectionEnded(Connection connection)
    {
        connection.Socket.Dispose();
        _connections.Remove(connection);
        AssertSlots();
        if (_slotWaiter is { } waiter) waiter.TryWake();
    }

    private void RequireStarted()
    {
        if (_hub == null)
            throw new InvalidOperationException($"{this} has not been started; call Start() or ServeForever() first.");
        AssertOnHub(_hub);
    }

    /// <summary>Hub-only: the server's state belongs to the hub that started it (its greenlets never race).</summary>
    private void AssertOnHub(Hub hub)
    {
        if (Parking.CurrentHub != hub)
            throw new InvalidOperationException($"{this} belongs to {hub} and must be used from its thread or one of its greenlets. From other threads use hub.Post(() => server.Stop()).");
    }

    [Conditional("DEBUG")]
    private void AssertSlots()
    {
        if (_pool == null && _connections.Count > _maxConnections)
            throw new InvalidOperationException($"Internal error: {this} runs {_connections.Count} connections but MaxConnections is {_maxConnections} (the accept loop must wait for a slot).");
    }

    private string? _connectionName;

    private sealed class Connection(Socket socket, EndPoint remote)
    {
        public Socket Socket { get; } = socket;
        public EndPoint Remote { get; } = remote;
        public Greenlet Greenlet { get; set; } = null!;
    }
}
