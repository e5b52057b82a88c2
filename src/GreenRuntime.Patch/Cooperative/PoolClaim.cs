using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.Cooperative;

/// <summary>
/// A bounded blocking call (a seekable file's read or write, a DNS lookup) offered to the thread pool while its
/// greenlet parks, which the greenlet takes back when no pool thread has started it within <see cref="Grace"/>, and then
/// runs on its own thread with the hub's baton released. The pool is the faster way while it has a thread to spare
/// (measured: 20,000 small ext4 writes from 4 greenlets, 0.24–0.26 s always through the pool, 0.64–0.68 s always
/// released, each release costing two thread hand-offs; 0.26–0.36 s this way); but legacy code often holds every pool
/// thread in blocking calls, and then a call sent there waited until the pool grew (200 writes: 4.5–5 s; 22 ms this
/// way, and 20,000 in 0.69 s). After a take-back the pool counts as late for <see cref="LateWindow"/>: calls in that
/// window go released at once.
/// </summary>
/// <remarks>Only calls that end by themselves qualify: a released call cannot be interrupted by a kill, whereas a call
/// left to the pool is abandoned by one. A pipe or a terminal may wait for ever for the other side, so its calls always
/// go to the pool.</remarks>
internal sealed class PoolClaim
{
    /// <summary>How long an offered call may wait for a pool thread: a pool with a thread to spare starts it within
    /// tens of microseconds, and within a millisecond or two on two busy CPUs (1 ms took back calls a free pool would
    /// have run, 0.33–0.37 s for the writes above).</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(2);

    /// <summary>How long after a take-back calls skip the pool (20 ms: a pool that was only briefly busy gets its next
    /// call soon; one that is held costs a grace per window).</summary>
    internal static readonly TimeSpan LateWindow = TimeSpan.FromMilliseconds(20);

    private static readonly long LateWindowTicks = (long)(LateWindow.TotalSeconds * Stopwatch.Frequency);

    /// <summary>Returned by <see cref="Offer"/> while the pool counts as late: run the call released at once.</summary>
    public static readonly PoolClaim Late = new();

    private static long s_lateUntil;

    /// <summary>How many calls <see cref="Offer"/> has sent the released way because the pool counted as late (tests read
    /// it to tell such a call from one that never reached the pool).</summary>
    internal static long LateCalls;
    private const int Offered = 0, Started = 1, Withdrawn = 2;
    private int _state = Offered; // Started by a pool thread, or Withdrawn by the greenlet (taken back, or killed)

    /// <summary>A claim for one call; <see cref="Late"/> to run it released at once; null when only the pool may run it
    /// (no carrier is left to take over the hub).</summary>
    public static PoolClaim? Offer()
    {
        if (!Parking.CanReleaseBaton) return null;
        if (Stopwatch.GetTimestamp() >= Volatile.Read(ref s_lateUntil)) return new PoolClaim();
        Interlocked.Increment(ref LateCalls);
        return Late;
    }

    /// <summary>Called by the pool thread: whether it runs the call (false: the greenlet took it back).</summary>
    public bool PoolStarts() => Interlocked.CompareExchange(ref _state, Started, Offered) == Offered;

    /// <summary>Parks until the pool has run <paramref name="task"/>, the work item that starts with
    /// <see cref="PoolStarts"/>. False: no pool thread had started it within the grace and the greenlet took it back; the
    /// caller runs the call itself (released).</summary>
    /// <remarks>A kill or timeout during the grace withdraws the call if no pool thread has started it yet, so a killed
    /// call cannot happen later; one already started runs to its end, abandoned. (A file call parks shielded, so no kill
    /// reaches it here: it is no cancellation point, <see cref="CooperativeFile"/>.)</remarks>
    public static bool Wait(Hub hub, Task task, PoolClaim? claim, WaitReason reason)
    {
        if (claim is not null)
        {
            bool done;
            try
            {
                done = Cooperative.Park(hub, task, Grace, reason);
            }
            catch
            {
                Interlocked.CompareExchange(ref claim._state, Withdrawn, Offered);
                throw;
            }
            if (!done && claim.TakeBack()) return false;
        }
        Cooperative.Park(hub, task, null, reason);
        return true;
    }

    /// <summary>Runs <paramref name="call"/> on the greenlet's own thread with the baton released, or inline when no
    /// carrier is left to take over the hub (the call ends by itself). <paramref name="cancellationPoint"/>: as
    /// <see cref="Parking.RunReleased{TState, TResult}"/>'s.</summary>
    public static TResult RunReleased<TState, TResult>(Func<TState, TResult> call, TState state, WaitReason reason, bool cancellationPoint = true) =>
        Parking.CanReleaseBaton ? Parking.RunReleased(call, state, reason, cancellationPoint) : call(state);

    private bool TakeBack()
    {
        if (Interlocked.CompareExchange(ref _state, Withdrawn, Offered) != Offered) return false;
        Volatile.Write(ref s_lateUntil, Stopwatch.GetTimestamp() + LateWindowTicks);
        return true;
    }
}
