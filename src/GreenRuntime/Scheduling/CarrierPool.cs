using System.Diagnostics;

namespace GreenRuntime.Scheduling;

/// <summary>
/// Idle carrier threads, shared by every hub of the process and keyed by stack size. Threads are created
/// on demand (220–430 µs each, measured here); handing work to a parked pooled thread costs 6–17 µs instead.
/// </summary>
/// <remarks>
/// <para>Creating a thread keeps its creator busy for 0.1–0.4 ms (NativeThread.cs), so a hub that rents from an empty
/// pool stops for that long with the baton. When a rent finds the pool empty, the pool's refill thread creates more carriers,
/// in parallel with the hubs, until <see cref="LowWater"/> are idle; the hubs then rent those, and create one
/// themselves only when they drain the pool again.</para>
/// <para>A carrier idle for <see cref="IdleTimeoutNs"/> ends its thread, unless the pool is down to
/// <see cref="MinIdle"/> idle carriers, or to the number a live hub asked to keep (<see cref="Keep"/>): a burst of
/// 10,000 blocked greenlets must not leave 10,000 parked threads behind, because every gen0 GC suspends and scans
/// every thread (20 ms with 10k threads, measured here).
/// Hot carriers are never destroyed: only one that nobody rented for the whole timeout retires.</para>
/// </remarks>
internal sealed class CarrierPool
{
    private static readonly Dictionary<int, CarrierPool> s_pools = new();

    /// <summary>How long a pooled carrier waits for a job before it may retire.</summary>
    public const long IdleTimeoutNs = 10L * 1_000_000_000;

    /// <summary>Idle carriers kept however long they wait.</summary>
    public static readonly int MinIdle = Math.Max(4, Environment.ProcessorCount * 2);

    /// <summary>Idle carriers the refill thread makes ready once demand has drained the pool.</summary>
    public static readonly int LowWater = Math.Max(16, Environment.ProcessorCount * 8);

    private readonly List<Carrier> _idle = new(); // used as a stack: the most recently returned carrier is rented first
    private readonly int _stackSize;
    private int _created;
    private readonly List<int> _keeps = new(); // HubOptions.PrestartCarriers of each live hub that set it (guarded by _idle)
    private readonly SemaphoreSlim _refillWanted = new(0);
    private Thread? _refiller;   // started on the first demand (guarded by _idle)
    private bool _refilling;     // a refill was asked for and has not finished (guarded by _idle)
    private long _madeOnDemand, _madeByRefill, _prestarted; // since the pool was created (guarded by _idle)

    // A burst: threads made on demand or by the refill thread, counted over a window that starts at the first of them
    // (guarded by _idle, but _burstNote, which a renting hub takes with an exchange). Prestarted ones were asked for.
    private long _burstStart;
    private int _burstCount, _burstOnDemand;
    private bool _burstNoted;      // once per pool: the note names a setting, which one burst is enough to point at
    private BurstNote? _burstNote; // made by the creation that reached the threshold, taken by a hub's next rent to log

    /// <summary>Threads made within <see cref="BurstWindowTicks"/> that make a burst worth a note to the user.</summary>
    internal int BurstNoteThreshold = 256;

    private static readonly long BurstWindowTicks = Stopwatch.Frequency; // 1 s

    private CarrierPool(int stackSize) => _stackSize = stackSize;

    /// <summary>The pool of carriers with <paramref name="stackSize"/> bytes of stack; 0: a thread's default
    /// (<see cref="DefaultStackSize"/>).</summary>
    public static CarrierPool For(int stackSize)
    {
        if (stackSize == 0) stackSize = DefaultStackSize;
        lock (s_pools)
        {
            if (!s_pools.TryGetValue(stackSize, out var pool))
                s_pools[stackSize] = pool = new CarrierPool(stackSize);
            return pool;
        }
    }

    /// <summary>
    /// The stack of a thread started with no size given, which is what .NET's own threads get: carriers match it, so that
    /// recursion a thread survives does not overflow a greenlet (an overflow aborts the process). Within the range
    /// <see cref="HubOptions.CarrierStackSize"/> allows; 1.5 MiB, .NET's size elsewhere, where pthread does not say.
    /// </summary>
    public static int DefaultStackSize { get; } =
        (int)Math.Clamp(NativeThread.DefaultStackSize() ?? 1536 * 1024, 128 * 1024, 64 * 1024 * 1024);

    /// <summary>Every pool of the process (one per carrier stack size), for metrics.</summary>
    public static CarrierPool[] All()
    {
        lock (s_pools) return s_pools.Values.ToArray();
    }

    /// <summary>Stack size of this pool's threads, in bytes.</summary>
    public int StackSize => _stackSize;

    /// <summary>Carrier threads of this pool alive now, idle or working.</summary>
    public int Created => Volatile.Read(ref _created);

    /// <summary>Threads made while a hub waited for them (a rent found the pool empty), since the pool was created.</summary>
    public long MadeOnDemand
    {
        get { lock (_idle) return _madeOnDemand; }
    }

    /// <summary>Threads the refill thread made beside the hubs after a rent found the pool empty, since the pool was created.</summary>
    public long MadeByRefill
    {
        get { lock (_idle) return _madeByRefill; }
    }

    /// <summary>Threads made by <see cref="Prestart"/> (HubOptions.PrestartCarriers, and the two every hub asks for).</summary>
    public long Prestarted
    {
        get { lock (_idle) return _prestarted; }
    }

    /// <summary>Threads parked in the pool right now.</summary>
    public int Idle
    {
        get { lock (_idle) return _idle.Count; }
    }

    /// <summary>Makes sure at least <paramref name="count"/> threads exist, creating them on the calling thread, outside
    /// the pool's lock (hubs rent meanwhile).</summary>
    /// <exception cref="OutOfMemoryException">The kernel refused a thread: the ones made before it stay in the pool.</exception>
    public void Prestart(int count)
    {
        while (true)
        {
            lock (_idle)
            {
                if (_created >= count) return;
                _created++;
            }
            var carrier = StartCounted();
            lock (_idle)
            {
                _prestarted++;
                _idle.Add(carrier);
            }
        }
    }

    /// <summary>Keeps at least <paramref name="count"/> carriers however long they idle, until <see cref="Unkeep"/>: a hub's
    /// HubOptions.PrestartCarriers, from its construction to its close. The largest count of the live hubs applies.</summary>
    public void Keep(int count)
    {
        lock (_idle) _keeps.Add(count);
    }

    /// <summary>Withdraws one <see cref="Keep"/> of <paramref name="count"/>.</summary>
    public void Unkeep(int count)
    {
        lock (_idle) _keeps.Remove(count);
    }

    /// <summary>How many carriers the pool keeps whatever their idleness (run info).</summary>
    internal int Kept
    {
        get { lock (_idle) return KeptLocked; }
    }

    private int KeptLocked => _keeps.Count == 0 ? 0 : _keeps.Max();

    public Carrier Rent()
    {
        Carrier? carrier = null;
        bool refill = false;
        lock (_idle)
        {
            if (_idle.Count > 0)
            {
                carrier = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
            }
            else
            {
                _created++;
            }
            // Demand outran the pool (this rent creates its thread itself): refill ahead of the next ones. Not on every
            // rent that leaves few idle, which would recreate, every 10 s, what retirement took back down to MinIdle.
            if (carrier == null && !_refilling)
            {
                _refilling = refill = true;
                _refiller ??= StartRefiller();
            }
        }
        if (refill) _refillWanted.Release();
        return carrier ?? StartOnDemand();
    }

    private Carrier StartOnDemand()
    {
        var carrier = StartCounted();
        lock (_idle) CountMadeForDemand(onDemand: true);
        return carrier;
    }

    /// <summary>Counts a thread made for demand, by a rent or the refill thread, in its total and in the current burst. Under
    /// the pool's lock.</summary>
    private void CountMadeForDemand(bool onDemand)
    {
        if (onDemand) _madeOnDemand++;
        else _madeByRefill++;
        if (_burstNoted) return;
        long now = Stopwatch.GetTimestamp();
        if (_burstCount == 0 || now - _burstStart > BurstWindowTicks)
        {
            _burstStart = now;
            _burstCount = _burstOnDemand = 0;
        }
        _burstCount++;
        if (onDemand) _burstOnDemand++;
        if (_burstCount < BurstNoteThreshold) return;
        _burstNoted = true;
        Volatile.Write(ref _burstNote, new BurstNote(_burstCount, _burstOnDemand, Stopwatch.GetElapsedTime(_burstStart, now)));
    }

    /// <summary>
    /// The burst of threads made for demand that has just reached <see cref="BurstNoteThreshold"/> within a second, for the
    /// next hub that takes it to log (once per pool); null otherwise. A read of one field on every rent.
    /// </summary>
    public BurstNote? TakeBurstNote() => Volatile.Read(ref _burstNote) == null ? null : Interlocked.Exchange(ref _burstNote, null);

    /// <summary>A burst of carrier threads made for demand: how many, how many of them while a hub waited, over how long.</summary>
    public sealed record BurstNote(int Threads, int OnDemand, TimeSpan Within);

    /// <summary>Starts a carrier already counted in <see cref="Created"/>, and uncounts it when the kernel refuses the thread.</summary>
    private Carrier StartCounted()
    {
        try
        {
            return StartCarrier();
        }
        catch
        {
            lock (_idle) _created--;
            throw;
        }
    }

    /// <summary>Tests only: how many of the next thread starts fail as when the kernel refuses a thread.</summary>
    internal int RefuseStartsForTesting;

    /// <exception cref="OutOfMemoryException">The kernel refused the thread.</exception>
    private Carrier StartCarrier()
    {
        if (RefuseStartsForTesting > 0 && Interlocked.Decrement(ref RefuseStartsForTesting) >= 0)
            throw new OutOfMemoryException("The kernel refused a new carrier thread (refused for a test).");
        return Carrier.StartPooled(this, _stackSize);
    }

    private Thread StartRefiller()
    {
        var thread = new Thread(RefillLoop) { IsBackground = true, Name = "GreenRuntime carrier refill" };
        RuntimeThread.Start(thread);
        return thread;
    }

    /// <summary>The refill thread: on each request, creates idle carriers until <see cref="LowWater"/> are ready.</summary>
    private void RefillLoop()
    {
        // Created by whichever hub first drained the pool, perhaps a pinned one: it works in parallel with the hubs, and the
        // carriers it creates start from the process's mask anyway (Carrier.BindToCurrentThread).
        Affinity.Restore(Affinity.ProcessMask);
        while (true)
        {
            _refillWanted.Wait(); // not a greenlet wait: this thread has no hub (a patched wait runs the original here)
            while (true)
            {
                lock (_idle)
                {
                    // Never ahead of demand past the machine's carrier limit: its margin belongs to the rest of the process.
                    if (_idle.Count >= LowWater || _created >= CarrierLimit.Machine.Value)
                    {
                        _refilling = false;
                        break;
                    }
                    _created++;
                }
                Carrier carrier;
                try
                {
                    carrier = StartCounted();
                }
                catch (Exception e) when (e is OutOfMemoryException or ThreadStartException)
                {
                    // The kernel refused a thread now: stop refilling; a hub that finds the pool empty creates its own
                    // and reports the failure where it can (to the greenlet that needed the carrier).
                    lock (_idle) _refilling = false;
                    break;
                }
                lock (_idle)
                {
                    CountMadeForDemand(onDemand: false);
                    _idle.Add(carrier);
                }
            }
        }
    }

    public void Return(Carrier carrier)
    {
        lock (_idle) _idle.Add(carrier);
    }

    /// <summary>A carrier that ends its thread rather than come back (<see cref="Carrier.RetireAfterBody"/>).</summary>
    public void Forget()
    {
        lock (_idle) _created--;
    }

    /// <summary>Called by an idle carrier whose wait timed out: removes it unless the pool is at its minimum or it was just rented.</summary>
    public bool TryRetire(Carrier carrier)
    {
        lock (_idle)
        {
            if (_idle.Count <= MinIdle || _created <= KeptLocked) return false;
            // The longest-idle carriers sit at the bottom of the stack, so this search is short for them.
            int index = _idle.IndexOf(carrier);
            if (index < 0) return false;
            _idle.RemoveAt(index);
            _created--;
            return true;
        }
    }
}
