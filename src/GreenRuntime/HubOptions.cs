using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace GreenRuntime;

/// <summary>Settings of one <see cref="Hub"/>. Every property has a documented default and range.</summary>
public sealed class HubOptions
{
    /// <summary>
    /// Where the hub logs (failed greenlets, failing callbacks, blocked hub). Default: errors only (a greenlet that
    /// failed, a callback that threw), written to standard error, as gevent prints a failed greenlet's traceback;
    /// <see cref="NullLoggerFactory.Instance"/> logs nothing.
    /// </summary>
    public ILoggerFactory LoggerFactory { get; init; } = Diagnostics.StandardErrorLoggerFactory.Instance;

    /// <summary>
    /// How long one greenlet may hold the baton before the blocking monitor reports it. Default 100 ms;
    /// null disables the monitor. Must be positive.
    /// </summary>
    public TimeSpan? MaxBlockingTime { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Whether the blocking monitor captures the stack of the blocked thread for its report. Default true.
    /// </summary>
    /// <remarks>On Linux the stack is read by the runtime's <c>createdump</c> tool (crash-report mode, no dump file),
    /// which <b>pauses the whole process</b> while it walks every thread: about 0.5–1.3 s with ten threads, longer with
    /// more. Captures are therefore made at most once per 10 seconds per process, and not at all when the process has
    /// more than 64 threads (each parked stackful greenlet keeps one) or when nothing reads the report (no logger
    /// enabled for warnings, no <see cref="Hub.Blocked"/> handler). Turn this off where such a pause is not
    /// acceptable: reports then name the greenlet and the duration only. See docs/diagnostics.md.</remarks>
    public bool CaptureBlockedStacks { get; init; } = true;

    /// <summary>Stack size of carrier threads, in bytes. Default 0: the stack a new thread of this process gets (pthread's
    /// default, from <c>ulimit -s</c>: 8 MiB on most Linux systems), so code that runs on a thread has as much stack
    /// on a greenlet. Otherwise 128 KiB – 64 MiB.</summary>
    /// <remarks>Stack size only changes virtual memory (and, under strict overcommit, <c>vm.overcommit_memory = 2</c>,
    /// the memory the kernel commits); a parked carrier costs about 40 KiB of real memory whatever its size. A stack
    /// overflow aborts the process, and .NET cannot catch it: a smaller stack than a thread's turns input that a thread
    /// parses (deeply nested JSON, say) into a crash.</remarks>
    public int CarrierStackSize { get; init; }

    /// <summary>
    /// The most pooled carrier threads the hub may use at once, which bounds the number of stackful greenlets that
    /// can be suspended together. Default 0: the machine's limit, read from the kernel (<c>vm.max_map_count</c>,
    /// <c>kernel.threads-max</c>, <c>kernel.pid_max</c>, the cgroup's <c>pids.max</c>, available memory) minus a
    /// margin for the rest of the process; run info (<see cref="HubRunInfo.Carriers"/>) shows it and which resource
    /// set it. A positive value may lower it, or raise it up to that limit (2 at least). A greenlet that needs a
    /// carrier while all are taken waits for one in FIFO order; only when none can ever free up is that reported
    /// (<see cref="LoopExitException"/>).
    /// </summary>
    public int MaxCarriers { get; init; }

    /// <summary>
    /// Carrier threads created before the hub's constructor returns, and kept ready while the hub lives, however long
    /// they stay idle. Default 0: the pool creates carriers when greenlets first need them (a thread each, 0.1–0.4 ms)
    /// and lets those idle for 10 s end. A program that meets a burst of suspended stackful greenlets right after it
    /// starts (a server's first seconds, a batch of blocking jobs) pays those thread creations inside the burst; with
    /// this set it pays them up front. Range 0 to the carrier limit (<see cref="MaxCarriers"/>, or the machine's).
    /// </summary>
    /// <remarks>Carriers are shared by the hubs of the process (one pool per <see cref="CarrierStackSize"/>): the pool
    /// keeps at least the largest number a live hub asked for, not one set per hub; once the hub is disposed they retire
    /// after 10 s idle like any other carrier. Each parked carrier costs about 17 KiB of resident memory and 22 KiB of
    /// kernel memory, and every gen-0 garbage collection scans every thread (about 2 µs per parked thread), so ask for
    /// the burst you expect, not more. The constructing thread makes them, about 0.1 ms each (2,000 in 0.17 s on a
    /// 2-CPU VM). A thread the kernel refuses makes the constructor throw <see cref="OutOfMemoryException"/>; the
    /// carriers made before it stay in the pool.</remarks>
    public int PrestartCarriers { get; init; }

    /// <summary>
    /// Pin the hub's thread and every carrier that runs for it to the CPU the hub was created on. Waking a
    /// thread parked on the same CPU costs about half as much as waking one on another CPU. Default false. The
    /// hub's thread gets its original CPU mask back when the hub is disposed; pooled carriers re-pin per hub, and run with
    /// the process's CPU mask for a hub that is not pinned (whichever thread created them).
    /// </summary>
    public bool PinCarriersToOneCpu { get; init; }

    /// <summary>
    /// Let a carrier whose greenlet is usually handed the baton back quickly watch for it for up to 50 µs before
    /// it sleeps, so the hand-back costs no system call and no cross-CPU wake; and let the baton holder wake the
    /// carrier of the next queued greenlet ahead of its turn, to watch the same way (at most one watching carrier
    /// per hub; never on a pinned hub or a one-CPU machine). Default true. On a machine whose CPUs are all busy
    /// with other processes watching rarely pays and backs off; turn this off there to never spend CPU time on it.
    /// </summary>
    public bool SpinBeforeParking { get; init; } = true;

    /// <summary>Record the stack trace where each greenlet was spawned, for run-info. Default false (it costs a stack walk per spawn).</summary>
    public bool TrackSpawnStacks { get; init; }

    /// <summary>The hub's only source of time. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>A copy with <see cref="PinCarriersToOneCpu"/> set (a hub of a group pinned to its CPU).</summary>
    internal HubOptions PinnedCopy() => new()
    {
        LoggerFactory = LoggerFactory,
        MaxBlockingTime = MaxBlockingTime,
        CaptureBlockedStacks = CaptureBlockedStacks,
        CarrierStackSize = CarrierStackSize,
        MaxCarriers = MaxCarriers,
        PrestartCarriers = PrestartCarriers,
        PinCarriersToOneCpu = true,
        SpinBeforeParking = SpinBeforeParking,
        TrackSpawnStacks = TrackSpawnStacks,
        TimeProvider = TimeProvider,
    };

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(LoggerFactory);
        ArgumentNullException.ThrowIfNull(TimeProvider);
        if (MaxBlockingTime is { } max && max <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(MaxBlockingTime), max, "MaxBlockingTime must be positive, or null to disable the blocking monitor.");
        if (CarrierStackSize != 0 && CarrierStackSize is < 128 * 1024 or > 64 * 1024 * 1024)
            throw new ArgumentOutOfRangeException(nameof(CarrierStackSize), CarrierStackSize, "CarrierStackSize must be 0 (a thread's default) or between 128 KiB and 64 MiB.");
        if (MaxCarriers is < 0 or 1)
            throw new ArgumentOutOfRangeException(nameof(MaxCarriers), MaxCarriers, "MaxCarriers must be 0 (the machine's limit) or at least 2.");
        var machine = Scheduling.CarrierLimit.Machine;
        if (MaxCarriers > machine.Value)
            throw new ArgumentOutOfRangeException(nameof(MaxCarriers), MaxCarriers, $"MaxCarriers may be at most {machine.Value:N0} on this machine, the limit set by {machine.Source}; past it the runtime aborts the process when a thread cannot be created.");
        if (PrestartCarriers < 0 || PrestartCarriers > CarrierCap)
            throw new ArgumentOutOfRangeException(nameof(PrestartCarriers), PrestartCarriers,
                $"PrestartCarriers must be between 0 and the carrier limit, {CarrierCap:N0} ({CarrierCapSource}).");
    }

    /// <summary>The cap on pooled carriers these options set: <see cref="MaxCarriers"/>, or the machine's limit when that is 0.</summary>
    internal int CarrierCap => MaxCarriers > 0 ? MaxCarriers : Scheduling.CarrierLimit.Machine.Value;

    /// <summary>What sets <see cref="CarrierCap"/>, for messages and run info.</summary>
    internal string CarrierCapSource =>
        MaxCarriers > 0 ? "set by HubOptions.MaxCarriers" : $"the machine's limit, set by {Scheduling.CarrierLimit.Machine.Source}";
}
