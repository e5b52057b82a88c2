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

    private readonly Diagnostics.HubContextLogger _logger;
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
        try
        {
            _pool.Prestart(Math.Max(2, options.PrestartCarriers));
        }
        catch (OutOfMemoryException e) when (options.PrestartCarriers > 0)
        {
            throw new OutOfMemoryException(
                $"HubOptions.PrestartCarriers = {options.PrestartCarriers:N0}: {e.Message} The pool keeps the {_pool.Created:N0} carriers it has; ask for fewer, or raise the kernel's limit (docs/core.md, \"How many greenlets can be suspended\").", e);
        }
        if (options.PrestartCarriers > 0) _pool.Keep(options.PrestartCarriers); // until Close
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
    /// <see cref="Post"/> for the runtime's own work on greenlets that exist already (a kill, a link, a wake from another
    /// thread): it still reaches a disposed hub that runs greenlets which outlived <see cref="Dispose()"/>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The hub has stopped for good (<see cref="IsClosed"/>).</exception>
    internal void PostAction(Action action)
    {
        if (_closed) throw new ObjectDisposedException(ToString(), "The hub has been disposed and has stopped; nothing will run what is posted to it.");
        PostItem(RunItem.ForCallback(static a => ((Action)a!)(), action));
    }

    /// <summary>
    /// Kills every greenlet still alive (waiting up to 5 seconds for them to unwind), returns their carriers to
    /// the pool and unbinds the hub from its thread. Must be called from the main greenlet.
    /// </summary>
    /// <remarks>A greenlet still unwinding when the 5 seconds are over (inside a <see cref="Green.Shield"/>, or in a call
    /// that is not cooperative) is logged (event 4) and left to finish on a background thread, which runs the hub for it
    /// alone until it ends, as a thread would finish its work: what it holds (a lock, a class initialiser) is released then.
    /// Its kill stays pending, so it ends at its first blocking point outside a shield. Nothing new starts on the hub
    /// meanwhile: <see cref="IsDisposed"/> is true and <see cref="Post"/> throws as soon as this method returns.</remarks>
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
        }
        // Greenlets spawned while the others unwound are killed too: nothing else would ever end them.
        foreach (var g in AliveGreenlets())
            if (g.KillException == null) KillGreenlet(g, new GreenletExit());
        var survivors = AliveGreenlets();
        foreach (var g in survivors) Log.StuckAtDispose(_logger, g.ToString());
        _disposed = true;
        if (survivors.Count > 0) DriveSurvivorsInBackground(survivors);
        else Close();
        t_current = null;
        if (_mainAffinity != null)
        {
            Affinity.Restore(_mainAffinity); // the hub's thread is the user's: give its CPUs back
            _mainCarrier.PinnedCpu = -1;
        }
    }

    /// <summary>Whether the hub's loop has stopped for good: it is disposed and no greenlet of it is left to run. Until
    /// then a disposed hub still runs the greenlets that outlived <see cref="Dispose()"/>: they may park, and wakes,
    /// kills and links reach them.</summary>
    internal bool IsClosed => _closed;

    private bool _closed;

    /// <summary>Ends the disposal once nothing of the hub can run any more. Baton holder only.</summary>
    private void Close()
    {
        _closed = true; // first: from here on nothing on this thread may park on the hub (Parking.ParkingHub)
        RetireLentIdler(); // a carrier sleeping lent in the idle wait would sleep there for ever (Hub.IdleLending.cs)
        Unregister(this);
        StopDiagnostics();
        DisposeReactor();
        if (Options.PrestartCarriers > 0) _pool.Unkeep(Options.PrestartCarriers); // they may retire when idle again
    }

    /// <summary>
    /// Greenlets still alive after Dispose's grace keep what they hold (a Monitor, a class initialiser, a Lazy) until
    /// they end, so abandoning them on a loop nobody runs would hang whoever needs it next, for ever. The main greenlet's
    /// role passes to a background thread instead, which runs the loop until the last survivor has ended and then
    /// closes the hub. The user's thread gives the baton away here and returns unbound, as with no survivors.
    /// </summary>
    private void DriveSurvivorsInBackground(List<Greenlet> survivors)
    {
        // The survivors may wait on what only a plain thread will signal: the loop must not declare LoopExit and give up.
        _pendingExternal++;
        ReleaseBaton();
        var driver = new Thread(() => DriveSurvivors(survivors)) { IsBackground = true, Name = $"{this} after Dispose" };
        RuntimeThread.Start(driver); // the default context: nothing of the user's thread flows into the hub's loop
    }

    /// <summary>The background thread's part: it becomes the main greenlet's carrier and parks it until every survivor
    /// has ended (nothing new can start on a disposed hub, so the set only shrinks).</summary>
    private void DriveSurvivors(List<Greenlet> survivors)
    {
        t_current = this;
        TakeBaton();
        var self = Carrier.ForCurrentThread();
        self.PinTo(_cpu);
        int left = survivors.Count;
        WakeToken token = default;
        foreach (var g in survivors)
            g.AddLink(_ => { if (--left == 0) TryWake(token); }, LinkKind.All);
        while (left > 0)
        {
            token = BeginPark(WaitReason.Join, raise: false);
            try
            {
                EndPark(token);
            }
            catch (Exception e)
            {
                // A kill or wake of the main greenlet from elsewhere: the survivors still need the loop.
                Log.CallbackFailed(_logger, e, "main greenlet of a disposed hub");
            }
        }
        _pendingExternal--;
        Close();
        ReleaseBaton();
        t_current = null;
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

    /// <summary>Whether the caller runs code of this hub holding its baton, and so may read and change the hub's state.
    /// A thread of the hub that runs without the baton (a released call's return, an idle carrier that lent it: see
    /// <see cref="CanBlockHere"/>) is elsewhere, as any other thread: it reaches the hub through the inbox.</summary>
    internal bool IsOnHubThread => t_current == this && HoldsBaton;

    /// <summary>Whether the caller is hub code with no greenlet running (a callback, a link, the scheduler), on the hub's
    /// thread of a hub that has not stopped: code that cannot park. In the middle of a scheduler step the current greenlet
    /// may still be the one that is parking (the scheduler names the next one only when it switches), so a step counts
    /// whichever greenlet it names.</summary>
    internal bool InHubContext => IsOnHubThread && (_current == HubGreenlet || _inScheduler) && !_closed;
}
