using System.Diagnostics;
using GreenRuntime.Scheduling;
using GreenRuntime.Sync;
using Microsoft.Extensions.Logging;

namespace GreenRuntime;

/// <summary>
/// Several hubs in one process, each on a dedicated thread, so greenlets use every CPU (gevent users get there with
/// several processes).
/// </summary>
/// <remarks>
/// <para><b>The one rule.</b> Greenlets of one hub never run at the same time (the hub's baton), exactly as with a
/// single hub; greenlets of different hubs run in parallel. State that greenlets of several hubs share needs the usual
/// thread safety: the runtime's primitives (<see cref="Event"/>, <see cref="AsyncResult{T}"/>,
/// <see cref="GreenQueue{T}"/> and its variants, <see cref="GreenChannel{T}"/>, <see cref="GreenSemaphore"/>), a
/// <c>lock</c>, or a concurrent collection.</para>
/// <para><b>Placement.</b> <see cref="Spawn(Action, string?)"/> puts the greenlet on the least-loaded hub (greenlets
/// ready or running there, counting starts still on their way) and <see cref="SpawnOn(int, Action, string?)"/> on a
/// chosen one. A greenlet never moves afterwards; <see cref="Green.Spawn(Action, string?)"/> inside it spawns on its
/// own hub. Both are safe from any thread: plain threads, thread-pool threads, greenlets of any hub.</para>
/// <para><b>Across hubs.</b> Waking a greenlet of another hub (a primitive's signal, <see cref="Greenlet.Kill"/>, the
/// end of a greenlet it joins) goes through that hub's inbox. <see cref="Greenlet.Join"/>, <see cref="Greenlet.Kill"/>,
/// links and <c>await greenlet</c> work on a greenlet of another hub; link callbacks run on the linked greenlet's hub.</para>
/// <para>A failure inside a hub's own loop is logged (event 17) and that hub stops taking greenlets; the process goes on.</para>
/// </remarks>
/// <example>
/// <code>
/// using var group = new HubGroup();                 // one hub per CPU
/// var results = new GreenQueue&lt;int&gt;();
/// for (int i = 0; i &lt; 100; i++) { int n = i; group.Spawn(() =&gt; results.Put(Work(n))); }
/// for (int i = 0; i &lt; 100; i++) Console.WriteLine(results.Get());
/// </code>
/// </example>
[DebuggerDisplay("HubGroup Hubs={_hubs.Length} Disposed={_disposed}")]
public sealed class HubGroup : IDisposable
{
    private readonly Hub[] _hubs;
    private readonly Thread[] _threads;
    private readonly bool[] _failed;
    private readonly HubGroupOptions _options;
    private readonly ILogger _logger;
    // Guards _disposed against Spawn: every start posted to a hub precedes its stop request in the hub's inbox, so a
    // greenlet spawned before Dispose began is started (and then killed by the hub's disposal), never left unstarted.
    private readonly SyncLock _lock = new();
    private bool _disposed;
    private int _nextProbe;

    /// <summary>Creates <paramref name="hubCount"/> hubs (0: one per CPU), each on a thread of its own, all with <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="hubCount"/> is negative or above 1024.</exception>
    public HubGroup(int hubCount = 0, HubOptions? options = null)
        : this(new HubGroupOptions { HubCount = CheckCount(hubCount), Hub = options }) { }

    /// <summary>Creates the hubs described by <paramref name="options"/>, each on a thread of its own.</summary>
    public HubGroup(HubGroupOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        var hubOptions = options.Hub ?? new HubOptions();
        _logger = hubOptions.LoggerFactory.CreateLogger("GreenRuntime.Hub");
        int n = options.HubCount == 0 ? Environment.ProcessorCount : options.HubCount;
        _hubs = new Hub[n];
        _threads = new Thread[n];
        _failed = new bool[n];
        int[]? cpus = options.PinHubsToCpus ? AllowedCpus() : null;
        var started = new StartLatch(n);
        for (int i = 0; i < n; i++)
        {
            int index = i;
            int cpu = cpus is { Length: > 0 } ? cpus[i % cpus.Length] : -1;
            _threads[i] = new Thread(() => RunHub(index, cpu, hubOptions, started)) { IsBackground = true, Name = $"GreenRuntime hub {i}" };
            _threads[i].Start();
        }
        started.Wait();
        if (started.Error is { } error)
        {
            Dispose();
            throw new InvalidOperationException($"A hub of the group could not be created: {error.Message}", error);
        }
    }

    private static int CheckCount(int hubCount) => hubCount is < 0 or > 1024
        ? throw new ArgumentOutOfRangeException(nameof(hubCount), hubCount, "hubCount must be between 0 (one hub per CPU) and 1024.")
        : hubCount;

    /// <summary>The hubs, in index order (the index <see cref="SpawnOn(int, Action, string?)"/> takes).</summary>
    public IReadOnlyList<Hub> Hubs => _hubs;

    /// <summary>Whether <see cref="Dispose"/> has been called.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed);

    // ---- spawn -------------------------------------------------------------------------------------------------

    /// <summary>Creates and starts a stackful greenlet on the least-loaded hub. Safe from any thread.</summary>
    /// <exception cref="ObjectDisposedException">The group has been disposed.</exception>
    public Greenlet Spawn(Action body, string? name = null) => SpawnOn(-1, body, name);

    /// <summary>Creates and starts a stackful greenlet with a result on the least-loaded hub. Safe from any thread.</summary>
    public Greenlet<T> Spawn<T>(Func<T> body, string? name = null) => SpawnOn(-1, body, name);

    /// <summary>Creates and starts a stackless greenlet on the least-loaded hub (as <see cref="Green.SpawnAsync(Func{Task}, string?)"/>:
    /// the stackless forms have their own name so that a blocking lambda never becomes one by accident). Safe from any thread.</summary>
    public Greenlet SpawnAsync(Func<Task> body, string? name = null) => SpawnOnAsync(-1, body, name);

    /// <summary>Creates and starts a stackless greenlet with a result on the least-loaded hub. Safe from any thread.</summary>
    public Greenlet<T> SpawnAsync<T>(Func<Task<T>> body, string? name = null) => SpawnOnAsync(-1, body, name);

    /// <summary>Creates and starts a stackful greenlet on hub <paramref name="hubIndex"/>. Safe from any thread.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="hubIndex"/> is not an index of <see cref="Hubs"/>.</exception>
    /// <exception cref="ObjectDisposedException">The group has been disposed.</exception>
    /// <exception cref="InvalidOperationException">That hub failed and stopped (logged as event 17).</exception>
    public Greenlet SpawnOn(int hubIndex, Action body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return Place(hubIndex, static (hub, b, n) => new Greenlet((Action)b, n, hub), body, name);
    }

    /// <summary>Creates and starts a stackful greenlet with a result on hub <paramref name="hubIndex"/>. Safe from any thread.</summary>
    public Greenlet<T> SpawnOn<T>(int hubIndex, Func<T> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return Place(hubIndex, static (hub, b, n) => new Greenlet<T>((Func<T>)b, n, hub), body, name);
    }

    /// <summary>Creates and starts a stackless greenlet on hub <paramref name="hubIndex"/>. Safe from any thread.</summary>
    public Greenlet SpawnOnAsync(int hubIndex, Func<Task> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return Place(hubIndex, static (hub, b, n) => Greenlet.CreateStackless((Func<Task>)b, n, hub), body, name);
    }

    /// <summary>Creates and starts a stackless greenlet with a result on hub <paramref name="hubIndex"/>. Safe from any thread.</summary>
    public Greenlet<T> SpawnOnAsync<T>(int hubIndex, Func<Task<T>> body, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(body);
        return Place(hubIndex, static (hub, b, n) => Greenlet<T>.CreateStackless((Func<Task<T>>)b, n, hub), body, name);
    }

    /// <summary>Places a greenlet: on hub <paramref name="hubIndex"/>, or on the least-loaded one when it is -1.</summary>
    private TGreenlet Place<TGreenlet>(int hubIndex, Func<Hub, Delegate, string?, TGreenlet> create, Delegate body, string? name) where TGreenlet : Greenlet
    {
        if (hubIndex != -1 && (uint)hubIndex >= (uint)_hubs.Length)
            throw new ArgumentOutOfRangeException(nameof(hubIndex), hubIndex, $"hubIndex must be between 0 and {_hubs.Length - 1} (the group has {_hubs.Length} hubs).");
        ThrowIfDisposed();
        int index = hubIndex == -1 ? LeastLoaded() : hubIndex;
        if (Volatile.Read(ref _failed[index]))
            throw new InvalidOperationException($"Hub {index} of the group failed and stopped (see the log, event 17); spawn on another hub.");
        var hub = _hubs[index];
        var g = create(hub, body, name); // outside the lock: capturing the context (and a spawn stack) takes a while
        _lock.Enter();
        try
        {
            ThrowIfDisposed();
            hub.StartFromAnyThread(g);
        }
        finally
        {
            _lock.Exit();
        }
        return g;
    }

    /// <summary>The hub with the lowest <see cref="Hub.Load"/>; ties go round robin, so a burst spreads evenly.</summary>
    private int LeastLoaded()
    {
        int n = _hubs.Length;
        int first = (int)((uint)Interlocked.Increment(ref _nextProbe) % (uint)n);
        int best = -1, bestLoad = int.MaxValue;
        for (int k = 0; k < n; k++)
        {
            int i = (first + k) % n;
            if (Volatile.Read(ref _failed[i])) continue;
            int load = _hubs[i].Load;
            if (load < bestLoad)
            {
                best = i;
                bestLoad = load;
            }
        }
        return best >= 0 ? best : throw new InvalidOperationException("Every hub of the group failed and stopped (see the log, event 17).");
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed))
            throw new ObjectDisposedException(nameof(HubGroup), "The hub group has been disposed; its hubs no longer run greenlets.");
    }

    // ---- dispose -----------------------------------------------------------------------------------------------

    /// <summary>
    /// Stops the group: each hub kills the greenlets it still runs (waiting up to <see cref="HubGroupOptions.DisposeTimeout"/>
    /// for them to unwind), and its thread ends. Returns when the threads have ended. Idempotent. Call it from outside
    /// the group (a greenlet of the group cannot wait for its own hub to stop).
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from a greenlet of one of the group's hubs.</exception>
    public void Dispose()
    {
        if (Hub.CurrentOrNull is { } here && Array.IndexOf(_hubs, here) >= 0)
            throw new InvalidOperationException($"A hub group cannot be disposed from one of its own hubs ({here}): that hub would wait for itself to stop. Dispose it from the thread that created it, or another thread.");
        _lock.Enter();
        bool first = !_disposed;
        Volatile.Write(ref _disposed, true);
        if (first)
        {
            for (int i = 0; i < _hubs.Length; i++)
                if (_hubs[i] != null && !_failed[i]) _hubs[i].RequestStop();
        }
        _lock.Exit();
        // Each hub's disposal is bounded by DisposeTimeout; a hub whose baton is held forever by a greenlet that never
        // blocks cannot stop, and its (background) thread is left behind rather than hanging the caller.
        var bound = _options.DisposeTimeout + _options.DisposeTimeout + TimeSpan.FromSeconds(5);
        foreach (var t in _threads)
            t?.Join(bound);
    }

    /// <summary>Describes the group for logs.</summary>
    public override string ToString() => $"<HubGroup of {_hubs.Length} hubs{(IsDisposed ? ", disposed" : "")}>";

    // ---- the hub threads -----------------------------------------------------------------------------------------

    private void RunHub(int index, int cpu, HubOptions hubOptions, StartLatch started)
    {
        Hub? hub = null;
        try
        {
            if (cpu >= 0 && Affinity.TryPin(cpu)) hubOptions = hubOptions.PinnedCopy();
            else Affinity.Restore(Affinity.ProcessMask); // not the mask of the thread that made the group, if it was pinned
            hub = new Hub(hubOptions);
            hub.JoinGroup(this);
            _hubs[index] = hub;
        }
        catch (Exception e)
        {
            Volatile.Write(ref _failed[index], true);
            started.Fail(e);
            return;
        }
        started.Signal();
        try
        {
            hub.ServeGroup(this);
            hub.Dispose(_options.DisposeTimeout);
        }
        catch (Exception e)
        {
            // Never a process crash: the failure is reported and the other hubs go on.
            Volatile.Write(ref _failed[index], true);
            Log.GroupHubFailed(_logger, e, index);
            try
            {
                hub.Dispose(_options.DisposeTimeout); // best effort: kill what it still runs, give its carriers back
            }
            catch (Exception)
            {
                // its state is what failed; the thread ends either way
            }
        }
    }

    /// <summary>Makes hub <paramref name="index"/>'s own loop throw <paramref name="failure"/> (tests of failure reporting).</summary>
    internal void InjectLoopFailure(int index, Exception failure) => _hubs[index].FailLoop(failure);

    /// <summary>The CPUs this process may run on (its affinity mask), in order.</summary>
    private static int[] AllowedCpus()
    {
        var mask = Affinity.ProcessMask; // the process's CPUs, whatever the calling thread was pinned to
        if (mask == null) return [];
        var cpus = new List<int>();
        for (int i = 0; i < mask.Length * 64; i++)
            if ((mask[i / 64] & (1UL << (i % 64))) != 0) cpus.Add(i);
        return cpus.ToArray();
    }

    /// <summary>Counts the hubs that finished starting; records the first failure.</summary>
    private sealed class StartLatch(int count)
    {
        private readonly ManualResetEventSlim _done = new();
        private int _left = count;
        public Exception? Error;

        public void Signal()
        {
            if (Interlocked.Decrement(ref _left) == 0) _done.Set();
        }

        public void Fail(Exception e)
        {
            Interlocked.CompareExchange(ref Error, e, null);
            Signal();
        }

        public void Wait() => _done.Wait();
    }
}
