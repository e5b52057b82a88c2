using System.Collections.Concurrent;
using System.Diagnostics;
using GreenRuntime.Scheduling;
using Microsoft.Extensions.Logging;

namespace GreenRuntime;

/// <summary>
/// The scheduler of one OS thread's greenlets, like gevent's hub: it owns the ready queue, the timers and a
/// thread-safe inbox, and hands the one baton from greenlet to greenlet.
/// </summary>
/// <remarks>
/// <para>A thread gets its hub the first time it uses greenlets (<see cref="Current"/>), or explicitly with
/// <c>using var hub = new Hub(options);</c>, which binds the new hub to the calling thread until it is
/// disposed. That thread runs the hub's <em>main greenlet</em>; spawned greenlets run only while the main
/// greenlet blocks in a cooperative call (Join, Sleep, Wait, ...), exactly as in gevent.</para>
/// <para>Thread safety: <see cref="Post"/>, <see cref="Greenlet.Kill"/>, <see cref="Greenlet.Join"/>, links, waking a
/// greenlet from a thread-pool continuation and the primitives of the Sync folder (Event, queues, ...) are safe from
/// any thread. Everything else is hub-only: it must be called from the hub's thread or one of its greenlets, and
/// throws <see cref="InvalidOperationException"/> otherwise. Several hubs in one process: <see cref="HubGroup"/>.</para>
/// <para>Invariant 1 (the baton): at most one thread runs greenlet or hub code of a hub at any instant.
/// The scheduler (Scheduling/Hub.Scheduler.cs) is the only code that moves the baton.</para>
/// </remarks>
[DebuggerDisplay("Hub #{Id} ready={ReadyCount} timers={TimerCount}")]
public sealed partial class Hub : IDisposable
{
    private static int s_nextId;
    [ThreadStatic] private static Hub? t_current;

    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly CarrierPool _pool;
    private readonly Carrier _mainCarrier;
    private readonly int _cpu = -1;
    private readonly ulong[]? _mainAffinity;
    private bool _disposed;

    /// <summary>Creates a hub and binds it to the calling thread until it is disposed.</summary>
    /// <exception cref="InvalidOperationException">The calling thread already has a hub.</exception>
    public Hub(HubOptions? options = null)
    {
        options ??= new HubOptions();
        options.Validate();
        _ = AmbientContext.Default; // probed here, before this thread has a hub, so no patched call can act cooperatively
        if (t_current != null)
            throw new InvalidOperationException($"This thread already has a hub ({t_current}). Dispose it first, or use Hub.Current.");
        Options = options;
        Id = Interlocked.Increment(ref s_nextId);
        var logger = new Diagnostics.HubContextLogger(options.LoggerFactory.CreateLogger("GreenRuntime.Hub"));
        _logger = logger;
        _time = options.TimeProvider;
        _pool = CarrierPool.For(options.CarrierStackSize);
        _pool.Prestart(2);
        _mainCarrier = Carrier.ForCurrentThread();
        HubGreenlet = Greenlet.CreateSpecial(this, "Hub");
        MainGreenlet = Greenlet.CreateSpecial(this, "Main");
        MainGreenlet.State = GreenletState.Running;
        MainGreenlet.Carrier = _mainCarrier;
        _mainCarrier.Owner = MainGreenlet;
        _current = MainGreenlet;
        logger.Bind(this);
        if (options.PinCarriersToOneCpu)
        {
            _cpu = Affinity.CurrentCpu();
            _mainAffinity = Affinity.Save();
            _mainCarrier.PinTo(_cpu);
        }
        TakeBaton();
        t_current = this;
        Register(this);
        StartDiagnostics();
    }

    /// <summary>The calling thread's hub, created with default options on first use.</summary>
    /// <remarks>On a greenlet this is the hub that runs it, whichever carrier thread it is on.</remarks>
    public static Hub Current => t_current ?? (t_released is { } released ? throw ReleasedThreadMisuse(released) : new Hub());

    /// <summary>The calling thread's hub, or null if it has none (nothing is created).</summary>
    internal static Hub? CurrentOrNull => t_current;

    /// <summary>The options this hub was created with.</summary>
    public HubOptions Options { get; }

    /// <summary>A process-unique number for logs.</summary>
    public int Id { get; }

    /// <summary>The greenlet of the thread that created the hub.</summary>
    public Greenlet MainGreenlet { get; }

    /// <summary>Stands for the hub itself: the parent of spawned greenlets, and <see cref="Green.Current"/> inside link and timer callbacks.</summary>
    public Greenlet HubGreenlet { get; }

    /// <summary>Whether the hub has been disposed.</summary>
    public bool IsDisposed => _disposed;

    internal ILogger Logger => _logger;

    /// <summary>Runs <paramref name="action"/> on the hub, after what is already queued. Safe from any thread.</summary>
    /// <remarks>The action runs as a hub callback: it may spawn, start, kill and wake greenlets, but must not block.</remarks>
    public void Post(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        if (_disposed) throw new ObjectDisposedException(ToString(), "The hub has been disposed; nothing will run what is posted to it.");
        PostItem(RunItem.ForCallback(static a => ((Action)a!)(), action));
    }

    /// <summary>
    /// Kills every greenlet still alive (waiting up to 5 seconds for them to unwind), returns their carriers to
    /// the pool and unbinds the hub from its thread. Must be called from the main greenlet.
    /// </summary>
    public void Dispose() => Dispose(TimeSpan.FromSeconds(5));

    /// <summary><see cref="Dispose()"/> waiting up to <paramref name="killTimeout"/> for the greenlets to unwind.</summary>
    internal void Dispose(TimeSpan killTimeout)
    {
        if (_disposed) return;
        AssertOnHub();
        if (_current != MainGreenlet)
            throw new InvalidOperationException($"Dispose {this} from its main greenlet (the thread that created it), not from {_current}.");
        var alive = AliveGreenlets();
        if (alive.Count > 0)
        {
            try
            {
                Green.KillAll(alive, block: true, timeout: killTimeout);
            }
            catch (Exception e) when (e is LoopExitException or TimeoutException)
            {
                // the survivors are logged below
            }
            foreach (var g in alive)
                if (!g.Dead) Log.StuckAtDispose(_logger, g.ToString());
        }
        _disposed = true;
        Unregister(this);
        StopDiagnostics();
        DisposeReactor();
        t_current = null;
        if (_mainAffinity != null)
        {
            Affinity.Restore(_mainAffinity); // the hub's thread is the user's: give its CPUs back
            _mainCarrier.PinnedCpu = -1;
        }
    }

    /// <summary>Describes the hub for logs.</summary>
    public override string ToString() => $"<Hub #{Id}>";

    /// <summary>Throws unless the caller runs on this hub (its thread or one of its greenlets).</summary>
    internal void AssertOnHub()
    {
        if (t_current != this)
            ThrowNotOnHub();
    }

    private void ThrowNotOnHub() =>
        throw new InvalidOperationException($"This operation belongs to {this} and must be called from its thread or one of its greenlets. From other threads use Hub.Post or Greenlet.Kill, which are thread-safe.");

    internal bool IsOnHubThread => t_current == this;

    /// <summary>Whether the caller is hub code with no greenlet running (a callback, a link, the scheduler), on the hub's
    /// thread of a hub that is not disposed: code that cannot park.</summary>
    internal bool InHubContext => t_current == this && _current == HubGreenlet && !_disposed;
}
