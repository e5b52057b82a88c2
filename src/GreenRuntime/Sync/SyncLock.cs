using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace GreenRuntime.Sync;

/// <summary>
/// The lock of one primitive (Event, GreenQueue, ...): greenlets of several hubs and plain threads use a primitive
/// at the same time, so its state and waiter lists are touched only while this lock is held.
/// </summary>
/// <remarks>
/// <para>A spin lock on purpose, not <c>lock</c>/<see cref="Lock"/>/<see cref="SpinWait"/>: those are patched by the
/// Locks and Time patch sets (a contended <c>lock</c> on a greenlet releases the hub's baton, and
/// <c>Thread.Yield</c>/<c>Thread.Sleep</c> park the greenlet), and parking while holding a primitive's lock, or
/// between a park's first and last step, would break the scheduler's invariants. The critical sections are a few
/// list operations and never block, call user code or take another primitive's lock except in the one documented
/// order (a JoinableQueue's lock before its Event's), so a holder is never descheduled for long; a waiter spins a
/// little and then gives the CPU away with the raw <c>sched_yield</c> system call.</para>
/// <para>Not re-entrant: code that holds it calls only the <c>...Locked</c> helpers of its primitive.</para>
/// </remarks>
internal sealed class SyncLock
{
    private int _held;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Enter()
    {
        if (Interlocked.CompareExchange(ref _held, 1, 0) != 0) EnterContended();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit() => Volatile.Write(ref _held, 0);

    /// <summary>Whether some thread holds it now (for assertions).</summary>
    public bool IsHeld => Volatile.Read(ref _held) != 0;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EnterContended()
    {
        for (int spins = 0; ; spins++)
        {
            if (Volatile.Read(ref _held) == 0 && Interlocked.CompareExchange(ref _held, 1, 0) == 0) return;
            if (spins < 8) Thread.SpinWait(4 << spins); // Thread.SpinWait is not patched: it is CPU work, not a wait
            else YieldCpu();
        }
    }

    private static readonly bool s_linux = OperatingSystem.IsLinux();

    private static void YieldCpu()
    {
        if (s_linux) SchedYield();
        else Thread.SpinWait(200);
    }

    [DllImport("libc", EntryPoint = "sched_yield")]
    private static extern int SchedYield();
}
