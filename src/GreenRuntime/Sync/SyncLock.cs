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
/// <para>DEBUG invariant checks fail through <see cref="InvariantBroken"/>, which frees the locks the failing thread holds
/// before the exception leaves: see the comment above <see cref="InvariantBroken"/>.</para>
/// </remarks>
internal sealed class SyncLock
{
    private int _held;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Enter()
    {
        if (Interlocked.CompareExchange(ref _held, 1, 0) != 0) EnterContended();
#if DEBUG
        NoteEntered();
#endif
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit()
    {
#if DEBUG
        if (!NoteExiting()) return;
#endif
        Volatile.Write(ref _held, 0);
    }

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

    // ---- DEBUG invariant checks ----------------------------------------------------------------------------------
    // A primitive checks its invariants with its lock held (GreenQueue's Q1/Q2, GreenSemaphore's S, a waiter's W, and the
    // hub's own checks that run under a primitive's lock: a timer cancelled as a Task waiter is served). A check that threw
    // there left the lock held: the exception went up a path that exits nothing (most critical sections have no finally,
    // as they call nothing that throws), and every thread that touched the primitive afterwards spun on the lock for
    // good, so a broken invariant showed as threads spinning on a lock that nobody held, never as its exception. So a
    // check fails through InvariantBroken, which frees every SyncLock the failing thread holds (a JoinableQueue's lock and
    // its Event's are held together) before the exception leaves.
    // Invariant L (DEBUG): a lock is held by the thread recorded in _owner, and is in that thread's t_held. Every Exit
    // still owed by the frames the exception leaves through (a finally, a catch that exits and rethrows) comes from a
    // thread that is not the owner any more, and does nothing: the lock may be another thread's by then.
    // Release builds have none of this: no owner, no list, and the checks are not compiled in.

    /// <summary>Whether this build checks invariants (DEBUG): what <see cref="FailNextCheck"/> needs.</summary>
    internal static bool ChecksInvariants =>
#if DEBUG
        true;
#else
        false;
#endif

    /// <summary>
    /// The failure of an invariant check: frees every <see cref="SyncLock"/> the calling thread holds, then returns the
    /// exception to throw. Called only by <c>[Conditional("DEBUG")]</c> checks.
    /// </summary>
    internal static InvalidOperationException InvariantBroken(string message)
    {
#if DEBUG
        ReleaseHeldByThisThread();
#endif
        return new InvalidOperationException(message);
    }

    /// <summary>
    /// The condition of a primitive's invariant check, made with its lock held: <paramref name="broken"/>, or true once
    /// after <see cref="FailNextCheck"/> on this thread. Called only by <c>[Conditional("DEBUG")]</c> checks.
    /// </summary>
    internal static bool Violated(bool broken)
    {
#if DEBUG
        if (t_failNextCheck)
        {
            t_failNextCheck = false;
            return true;
        }
#endif
        return broken;
    }

    /// <summary>Tests: the next invariant check of a primitive made on this thread fails (DEBUG only).</summary>
    /// <exception cref="NotSupportedException">A Release build, which has no checks.</exception>
    internal static void FailNextCheck()
    {
#if DEBUG
        t_failNextCheck = true;
#else
        throw new NotSupportedException("Invariant checks exist in DEBUG builds only.");
#endif
    }

#if DEBUG
    private int _owner; // Environment.CurrentManagedThreadId of the holder, 0 when free (Invariant L)

    [ThreadStatic] private static SyncLock?[]? t_held;
    [ThreadStatic] private static int t_heldCount;
    [ThreadStatic] private static bool t_failNextCheck;

    private void NoteEntered()
    {
        _owner = Environment.CurrentManagedThreadId;
        var held = t_held ??= new SyncLock?[4];
        if (t_heldCount == held.Length) Array.Resize(ref t_held, held.Length * 2);
        t_held![t_heldCount++] = this;
    }

    /// <summary>False when the calling thread does not hold the lock: an Exit owed by a frame that a failed check's
    /// exception left, after that check freed the lock (Invariant L).</summary>
    private bool NoteExiting()
    {
        if (_owner != Environment.CurrentManagedThreadId) return false;
        _owner = 0;
        var held = t_held!;
        for (int i = t_heldCount - 1; i >= 0; i--)
        {
            if (!ReferenceEquals(held[i], this)) continue;
            Array.Copy(held, i + 1, held, i, t_heldCount - i - 1);
            held[--t_heldCount] = null;
            break;
        }
        return true;
    }

    private static void ReleaseHeldByThisThread()
    {
        var held = t_held;
        for (int i = t_heldCount - 1; i >= 0; i--)
        {
            var lk = held![i]!;
            held[i] = null;
            lk._owner = 0;
            Volatile.Write(ref lk._held, 0);
        }
        t_heldCount = 0;
    }
#endif
}
