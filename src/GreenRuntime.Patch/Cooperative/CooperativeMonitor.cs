using System.Reflection;

namespace GreenRuntime.Cooperative;

/// <summary>
/// The C# <c>lock</c> statement and <see cref="Monitor"/> on a greenlet: a wait that would block releases the
/// hub's baton around the runtime's own wait, so the greenlet that holds the monitor (parked, say, in a patched
/// <c>Thread.Sleep</c> inside its <c>lock</c> block) can run and release it.
/// </summary>
/// <remarks>
/// <para>Why baton release and not parking: a monitor is owned by an OS thread. A greenlet always resumes on
/// its own carrier, so the carrier that blocks in the runtime's wait is the thread that will own the monitor
/// and later exit it: ownership, recursion and <c>Monitor.IsEntered</c> stay exactly the runtime's.</para>
/// <para>Targets (.NET 10): the uncontended paths of <c>Monitor.Enter</c>, <c>TryEnter</c> and the
/// <c>lock</c> statement are inlined fast paths that never block; contention reaches the NoInlining
/// <c>Enter_Slowpath(object)</c> and <c>TryEnter_Slowpath(object, int)</c>. <c>Monitor.Wait(object, int)</c>
/// is the funnel of every <c>Wait</c> overload. <c>Pulse</c>/<c>PulseAll</c> never block.</para>
/// <para>A kill or timeout that arrives while a greenlet waits to enter interrupts the runtime's wait
/// (<see cref="Thread.Interrupt"/>), which then throws with nothing acquired: the <c>lock</c> statement's
/// <c>finally</c> exits nothing, and the kill is raised. One that comes just as the monitor was acquired stays
/// pending until the greenlet's next blocking point: raising it between acquiring the monitor and the <c>try</c>
/// of the <c>lock</c> statement would leave the monitor owned by a carrier that goes on to run other greenlets.
/// Entering is not a cancellation point otherwise (a kill already raised does not fail the enter of a
/// <c>finally</c> that cleans up under a lock).</para>
/// <para>A contended enter made by CoreLib itself, or of a lock object whose type is CoreLib's (the lock inside
/// <c>SemaphoreSlim.Release</c>, a <c>ConcurrentDictionary</c> bucket, <c>Lazy&lt;T&gt;</c>'s, a <c>List&lt;T&gt;</c> locked on)
/// is not interrupted at all: it waits for the lock, and the
/// kill or timeout is raised at the greenlet's next blocking point. CoreLib's bookkeeping around such locks is not
/// written for an exception in the middle (nothing interrupts a thread there in practice): a kill that interrupted the
/// enter in <c>SemaphoreSlim.Release</c> under <c>BlockingCollection.Add</c> left the collection counting an adder that
/// had gone, so its items were stranded and <c>CompleteAdding</c> spun for ever. The caller is read from the stack, and
/// only when an interrupt came.</para>
/// </remarks>
internal static class CooperativeMonitor
{
    private const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Static;

    internal static readonly MethodInfo? EnterSlowpathMethod = typeof(Monitor).GetMethod("Enter_Slowpath", Private, [typeof(object)]);
    internal static readonly MethodInfo? TryEnterSlowpathMethod = typeof(Monitor).GetMethod("TryEnter_Slowpath", Private, [typeof(object), typeof(int)]);

    internal static readonly OriginalSlot<Action<object>> EnterSlowpath =
        new(EnterSlowpathMethod?.CreateDelegate<Action<object>>() ?? Monitor.Enter);

    internal static readonly OriginalSlot<Func<object, int, bool>> TryEnterSlowpath =
        new(TryEnterSlowpathMethod?.CreateDelegate<Func<object, int, bool>>() ?? Monitor.TryEnter);

    internal static readonly OriginalSlot<Func<object, int, bool>> WaitInt = new(static (o, ms) => Monitor.Wait(o, ms));

    // Cached here rather than as lambdas: the calls below must not allocate closures or initialise classes.
    private static readonly Func<object, bool> s_enter = static o =>
    {
        while (true)
        {
            try
            {
                EnterSlowpath.Call(o);
                return true;
            }
            catch (ThreadInterruptedException)
            {
                // Not a filter: inside one, the stack shows the exception dispatcher (CoreLib's) above the caller.
                if (!IsCoreLibLock(o) && !Cooperative.CalledByCoreLib(typeof(Monitor))) throw;
                // A kill or timeout, not raised inside CoreLib's own bookkeeping (see the remarks): wait on. The
                // handshake sends one interrupt per wait, and the kill stays pending for the next blocking point.
            }
        }
    };

    /// <summary>Whether the monitor is an object of a CoreLib type other than <see cref="object"/> itself: the lock
    /// CoreLib keeps inside its own types (SemaphoreSlim's <c>StrongBox&lt;bool&gt;</c>, <c>Lazy&lt;T&gt;</c>'s helper), or a
    /// CoreLib collection that code locks on. The caller alone does not tell: the JIT inlines CoreLib methods such as
    /// <c>SemaphoreSlim.Release</c> into the code that calls them, and their frames vanish from the stack (a killed
    /// request's <c>finally { pool.Release(); }</c> then failed and lost the permit).</summary>
    private static bool IsCoreLibLock(object o) => o.GetType() is var type && type != typeof(object) && type.Assembly == typeof(object).Assembly;

    private static readonly Func<(object Obj, int Ms), bool> s_tryEnter = static s => TryEnterSlowpath.Call(s.Obj, s.Ms);
    private static readonly Func<(object Obj, int Ms), bool> s_wait = static s => WaitInt.Call(s.Obj, s.Ms);

    /// <summary>Replaces <c>Monitor.Enter_Slowpath(object)</c>: the contended <c>lock</c>/<c>Monitor.Enter</c>.</summary>
    public static void Enter(object obj)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || !Parking.CanReleaseBaton)
        {
            EnterSlowpath.Call(obj);
            return;
        }
        if (TryEnterSlowpath.Call(obj, 0)) return;
        Parking.RunReleased(s_enter, obj, WaitReason.Lock, cancellationPoint: false, interruptible: true);
    }

    /// <summary>Replaces <c>Monitor.TryEnter_Slowpath(object, int)</c>: a contended <c>TryEnter</c> with a timeout.</summary>
    public static bool TryEnter(object obj, int millisecondsTimeout)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0 || !Parking.CanReleaseBaton)
            return TryEnterSlowpath.Call(obj, millisecondsTimeout);
        if (TryEnterSlowpath.Call(obj, 0)) return true;
        return Parking.RunReleased(s_tryEnter, (obj, millisecondsTimeout), WaitReason.Lock, cancellationPoint: false, interruptible: true);
    }

    /// <summary>Replaces <c>Monitor.Wait(object, int)</c>.</summary>
    /// <remarks>A kill or timeout that arrives meanwhile interrupts the wait (the greenlet's thread is woken with
    /// <see cref="Thread.Interrupt"/>) and is raised once the wait has re-acquired the monitor: inside the caller's
    /// <c>lock</c> block, whose <c>finally</c> exits it — where an interrupted Monitor.Wait throws anyway.</remarks>
    public static bool Wait(object obj, int millisecondsTimeout)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout == 0 || !Parking.CanReleaseBaton)
            return WaitInt.Call(obj, millisecondsTimeout);
        return Parking.RunReleased(s_wait, (obj, millisecondsTimeout), WaitReason.Lock, cancellationPoint: true, interruptible: true);
    }
}
