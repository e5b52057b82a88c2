namespace GreenRuntime;

/// <summary>Statistics of the carrier-thread pool a hub draws from (shared by every hub with the same carrier stack size).</summary>
public sealed class CarrierPoolInfo
{
    internal CarrierPoolInfo() { }

    /// <summary>Stack size of the pool's threads, in bytes (<see cref="HubOptions.CarrierStackSize"/>).</summary>
    public int StackSize { get; internal init; }

    /// <summary>Carrier threads of the pool alive now, idle or busy (idle ones above a small minimum retire after 10 s).</summary>
    public int Threads { get; internal init; }

    /// <summary>Threads parked in the pool, ready for work.</summary>
    public int Idle { get; internal init; }

    /// <summary>Threads the pool keeps however long they idle, because a live hub asked for them
    /// (<see cref="HubOptions.PrestartCarriers"/>: the largest such number); 0 when none did.</summary>
    public int Kept { get; internal init; }

    /// <summary>Threads the pool made while a hub waited for them (a greenlet needed a carrier and none was idle), since the
    /// process started.</summary>
    public long MadeOnDemand { get; internal init; }

    /// <summary>Threads the pool's refill thread made beside the hubs once a rent had found the pool empty, since the process
    /// started. They cost CPU time during the burst that asked for them, and the greenlet that first runs on one waits until it
    /// has started; a burst of them, with <see cref="MadeOnDemand"/>, is what <see cref="HubOptions.PrestartCarriers"/> saves.</summary>
    public long MadeByRefill { get; internal init; }

    /// <summary>Threads made before any greenlet needed them, by hubs' constructors (<see cref="HubOptions.PrestartCarriers"/>,
    /// and two for every hub), since the process started.</summary>
    public long Prestarted { get; internal init; }

    /// <summary>Threads out of the pool: keeping a suspended greenlet's stack or running hub code, for any hub.</summary>
    public int Busy => Math.Max(0, Threads - Idle);

    /// <summary>Pooled carriers this hub holds now: each keeps a suspended greenlet's stack or runs the hub's code
    /// (the hub's own thread is not counted, nor a carrier that sleeps in the hub's idle wait while a released call's
    /// thread runs the hub in its place). Bounded by <see cref="Limit"/>.</summary>
    public int HeldByThisHub { get; internal init; }

    /// <summary>The most pooled carriers this hub may hold (<see cref="HubOptions.MaxCarriers"/>, or the machine's limit).</summary>
    public int Limit { get; internal init; }

    /// <summary>What set <see cref="Limit"/>: the option, or the kernel resource that bounds threads on this machine and how to raise it.</summary>
    public string LimitSource { get; internal init; } = "";

    /// <summary>Greenlets waiting for a carrier because this hub holds <see cref="Limit"/> of them.</summary>
    public int Waiting { get; internal init; }
}
