// Diagnostics hooks of the hub: the baton record the blocking monitor samples, the counters that metrics read,
// and run-info.
//
// Glossary
//   baton epoch   a number the baton holder bumps whenever what holds the baton changes: a greenlet switch, a hub
//                 callback starting or ending, the hub going idle or waking up. An epoch that lasts longer than
//                 MaxBlockingTime while the hub is not idle is a *blocked episode*: one greenlet (or callback)
//                 kept the baton and everything else of the hub waited.
//   monitor       one background thread per hub (Diagnostics/BlockingMonitor.cs) that samples the epoch.
//
// Design chosen: the scheduler only writes plain fields — two increments per switch, a bool when it idles, one
// thread-static read when a thread takes the baton — and never reads a clock for diagnostics. Everything else
// happens on other threads, which read those fields without locks and tolerate stale values: a sample that is a
// few nanoseconds old only shifts a report by one sampling interval.
//
// Rejected designs
//   * A timestamp per switch (Stopwatch.GetTimestamp, ~20 ns): a large share of a stackless switch, and the monitor
//     measures an epoch's length well enough (to one sampling interval) by itself.
//   * Counter.Add on every switch/spawn: even disabled instruments cost a call and a check on the hot path;
//     Observable instruments read these fields only when a listener polls (about once a second).
//   * A monitor that interrupts the blocked thread to read its stack: .NET on Linux has no way to run code on, or
//     suspend, another managed thread from inside the process (see Diagnostics/ThreadStackCapture.cs).
//
// Where code may run: Note* run on the baton holder only; the Read* accessors are for any thread.

using System.Diagnostics;
using System.Runtime.CompilerServices;
using GreenRuntime.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    internal static readonly int WaitReasonCount = Enum.GetValues<WaitReason>().Length;

    // Written by the baton holder only (plain stores), read by the monitor and metrics threads.
    private long _batonEpoch;
    private long _switchCount;
    private bool _idle;
    private int _batonHolderOsThread;
    private readonly long[] _waitCounts = new long[WaitReasonCount];
    private long _spawnedCount, _finishedCount, _failedCount;

    // Written by the monitor thread (Interlocked).
    private long _blockedEpisodes;

    private BlockingMonitor? _monitor;

    /// <summary>
    /// Raised when the blocking monitor finds that one greenlet (or a hub callback) has held the baton for longer
    /// than <see cref="HubOptions.MaxBlockingTime"/>: once per episode, while the holder is still blocked.
    /// </summary>
    /// <remarks>
    /// <para>Handlers run on the hub's monitor thread, not on the hub: they must be thread-safe and must not call
    /// hub-only APIs. A handler that throws is logged and ignored. The same report is logged as a warning
    /// (event id 10 or 11) through <see cref="HubOptions.LoggerFactory"/>.</para>
    /// <para>Raised only when the monitor is on (<see cref="HubOptions.MaxBlockingTime"/> not null).</para>
    /// </remarks>
    public event EventHandler<HubBlockedReport>? Blocked;

    // Invariant (the baton record): only the baton holder writes _batonEpoch, _switchCount and _idle, so plain
    // increments cannot lose updates. Checked in DEBUG by AssertBatonHeld.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteSwitch()
    {
        AssertBatonHeld();
        _switchCount++;
        _batonEpoch++;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteBatonEpoch() => _batonEpoch++;

    // The monitor's request that the greenlet holding the baton since that epoch give the others a turn (-1: none).
    private long _yieldAskedAtEpoch = -1;

    /// <summary>Monitor thread: the baton has not moved since <paramref name="epoch"/> for a sample or more while others
    /// wait; the holder is asked to yield at its next I/O call that would not wait (<see cref="GiveWay"/>).</summary>
    internal void AskToYield(long epoch) => Volatile.Write(ref _yieldAskedAtEpoch, epoch);

    /// <summary>
    /// Hub-only, at a socket or file call on a greenlet that may park, when the call completed without waiting: yields
    /// once the greenlet's turn has lasted a slice (5 ms, as long as the ready queue's exceptions may pass others over:
    /// Hub.Order.cs), or when the monitor asked the holder to. A greenlet streaming a large result (a database reader, a
    /// bulk copy) finds data at every receive and room at every send, and so does one making request after request to a
    /// server that answers within microseconds (a cache on loopback): none of its calls waits, and it never gave the
    /// baton up. With the monitor alone it gave way every 25–50 ms (never with the monitor off), and a greenlet woken
    /// behind several such greenlets waited for each (a 5 ms ticker beside 20 greenlets that compute 1 ms and read a
    /// cached file in a loop: gaps of 1.1 s, 135 ms with the slice). The yield also polls the reactor, so greenlets waiting
    /// for I/O are woken for the turn.
    /// The yield is shielded, so no cancellation point: a kill already raised is not raised again there (clean-up code
    /// that writes after a kill, a LiteDB rollback, lost its write whenever the monitor had asked), and whether a kill
    /// not raised yet is raised at the call is the caller's choice (<see cref="YieldPoint"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void GiveWay()
    {
        if (Volatile.Read(ref _yieldAskedAtEpoch) != _batonEpoch && !TurnOutranSlice()) return;
        _yieldAskedAtEpoch = -1;
        PollIoAtNextStep();
        using (new CancellationShield(_current))
            YieldCurrent();
    }

    // When the current turn (baton epoch) met its first call that did not wait: a turn is timed from there, so a greenlet
    // that computed for a while before its I/O is not made to yield at once for it (the monitor reports that time).
    private long _turnEpoch = -1, _turnStartedAt;

    private bool TurnOutranSlice()
    {
        long now = Stopwatch.GetTimestamp();
        if (_turnEpoch != _batonEpoch)
        {
            _turnEpoch = _batonEpoch;
            _turnStartedAt = now;
            return false;
        }
        return now - _turnStartedAt > SliceTicks;
    }

    /// <summary>Greenlets whose released lock wait has returned owning the lock and that wait for the baton (Hub.Blocking.cs):
    /// raised by their threads as they post their return, lowered by the baton holder as each is resumed.</summary>
    private int _lockHoldersQueued;

    /// <summary><see cref="LowLevel.Parking.YieldToLockHolders"/> for a caller that knows it may park on this hub.</summary>
    internal bool YieldToLockHolders()
    {
        if (Volatile.Read(ref _lockHoldersQueued) == 0) return false;
        using (new CancellationShield(_current))
            YieldCurrent();
        return true;
    }

    /// <summary><see cref="LowLevel.Parking.YieldPoint"/> for a caller that knows it may park on this hub.</summary>
    internal void YieldPoint()
    {
        if (!RaiseUnraised()) GiveWay();
    }

    /// <summary>The cancellation half of <see cref="YieldPoint"/>: raises a kill or timeout not raised in the greenlet yet.
    /// False when there is none (or a shield holds it back), having done nothing. A read that may find its data at once
    /// calls this before its first attempt and <see cref="GiveWay"/> only after it (Io/SocketIo.cs).</summary>
    internal bool RaiseUnraised()
    {
        var g = _current;
        if (g.ShieldDepth != 0 || !g.UnraisedCancellation) return false;
        YieldCurrent(); // a cancellation point: raises it
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NoteIdle(bool idle)
    {
        AssertBatonHeld();
        _idle = idle;
        _batonEpoch++;
    }

    private void StartDiagnostics()
    {
        GreenMetrics.Register(this);
        if (Options.MaxBlockingTime is { } max)
            _monitor = BlockingMonitor.Start(this, max);
    }

    private void StopDiagnostics()
    {
        _monitor?.Stop();
        _monitor = null;
        GreenMetrics.Unregister(this);
    }

    // ---- Read from any thread (monitor, metrics). Values may be a little stale. ----

    internal long ReadBatonEpoch() => Volatile.Read(ref _batonEpoch);
    internal bool ReadIdle() => Volatile.Read(ref _idle);
    internal Greenlet ReadBatonGreenlet() => Volatile.Read(ref _current);
    internal int ReadBatonHolderOsThread() => Volatile.Read(ref _batonHolderOsThread);
    internal long ReadSwitches() => Volatile.Read(ref _switchCount);
    internal long ReadSpawned() => Volatile.Read(ref _spawnedCount);
    internal long ReadFinished() => Volatile.Read(ref _finishedCount);
    internal long ReadFailed() => Volatile.Read(ref _failedCount);
    internal long ReadWaits(WaitReason reason) => Volatile.Read(ref _waitCounts[(int)reason]);
    internal long ReadBlockedEpisodes() => Volatile.Read(ref _blockedEpisodes);
    internal int ReadAlive() => Volatile.Read(ref _aliveCount);
    internal int ReadTimerCount() => _timers.Count;

    /// <summary>
    /// Whether anything but <paramref name="holder"/> wants the baton: another greenlet alive, a queued item or an
    /// outstanding operation. A main greenlet that runs its own code while the hub has nothing else to do blocks
    /// nobody (a plain program that merely created a hub, or a test between two cooperative calls). Timers are not
    /// counted: the heap keeps cancelled ones until they reach its top, and a live one belongs to a greenlet that is
    /// alive anyway (except SpawnLater's, whose greenlet is not started yet: such a delay goes unreported).
    /// </summary>
    internal bool ReadOthersWaiting(Greenlet holder)
    {
        if (holder != MainGreenlet) return true; // a spawned greenlet or a callback runs: the main greenlet waits for the hub
        return Volatile.Read(ref _aliveCount) > 0 || ReadyCount > 0 || !_inbox.IsEmpty
               || Volatile.Read(ref _pendingExternal) > 0;
    }

    internal void NoteBlockedEpisode() => Interlocked.Increment(ref _blockedEpisodes);

    /// <summary>Raises <see cref="Blocked"/> on the calling (monitor) thread; handler failures are logged.</summary>
    /// <summary>Whether anything handles <see cref="Blocked"/> now.</summary>
    internal bool HasBlockedHandlers => Blocked != null;

    internal void RaiseBlocked(HubBlockedReport report)
    {
        var handlers = Blocked;
        if (handlers == null) return;
        foreach (EventHandler<HubBlockedReport> handler in handlers.GetInvocationList())
        {
            try
            {
                handler(this, report);
            }
            catch (Exception e)
            {
                Log.BlockedHandlerFailed(_logger, e, ToString());
            }
        }
    }

    // ---- Run info (hub-only) ----

    /// <summary>
    /// A snapshot of every live greenlet of this hub (the main greenlet first, then spawned ones, oldest first),
    /// with its state and what it waits for, plus scheduler and carrier-pool statistics.
    /// </summary>
    /// <remarks>From the hub (its thread or a greenlet) the snapshot is taken at once. From another thread it is
    /// taken on the hub through <see cref="Post"/>, so it waits until the hub next runs its scheduler, at most
    /// 5 seconds.</remarks>
    /// <exception cref="TimeoutException">Called from another thread and the hub did not get to it within 5 seconds
    /// (it is blocked, or its main thread is not in a cooperative call).</exception>
    public HubRunInfo GetRunInfo()
    {
        if (IsOnHubThread) return BuildRunInfo();
        HubRunInfo? info = null;
        var done = new ManualResetEventSlim(); // not disposed: after a timeout the hub may still run the request
        Post(() =>
        {
            info = BuildRunInfo();
            done.Set();
        });
        if (!done.Wait(TimeSpan.FromSeconds(5)))
            throw new TimeoutException($"{this} did not run the run-info request within 5 seconds: it is blocked (see Hub.Blocked) or its main thread is not in a cooperative call. Call GetRunInfo from the hub's thread or a greenlet instead.");
        return info!;
    }

    /// <summary>
    /// <see cref="GetRunInfo"/> as readable text: one line per greenlet (id, name, kind, state, wait, parent, time since
    /// its last switch, and the spawn stack when <see cref="HubOptions.TrackSpawnStacks"/> is on), then the carriers.
    /// </summary>
    public string FormatRunInfo() => RunInfoFormatter.Format(GetRunInfo());

    private HubRunInfo BuildRunInfo()
    {
        AssertOnHub();
        long now = _time.GetTimestamp();
        // What each parked greenlet's timer will do: a wake at a deadline (sleep, or a timeout of another wait).
        var deadlines = new Dictionary<Greenlet, long>();
        foreach (var timer in _timers.Live())
        {
            if (timer.State is TimerWake { Token: var token } && token.IsCurrent)
            {
                if (!deadlines.TryGetValue(token.Greenlet, out var d) || timer.Deadline < d)
                    deadlines[token.Greenlet] = timer.Deadline;
            }
        }
        var list = new List<GreenletRunInfo>(_aliveCount + 1) { Describe(MainGreenlet, now, deadlines) };
        foreach (var g in AliveGreenlets())
            list.Add(Describe(g, now, deadlines));
        return new HubRunInfo
        {
            HubId = Id,
            Hub = ToString(),
            Taken = _time.GetUtcNow(),
            Current = _current == HubGreenlet ? "hub callback" : _current.ToString(),
            Greenlets = list,
            ReadyCount = ReadyCount,
            TimerCount = _timers.Count,
            Switches = _switchCount,
            NudgesSent = NudgesSent,
            NudgesCaught = NudgesCaught,
            BlockedEpisodes = ReadBlockedEpisodes(),
            MonitorOn = _monitor != null,
            Carriers = new CarrierPoolInfo
            {
                StackSize = _pool.StackSize,
                Threads = _pool.Created,
                Idle = _pool.Idle,
                Kept = _pool.Kept,
                MadeOnDemand = _pool.MadeOnDemand,
                MadeByRefill = _pool.MadeByRefill,
                Prestarted = _pool.Prestarted,
                HeldByThisHub = _carriersInUse - (IdlerLent ? 1 : 0), // a lent idler keeps no greenlet and runs nothing (Hub.IdleLending.cs)
                Limit = MaxCarriers,
                LimitSource = CarrierLimitSource,
                Waiting = _carrierWaiters.Count,
            },
        };
    }

    private GreenletRunInfo Describe(Greenlet g, long now, Dictionary<Greenlet, long> deadlines)
    {
        TimeSpan? wakesIn = deadlines.TryGetValue(g, out var deadline) ? Elapsed(now, deadline) : null;
        TimeSpan? since = g.State is GreenletState.Parked or GreenletState.Ready && g.ParkedAt != 0 ? Elapsed(g.ParkedAt, now) : null;
        return new GreenletRunInfo
        {
            Id = g.Id,
            Name = g.Name,
            IsStackless = g.IsStackless,
            IsMain = g == MainGreenlet,
            IsCurrent = g == _current,
            State = g.State,
            WaitReason = g.WaitReason,
            WakesIn = wakesIn,
            SinceLastSwitch = since,
            ParentId = g.Parent?.Id,
            ParentName = g.Parent?.Name,
            SpawnStack = g.SpawnStack,
            BlockedSteps = g.IsStackless ? g.BlockedSteps().Select(step => Describe(step, now, deadlines)).ToList() : [],
        };
    }

    private TimeSpan Elapsed(long from, long to) =>
        TimeSpan.FromSeconds(Math.Max(0, to - from) / (double)_time.TimestampFrequency);
}
