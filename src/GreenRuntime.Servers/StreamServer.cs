// Servers: a TCP accept loop that runs each connection's handler in its own greenlet (gevent's StreamServer).
//
// Glossary: the *listener* is a bound, listening socket; an *accept loop* is the greenlet that accepts on one
// listener; an *acceptor* is one hub's listener, accept loop and connections (HubAcceptor.cs); a *connection* is an
// accepted socket plus the greenlet running the handler for it; a *slot* is room under MaxConnections.
//
// Design: one stackful greenlet per connection, so handlers may be ordinary blocking code (with Patch.All(),
// or the runtime's cooperative calls such as Green.Wait(socket.ReceiveAsync(...))). A server made with ForAsync
// runs a stackless greenlet per connection instead: it holds no carrier while it awaits, so its default connection
// limit comes from the file descriptors the process may open rather than from the carrier cap. Accepting happens
// on the hub's epoll reactor (HubAcceptor.cs). Backpressure: when every slot is taken the accept loops park until
// a connection ends, and new clients wait in the kernel's backlog instead of being refused.
//
// One hub or a group. Without a HubGroup the server has one acceptor on the hub that starts it, and is hub-only, as
// every hub object. With a HubGroup it has one acceptor per hub, each with a listener of its own bound with
// SO_REUSEPORT to the same port (Listeners.cs): the kernel spreads connections over the listeners and each stays on
// the hub that accepted it for its whole life. The server object is then shared by the hubs and the thread that
// created it, so its own state (flags, the acceptors' loops) is guarded by _gate, its counters are atomic, and each
// acceptor's connections are touched only on that acceptor's hub; public methods may be called from any thread.
//
// Protocol:
//   1. Start binds and listens (so LocalEndPoint is known at once, port 0 included) and spawns the accept loops.
//   2. An accept loop: wait for a slot; accept; take the slot; spawn the connection's greenlet; repeat.
//   3. A connection's greenlet runs the handler, logs an exception it throws (other than GreenletExit), and
//      disposes the socket. A link on the greenlet frees the slot and wakes the accept loops, even if the
//      greenlet was killed before it started.
//   4. StopAccepting kills the accept loops (their pending waits are cancelled; the listeners stay open, so
//      clients queue in the backlog); StartAccepting spawns new ones.
//   5. Stop: stop accepting, close the listeners, and on each hub wait for its handlers up to the timeout, then
//      kill the rest and close their sockets (which also ends calls that are not cooperative); then wake
//      ServeForever.
//
// Rejected: a thread per connection (the point of the runtime is not to need one); failing new connections
// when full (gevent's pool backpressure keeps them waiting instead); an async-handler constructor overload (C#
// binds a blocking lambda whose end is unreachable, `(s, r) => { while (true) ... }`, to the Task-returning
// delegate, so the common blocking loop would silently become stackless: ForAsync is a named factory); a limit per
// hub (the kernel's spread is uneven, so a per-hub share would refuse work while another hub has room).
//
// Invariant: the number of live connections (_live) equals the slots taken, and never exceeds MaxConnections
// (with a GreenPool, the pool enforces its size). It is checked by AssertSlots where it changes.

using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace GreenRuntime.Servers;

/// <summary>
/// A TCP server that runs <c>handle(socket, remoteEndPoint)</c> in a new stackful greenlet for every accepted
/// connection, like gevent's <c>StreamServer</c>. On one hub, or on every hub of a <see cref="HubGroup"/>.
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
/// <para><b>Where it may be used.</b> Without a hub group the server belongs to the hub that starts it: create, start
/// and stop it on that hub's thread or greenlets. With <c>hubs</c> every hub of the group accepts on a listener of
/// its own, bound with <c>SO_REUSEPORT</c> to the same port (Linux), and each connection is served wholly on the hub
/// that accepted it; the server may then be started, stopped and queried from any thread. Handlers of different hubs
/// run in parallel: state they share needs ordinary thread safety.</para>
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
///
/// // On every core: one accept loop and listener per hub.
/// using var group = new HubGroup();
/// using var wide = new StreamServer(new IPEndPoint(IPAddress.Any, 7000), Echo, hubs: group);
/// wide.ServeForever();                       // from the main thread: returns when Stop is called
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
    private readonly bool _handlerOwnsConnections;
    private readonly int _requestedMaxConnections;
    private readonly GreenPool? _pool;
    private readonly HubGroup? _hubs;
    private readonly Event _stoppedEvent = new();

    /// <summary>Guards the flags and the acceptors' loops when several threads use the server (never held across a wait).</summary>
    private readonly object _gate = new();
    private HubAcceptor[] _acceptors = [];
    private ILogger _logger = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    private EndPoint? _localEndPoint;

    /// <summary>
    /// The ambient context captured by <see cref="Start"/>. The accept loops, and so every connection greenlet they
    /// create, run under it, whichever greenlet later calls <see cref="StartAccepting"/>: a connection never
    /// starts from another request's context.
    /// </summary>
    private ExecutionContext? _startContext;
    private int _maxConnections;
    private int _live;
    private volatile bool _started;
    private volatile bool _stopping;
    private bool _stopCalled;
    private int _finished;
    private string? _connectionName;

    /// <summary>Creates a server; nothing is bound until <see cref="Start"/>.</summary>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port (read <see cref="LocalEndPoint"/> after Start).</param>
    /// <param name="handle">Runs once per connection in its own greenlet; the socket is disposed when it returns.</param>
    /// <param name="maxConnections">Handlers allowed at once, across all hubs; 0 (default) means the hub's carrier cap
    /// minus a reserve of up to 64, since every suspended connection keeps a carrier thread.</param>
    /// <param name="backlog">The listen backlog of each listener: connections the kernel queues while the server is full or not accepting (default 511, 1–65535).</param>
    /// <param name="hubs">Accept and serve on every hub of this group (one SO_REUSEPORT listener per hub); null (default): on the hub that calls <see cref="Start"/>.</param>
    public StreamServer(IPEndPoint listen, Action<Socket, EndPoint> handle, int maxConnections = 0, int backlog = 511, HubGroup? hubs = null)
        : this(listen, (Delegate)handle, maxConnections, null, backlog, hubs)
    {
    }

    /// <summary>Creates a server whose connections run as members of <paramref name="pool"/> (gevent's <c>spawn=pool</c>):
    /// while the pool is full the server stops accepting, so the pool's size is the connection limit, shared with
    /// whatever else runs in it. A pool belongs to one hub, so such a server runs on one hub.</summary>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port.</param>
    /// <param name="handle">Runs once per connection in its own greenlet; the socket is disposed when it returns.</param>
    /// <param name="pool">The pool every connection's greenlet joins; it must belong to the hub that starts the server.</param>
    /// <param name="backlog">The listen backlog (default 511, 1–65535).</param>
    public StreamServer(IPEndPoint listen, Action<Socket, EndPoint> handle, GreenPool pool, int backlog = 511)
        : this(listen, (Delegate)handle, 0, pool ?? throw new ArgumentNullException(nameof(pool)), backlog, null)
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
    /// <param name="maxConnections">Connections allowed at once, across all hubs; 0 (default) derives it from the file-descriptor limit.</param>
    /// <param name="backlog">The listen backlog of each listener (default 511, 1–65535).</param>
    /// <param name="hubs">Accept and serve on every hub of this group (one SO_REUSEPORT listener per hub); null (default): on the hub that calls <see cref="Start"/>.</param>
    public static StreamServer ForAsync(IPEndPoint listen, Func<Socket, EndPoint, Task> handle, int maxConnections = 0, int backlog = 511, HubGroup? hubs = null) =>
        new(listen, handle ?? throw new ArgumentNullException(nameof(handle)), maxConnections, null, backlog, hubs);

    /// <summary>Like <see cref="ForAsync(IPEndPoint, Func{Socket, EndPoint, Task}, int, int, HubGroup?)"/>, with connections that
    /// run as members of <paramref name="pool"/>, whose size is then the connection limit (on the pool's one hub).</summary>
    /// <param name="listen">Address and port to listen on; port 0 picks a free port.</param>
    /// <param name="handle">Runs once per connection; the socket is disposed when its task ends.</param>
    /// <param name="pool">The pool every connection's greenlet joins; it must belong to the hub that starts the server.</param>
    /// <param name="backlog">The listen backlog (default 511, 1–65535).</param>
    public static StreamServer ForAsync(IPEndPoint listen, Func<Socket, EndPoint, Task> handle, GreenPool pool, int backlog = 511) =>
        new(listen, handle ?? throw new ArgumentNullException(nameof(handle)), 0, pool ?? throw new ArgumentNullException(nameof(pool)), backlog, null);

    /// <summary>The constructor behind the public ones: <paramref name="handle"/> is an <c>Action&lt;Socket, EndPoint&gt;</c>
    /// (stackful connections) or a <c>Func&lt;Socket, EndPoint, Task&gt;</c> (stackless).</summary>
    internal StreamServer(IPEndPoint listen, Delegate handle, int maxConnections, GreenPool? pool, int backlog, HubGroup? hubs)
    {
        ArgumentNullException.ThrowIfNull(listen);
        ArgumentNullException.ThrowIfNull(handle);
        if (maxConnections < 0)
            throw new ArgumentOutOfRangeException(nameof(maxConnections), maxConnections, "maxConnections must be positive, or 0 for the default.");
        if (backlog is < 1 or > 65535)
            throw new ArgumentOutOfRangeException(nameof(backlog), backlog, "backlog must be between 1 and 65535.");
        if (pool != null && hubs != null)
            throw new ArgumentException("A GreenPool belongs to one hub, so it cannot be the connection limit of a server on a HubGroup; pass maxConnections instead.", nameof(hubs));
        _listen = listen;
        switch (handle)
        {
            case Action<Socket, EndPoint> blocking: _handle = blocking; break;
            case Func<Socket, EndPoint, Task> async: _handleAsync = async; break;
            case OwnedConnectionHandler owned: _handleAsync = owned.Invoke; _handlerOwnsConnections = true; break;
            default: throw new ArgumentException($"A handler must be an Action<Socket, EndPoint> or a Func<Socket, EndPoint, Task>, not {handle.GetType()}.", nameof(handle));
        }
        _requestedMaxConnections = maxConnections;
        _pool = pool;
        _hubs = hubs;
        Backlog = backlog;
    }

    /// <summary>Whether connections run as stackless greenlets (<see cref="ForAsync(IPEndPoint, Func{Socket, EndPoint, Task}, int, int, HubGroup?)"/>).</summary>
    public bool IsAsync => _handleAsync != null;

    /// <summary>The pool connections run in, when the server was created with one.</summary>
    public GreenPool? Pool => _pool;

    /// <summary>The hub group the server accepts on (one listener per hub), or null for a server on one hub.</summary>
    public HubGroup? Hubs => _hubs;

    /// <summary>The listen backlog of each listener.</summary>
    public int Backlog { get; }

    /// <summary>Handlers allowed at once, across all hubs of the server (resolved at <see cref="Start"/> when 0 was passed).</summary>
    public int MaxConnections => _maxConnections != 0 ? _maxConnections : _requestedMaxConnections;

    /// <summary>The bound address, with the actual port when 0 was requested (every listener of a group has it).</summary>
    /// <exception cref="InvalidOperationException">The server has not been started.</exception>
    public EndPoint LocalEndPoint => _localEndPoint ?? throw new InvalidOperationException("The server is not bound yet; call Start() first.");

    /// <summary>Connections whose handler is running, on all hubs. Safe from any thread (a snapshot).</summary>
    public int ConnectionCount => Volatile.Read(ref _live);

    /// <summary>Connections running on each hub of the server, in hub order (one entry without a group). Safe from any thread (a snapshot).</summary>
    /// <remarks>With SO_REUSEPORT the kernel picks the listener by a hash of each connection's addresses and ports, so
    /// the spread is even only over many connections.</remarks>
    public IReadOnlyList<int> ConnectionCountPerHub => Volatile.Read(ref _acceptors).Select(a => a.Count).ToArray();

    /// <summary>Whether the accept loops are running (started, not stopped, not paused by <see cref="StopAccepting"/>).</summary>
    public bool IsAccepting
    {
        get
        {
            lock (_gate) return _acceptors.Length > 0 && _acceptors.All(a => a.Loop is { Dead: false });
        }
    }

    /// <summary>Whether <see cref="Start"/> has been called.</summary>
    public bool IsStarted => _started;

    /// <summary>Whether <see cref="Stop"/> has begun: handlers may use it to finish early (HttpServer closes keep-alive connections).</summary>
    public bool IsStopping => _stopping;

    /// <summary>Marks the server as stopping before <see cref="Stop"/> runs, so handlers see <see cref="IsStopping"/> while the caller closes idle work.</summary>
    internal void BeginStopping() => _stopping = true;

    /// <summary>Whether every slot is taken (the accept loops wait for one). Any thread.</summary>
    internal bool IsFull => _started && (_pool?.IsFull ?? Volatile.Read(ref _live) >= _maxConnections);

    /// <summary>Called on a hub's accept loop when every slot is taken, before it waits (HttpServer closes idle keep-alive connections). Must not block.</summary>
    internal Action<Hub>? OnFull { get; init; }

    /// <summary>Called on each hub when Stop begins there, before its connections are awaited (HttpServer closes idle keep-alive connections). Must not block.</summary>
    internal Action<Hub>? OnStopping { get; init; }

    /// <summary>Configures each accepted socket before its handler runs (HttpServer turns Nagle off).</summary>
    internal Action<Socket>? ConfigureAccepted { get; init; }

    /// <summary>The display name used in logs and by <see cref="ToString"/>.</summary>
    internal string DisplayName { get; init; } = "StreamServer";

    internal ILogger Logger => _logger;

    /// <summary>Connections accepted by each hub since the start (tests count the kernel's spread with it).</summary>
    internal long[] AcceptedPerHub => Volatile.Read(ref _acceptors).Select(a => a.Accepted).ToArray();

    internal void OnFullHook(Hub hub) => OnFull?.Invoke(hub);

    /// <summary>Binds, listens and starts accepting; call once. Without a group, on the hub that will run the server;
    /// with one, from any thread.</summary>
    /// <exception cref="InvalidOperationException">Already started, or (without a group) not on a hub's thread.</exception>
    /// <exception cref="ObjectDisposedException">The hub group has been disposed.</exception>
    /// <exception cref="SocketException">The address could not be bound (e.g. in use).</exception>
    /// <exception cref="NotSupportedException">With a group: the system refuses <c>SO_REUSEPORT</c>.</exception>
    /// <exception cref="PlatformNotSupportedException">With a group: not Linux.</exception>
    public void Start()
    {
        var hubs = _hubs?.Hubs ?? [Hub.Current];
        if (_hubs is { IsDisposed: true })
            throw new ObjectDisposedException(nameof(HubGroup), $"{this} cannot start: its hub group has been disposed.");
        lock (_gate)
        {
            if (_started)
                throw new InvalidOperationException($"{this} was already started; create a new server to listen again.");
            var listeners = Listeners.Bind(_listen, hubs.Count, Backlog);
            var first = hubs[0];
            _startContext = ExecutionContext.Capture();
            _logger = first.Options.LoggerFactory.CreateLogger(ServerLog.Category);
            _localEndPoint = listeners[0].LocalEndPoint;
            int carriers = first.CarrierCapacity;
            _maxConnections = _pool?.Size is { } poolSize ? poolSize
                : _requestedMaxConnections != 0 ? _requestedMaxConnections
                : IsAsync ? DescriptorLimit.ForConnections()
                : Math.Max(1, carriers - Math.Min(64, carriers / 2));
            _acceptors = hubs.Select((hub, i) => new HubAcceptor(this, hub, listeners[i], i)).ToArray();
            _started = true;
        }
        ServerLog.Started(_logger, ToString(), _localEndPoint!.ToString()!);
        StartAccepting();
    }

    /// <summary>Starts the server if needed and blocks the caller until <see cref="Stop"/> is called (from another
    /// greenlet or thread). On a greenlet only that greenlet waits; on a plain thread (with a group) the thread blocks.</summary>
    /// <remarks>If the waiting greenlet is killed, the server is stopped before the exception propagates. With a group,
    /// it also returns when the group is disposed (which ends the accept loops and connections).</remarks>
    public void ServeForever()
    {
        if (!_started) Start();
        bool stopped = false;
        try
        {
            if (_hubs == null) _stoppedEvent.Wait();
            else
            {
                // A group disposed while no accept loop runs (after StopAccepting) has nobody to report it: look now and then.
                while (!_stoppedEvent.Wait(TimeSpan.FromSeconds(1)))
                    if (_hubs.IsDisposed) StoppedByGroupDisposal();
            }
            stopped = true;
        }
        finally
        {
            if (!stopped) Stop();
        }
    }

    /// <summary>Stops accepting new connections; the listeners stay open, so clients queue in the backlog. Running handlers continue.</summary>
    /// <remarks>An accept that completes in the same instant is dropped (the client sees its connection closed).</remarks>
    public void StopAccepting()
    {
        RequireStarted();
        var loops = new List<Greenlet>();
        lock (_gate)
        {
            foreach (var a in _acceptors)
            {
                if (a.Loop is { Dead: false } loop) loops.Add(loop);
                a.Loop = null;
                a.Cancel?.Cancel();
            }
        }
        var current = CurrentGreenlet();
        foreach (var loop in loops)
            loop.Kill(block: loop != current && MayBlockHere());
    }

    /// <summary>Resumes accepting after <see cref="StopAccepting"/>. No-op while accepting.</summary>
    /// <exception cref="InvalidOperationException">The server was stopped, or never started.</exception>
    /// <exception cref="ObjectDisposedException">The hub group has been disposed.</exception>
    public void StartAccepting()
    {
        RequireStarted();
        lock (_gate)
        {
            if (_stopping)
                throw new InvalidOperationException($"{this} has been stopped; create a new server to accept again.");
            foreach (var a in _acceptors)
            {
                if (a.Loop is { Dead: false }) continue;
                a.Cancel?.Dispose();
                var cancel = new CancellationTokenSource();
                a.Cancel = cancel;
                // The accept loop captures the Start context, not the caller's.
                ExecutionContext.Run(_startContext!, static s =>
                {
                    var (acceptor, token) = ((HubAcceptor, CancellationToken))s!;
                    acceptor.Loop = acceptor.Server.SpawnAcceptLoop(acceptor, token);
                }, (a, cancel.Token));
            }
        }
    }

    private Greenlet SpawnAcceptLoop(HubAcceptor acceptor, CancellationToken cancel)
    {
        string name = $"{DisplayName}.accept";
        if (_hubs == null) return Green.Spawn(() => acceptor.Run(cancel), name);
        var loop = _hubs.SpawnOn(acceptor.Index, () => acceptor.Run(cancel), name);
        // A loop that ends without StopAccepting or Stop was killed by the group's disposal: the server then stops.
        loop.RawLink(_ => { if (_hubs.IsDisposed) StoppedByGroupDisposal(); });
        return loop;
    }

    /// <summary>
    /// Stops accepting, closes the listeners, waits up to <paramref name="timeout"/> (default
    /// <see cref="DefaultStopTimeout"/>) for running handlers, then kills the rest and closes their sockets.
    /// Idempotent. Without a group, on the server's hub; with one, from any thread (each hub waits for its own
    /// handlers, in parallel).
    /// </summary>
    /// <remarks>Called from a hub callback (e.g. <c>hub.Post(() => server.Stop())</c> from a Ctrl+C handler) of a
    /// server on one hub it cannot wait, so running handlers are killed at once; spawn a greenlet that calls Stop to keep
    /// the grace period. With a group the grace period is kept, and a caller that cannot wait returns before it ends.</remarks>
    public void Stop(TimeSpan? timeout = null)
    {
        if (timeout is { } t && t < TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(timeout), t, "The timeout must not be negative.");
        HubAcceptor[] acceptors;
        lock (_gate)
        {
            if (!_started || _stopCalled) return;
            if (_hubs == null) AssertOnHub(_acceptors[0].Hub);
            _stopCalled = true;
            _stopping = true;
            acceptors = _acceptors;
        }
        var limit = timeout ?? DefaultStopTimeout;
        try
        {
            StopAccepting();
            foreach (var a in acceptors) a.Listener.Dispose();
            if (_hubs == null)
            {
                DrainHub(acceptors[0], limit, CurrentGreenlet());
                Finish();
            }
            else
                StopGroup(acceptors, limit);
        }
        catch
        {
            Finish();
            throw;
        }
    }

    /// <summary>Step 5 on every hub of the group at once; the caller waits for all when it may block.</summary>
    private void StopGroup(HubAcceptor[] acceptors, TimeSpan limit)
    {
        var caller = CurrentGreenlet();
        var drains = new List<Greenlet>();
        foreach (var a in acceptors)
        {
            try
            {
                drains.Add(_hubs!.SpawnOn(a.Index, () => DrainHub(a, limit, caller), $"{DisplayName}.stop"));
            }
            catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
            {
                // The group was disposed (or that hub failed): its greenlets were killed with it, nothing to wait for.
            }
        }
        int left = drains.Count;
        if (left == 0)
        {
            Finish();
            return;
        }
        foreach (var d in drains)
            d.RawLink(_ => { if (Interlocked.Decrement(ref left) == 0) Finish(); });
        if (MayBlockHere())
            foreach (var d in drains) d.Join();
    }

    private void DrainHub(HubAcceptor acceptor, TimeSpan limit, Greenlet? caller)
    {
        OnStopping?.Invoke(acceptor.Hub);
        int killed = acceptor.Drain(limit, caller);
        if (killed > 0) ServerLog.HandlersKilledAtStop(_logger, ToString(), killed);
    }

    /// <summary>The end of Stop: ServeForever returns. Runs once per stop (Event.Set is idempotent).</summary>
    private void Finish()
    {
        lock (_gate)
        {
            foreach (var a in _acceptors)
            {
                a.Cancel?.Dispose();
                a.Cancel = null;
            }
        }
        if (Interlocked.Exchange(ref _finished, 1) != 0) return;
        _stoppedEvent.Set();
        ServerLog.Stopped(_logger, ToString());
    }

    /// <summary>The group was disposed under a running server: its hubs killed the loops and connections; close the
    /// listeners and let ServeForever return.</summary>
    private void StoppedByGroupDisposal()
    {
        lock (_gate)
        {
            if (_stopCalled) return;
            _stopCalled = true;
            _stopping = true;
        }
        foreach (var a in _acceptors) a.Listener.Dispose();
        Finish();
    }

    /// <summary>Same as <see cref="Stop"/> with the default timeout.</summary>
    public void Dispose() => Stop();

    /// <summary>Names the server and its address for logs.</summary>
    public override string ToString() =>
        $"<{DisplayName} {(_localEndPoint ?? _listen)}{(_hubs != null ? $" on {_hubs.Hubs.Count} hubs" : "")}>";

    // ---- slots (any thread) ------------------------------------------------------------------------------------

    /// <summary>Takes a slot for a connection just accepted; false when another hub took the last one meanwhile.</summary>
    internal bool TryTakeSlot()
    {
        if (_pool != null)
        {
            Interlocked.Increment(ref _live); // the pool enforces its size (Add waits)
            return true;
        }
        int live = Volatile.Read(ref _live);
        while (true)
        {
            if (live >= _maxConnections) return false;
            int seen = Interlocked.CompareExchange(ref _live, live + 1, live);
            if (seen == live)
            {
                AssertSlots();
                return true;
            }
            live = seen;
        }
    }

    /// <summary>Frees a slot and wakes the accept loops that wait for one (on any hub).</summary>
    internal void ReleaseSlot()
    {
        Interlocked.Decrement(ref _live);
        AssertSlots();
        foreach (var a in _acceptors) a.WakeSlotWaiter();
    }

    // ---- connections (on the connection's hub) -------------------------------------------------------------------

    internal Greenlet CreateConnectionGreenlet(Connection connection)
    {
        _connectionName ??= $"{DisplayName}.conn"; // one string for all: thousands of idle connections each pay for what they hold
        // Bodies are delegates bound to the connection, not closures: an idle connection keeps its body alive.
        return _handleAsync != null
            ? Greenlet.ForAsync(connection.RunAsync, _connectionName)
            : new Greenlet(connection.Run, _connectionName);
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

    private Task RunConnectionAsync(Connection connection) =>
        // A handler that owns its connections is awaited by nobody but the greenlet: a wrapping state machine would
        // be kept by every idle connection.
        _handlerOwnsConnections ? _handleAsync!(connection.Socket, connection.Remote) : RunHandlerAsync(connection);

    private async Task RunHandlerAsync(Connection connection)
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

    // ---- where the caller is -------------------------------------------------------------------------------------

    private void RequireStarted()
    {
        if (!_started)
            throw new InvalidOperationException($"{this} has not been started; call Start() or ServeForever() first.");
        if (_hubs == null) AssertOnHub(_acceptors[0].Hub);
    }

    /// <summary>Without a group the server's state belongs to the hub that started it (its greenlets never race).</summary>
    private void AssertOnHub(Hub hub)
    {
        if (Parking.CurrentHub != hub)
            throw new InvalidOperationException($"{this} belongs to {hub} and must be used from its thread or one of its greenlets. From other threads use hub.Post(() => server.Stop()), or create the server with a HubGroup.");
    }

    /// <summary>The calling greenlet, or null on a thread with no hub.</summary>
    private static Greenlet? CurrentGreenlet() => Parking.CurrentHub != null ? Green.Current : null;

    /// <summary>Whether the caller may wait here: a greenlet that may park, or a thread with no hub (not a hub callback).</summary>
    private static bool MayBlockHere() => Parking.CurrentHub == null || Parking.CanPark;

    [Conditional("DEBUG")]
    private void AssertSlots()
    {
        int live = Volatile.Read(ref _live);
        if (live < 0 || (_pool == null && live > _maxConnections))
            throw new InvalidOperationException($"Internal error: {this} runs {live} connections but MaxConnections is {_maxConnections} (an accept loop must take a slot before it spawns a connection).");
    }

    internal sealed class Connection(StreamServer server, Socket socket, EndPoint remote)
    {
        public Socket Socket { get; } = socket;
        public EndPoint Remote { get; } = remote;
        public Greenlet Greenlet { get; set; } = null!;

        /// <summary>The body of a blocking server's connection greenlet.</summary>
        public void Run() => server.RunConnection(this);

        /// <summary>The body of an async server's connection greenlet.</summary>
        public Task RunAsync() => server.RunConnectionAsync(this);
    }

    /// <summary>
    /// An async connection handler that owns its connection completely (the HTTP server's): it handles its own
    /// failures and closes the socket itself, so the server runs it as the greenlet's body with no wrapper around it.
    /// </summary>
    internal delegate Task OwnedConnectionHandler(Socket socket, EndPoint remote);
}
