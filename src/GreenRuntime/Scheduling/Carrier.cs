using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GreenRuntime.Scheduling;

/// <summary>
/// An OS thread that can hold a hub's baton. Pooled carriers are background threads that wait in the
/// <see cref="CarrierPool"/> for a job; each hub's own thread (the one that created it) is a carrier too,
/// permanently owned by the hub's main greenlet.
/// </summary>
/// <remarks>
/// A carrier is either <em>free</em> (<see cref="Owner"/> is null: nothing of a greenlet's stack lives on
/// this thread, so it may run unstarted greenlets and stackless continuations inline) or <em>owned</em> by
/// the one greenlet whose suspended stack it keeps. Every <see cref="Parker.Park()"/> of a carrier has
/// exactly one matching wake: either "your owner was resumed, you hold the baton" (owned), "run the hub for a
/// released call, you hold the baton" (owned, <see cref="StandIn"/>: Hub.Blocking.cs) or "here is a job, you hold the
/// baton" (free, in the pool).
/// </remarks>
[DebuggerDisplay("Carrier #{Id} owner={Owner}")]
internal sealed class Carrier
{
    private static int s_nextId;

    [ThreadStatic] private static Carrier? t_current;

    public readonly int Id = Interlocked.Increment(ref s_nextId);
    public readonly Parker Parker = new();

    /// <summary>The greenlet whose stack this thread keeps, or null when free. Written only by the baton holder.</summary>
    public Greenlet? Owner;

    /// <summary>Set by the baton holder before it hands this owned carrier the baton to run the hub while its owner stays
    /// parked (Hub.Blocking.cs, a released call with no free carrier left); cleared by the carrier when it takes the baton.</summary>
    public bool StandIn;

    /// <summary>The hub a pooled carrier must run the scheduler of when it is next unparked.</summary>
    public Hub? Job;

    /// <summary>The CPU this thread was last pinned to, or -1.</summary>
    public int PinnedCpu = -1;

    /// <summary>How long this carrier's last park lasted (Stopwatch ticks): short parks make the next one spin first (Hub.Spinning.cs).</summary>
    public long LastParkTicks = long.MaxValue;

    /// <summary>Consecutive spins of this carrier that did not see the baton, and the parks left before it may spin again (Hub.Spinning.cs).</summary>
    public int SpinFailures, SpinCooldown;

    /// <summary>
    /// Set on this thread when code on it may have acquired something only the thread's end gives up (a
    /// <see cref="Mutex"/>: the OS abandons what a thread owns when it exits, and nothing else does) and nothing counts
    /// what it gives back. A pooled carrier so marked ends once the item it runs is done instead of going back to the
    /// pool, so the next greenlet never inherits the ownership and other waiters see the mutex abandoned, as after a
    /// thread's exit. Written only by this thread.
    /// </summary>
    public bool RetireAfterBody;

    /// <summary>
    /// Acquisitions this thread made of something only its end gives up, less those it gave back
    /// (<see cref="LowLevel.Parking.NoteThreadAcquired"/>, <see cref="LowLevel.Parking.NoteThreadReleased"/>): above
    /// zero once an item is done, the thread still owns one, and a pooled carrier ends as for
    /// <see cref="RetireAfterBody"/>. Written only by this thread.
    /// </summary>
    public int OwnedUntilExit;

    /// <summary>Whether this carrier must end once the item it runs is done (<see cref="RetireAfterBody"/>,
    /// <see cref="OwnedUntilExit"/>).</summary>
    public bool MustRetire => RetireAfterBody || OwnedUntilExit > 0;

    public readonly bool IsPooled;
    private readonly CarrierPool? _pool;

    private Carrier(CarrierPool? pool)
    {
        _pool = pool;
        IsPooled = pool != null;
    }

    /// <summary>The carrier of the calling thread, or null when it never was one (no allocation).</summary>
    public static Carrier? CurrentOrNull => t_current;

    // Every carrier by its thread, for what other threads do to a greenlet's thread (Thread.Interrupt). Weak: a carrier
    // made for a user's thread goes with the thread.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Thread, Carrier> s_byThread = new();

    /// <summary>The carrier <paramref name="thread"/> is, or null when it never was one. Any thread.</summary>
    public static Carrier? Of(Thread thread) => s_byThread.TryGetValue(thread, out var carrier) ? carrier : null;

    /// <summary>The carrier of the calling thread, created for threads that are not pooled carriers.</summary>
    public static Carrier ForCurrentThread() => t_current ?? CreateForCurrentThread();

    private static Carrier CreateForCurrentThread()
    {
        var carrier = new Carrier(null);
        carrier.BindToCurrentThread();
        return t_current = carrier;
    }

    private void BindToCurrentThread()
    {
        s_byThread.AddOrUpdate(Thread.CurrentThread, this);
        if (!IsPooled)
        {
            _originalMask = Affinity.Save(); // a thread of the user's (or a hub's own): its mask is its owner's
            return;
        }
        // A new thread inherits the CPU mask of the thread that created it, which may be a pinned hub's: a pooled carrier
        // serves every hub of the process, so it starts from the process's mask, and an unpinned hub gets it back.
        _originalMask = Affinity.ProcessMask;
        Affinity.Restore(_originalMask);
    }

    internal static Carrier StartPooled(CarrierPool pool, int stackSize)
    {
        var carrier = new Carrier(pool);
        if (NativeThread.IsAvailable)
        {
            NativeThread.Start(carrier.RunNativeThread, stackSize); // the creator does not wait for it (NativeThread.cs)
            return carrier;
        }
        var thread = new Thread(carrier.PoolLoop, stackSize) { IsBackground = true, Name = carrier.ThreadName };
        RuntimeThread.Start(thread);
        return carrier;
    }

    private string ThreadName => _threadName ??= $"GreenRuntime carrier #{Id}";

    private string? _threadName;

    /// <summary>
    /// After a greenlet's body on a pooled carrier: the thread's name, background flag and priority back to the
    /// carrier's, as the thread pool resets its threads after each work item. A body that named its thread left the name
    /// on every later greenlet's log lines, and one that set <c>IsBackground = false</c> made an idle carrier a
    /// foreground thread, so the process never exited. About 20 ns.
    /// </summary>
    public void ResetThreadAfterBody()
    {
        if (!IsPooled) return; // a user's own thread keeps what its code set
        var thread = Thread.CurrentThread;
        if (!ReferenceEquals(thread.Name, ThreadName)) thread.Name = ThreadName;
        if (!thread.IsBackground) thread.IsBackground = true;
        if (thread.Priority != ThreadPriority.Normal) thread.Priority = ThreadPriority.Normal;
    }

    private void RunNativeThread()
    {
        Thread.CurrentThread.Name = ThreadName;
        PoolLoop();
    }

    private ulong[]? _originalMask;

    private void PoolLoop()
    {
        t_current = this;
        BindToCurrentThread();
        while (true)
        {
            bool woken = Parker.Park(CarrierPool.IdleTimeoutNs);
            if (!woken)
            {
                if (_pool!.TryRetire(this))
                    return; // the thread ends; the pool no longer knows this carrier
                continue;   // rented while timing out: the job's permit is on its way
            }
            var hub = Job;
            if (hub == null)
                continue; // a stale permit; a pooled carrier only runs when given a job
            Job = null;
            hub.RunAsFreeCarrier(this);
            // The baton has been handed away: nothing below may touch the hub.
            if (MustRetire)
            {
                _pool!.Forget();
                return; // the thread ends, and with it whatever it still owned is abandoned (see RetireAfterBody)
            }
            _pool!.Return(this);
        }
    }

    /// <summary>Pins the calling thread (which must be this carrier's) to one CPU; a negative cpu undoes an earlier pin.</summary>
    public void PinTo(int cpu)
    {
        if (PinnedCpu == cpu || !OperatingSystem.IsLinux()) return;
        if (cpu < 0)
        {
            Affinity.Restore(_originalMask);
            PinnedCpu = -1;
        }
        else if (Affinity.TryPin(cpu))
        {
            PinnedCpu = cpu;
        }
    }
}

/// <summary>sched_setaffinity for the calling thread (Linux).</summary>
internal static unsafe class Affinity
{
    /// <summary>The process's CPU mask before any hub pinned a thread: what a thread that serves no pinned hub runs with.
    /// Read once, when this class is first used, which is before its first pin (a hub reads its thread's mask or CPU
    /// first); null where unavailable.</summary>
    public static readonly ulong[]? ProcessMask;

    static Affinity() => ProcessMask = Save(); // an explicit static constructor: it runs before any member is used

    public static int CurrentCpu() => OperatingSystem.IsLinux() ? SchedGetCpu() : -1;

    public static bool TryPin(int cpu)
    {
        if (cpu < 0 || cpu >= 1024) return false;
        var mask = stackalloc ulong[16];
        for (int i = 0; i < 16; i++) mask[i] = 0;
        mask[cpu / 64] = 1UL << (cpu % 64);
        return SchedSetAffinity(0, 128, mask) == 0;
    }

    /// <summary>The calling thread's CPU mask (Linux), to restore with <see cref="Restore"/>; null if unavailable.</summary>
    public static ulong[]? Save()
    {
        if (!OperatingSystem.IsLinux()) return null;
        var mask = new ulong[16];
        fixed (ulong* p = mask)
            return SchedGetAffinity(0, 128, p) >= 0 ? mask : null;
    }

    public static void Restore(ulong[]? mask)
    {
        if (mask == null) return;
        fixed (ulong* p = mask)
            SchedSetAffinity(0, 128, p);
    }

    [DllImport("libc", EntryPoint = "sched_getaffinity")]
    private static extern int SchedGetAffinity(int pid, nint size, ulong* mask);

    [DllImport("libc", EntryPoint = "sched_setaffinity")]
    private static extern int SchedSetAffinity(int pid, nint size, ulong* mask);

    [DllImport("libc", EntryPoint = "sched_getcpu")]
    private static extern int SchedGetCpu();
}
