namespace GreenRuntime.Scheduling;

/// <summary>
/// Idle carrier threads, shared by every hub of the process and keyed by stack size. Threads are created
/// lazily (220–430 µs each, notes/baton.md) and never destroyed: handing work to a parked pooled thread
/// costs 6–17 µs instead.
/// </summary>
internal sealed class CarrierPool
{
    private static readonly Dictionary<int, CarrierPool> s_pools = new();

    private readonly Stack<Carrier> _idle = new();
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

    /// <summary>Threads this pool has created.</summary>
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
                _idle.Push(Carrier.StartPooled(this, _stackSize));
            }
        }
    }

    public Carrier Rent()
    {
        lock (_idle)
        {
            if (_idle.TryPop(out var carrier)) return carrier;
            _created++;
        }
        return Carrier.StartPooled(this, _stackSize);
    }

    public void Return(Carrier carrier)
    {
        lock (_idle) _idle.Push(carrier);
    }
}
