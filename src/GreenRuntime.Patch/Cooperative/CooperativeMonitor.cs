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
/// <para>A contended enter made by CoreLib itself, or by code that catches <see cref="ThreadInterruptedException"/>
/// around it to retry it (Lucene.Net's <c>UninterruptableMonitor</c>; see <c>Cooperative.CallerKeepsInterruptsOut</c>),
/// or of a lock object whose type is CoreLib's (the lock inside
/// <c>SemaphoreSlim.Release</c>, a <c>ConcurrentDictionary</c> bucket, <c>Lazy&lt;T&gt;</c>'s, a <c>List&lt;T&gt;</c> locked on)
/// is not interrupted at all: it waits for the lock, and the
/// kill or timeout is raised at the greenlet's next blocking point. CoreLib's bookkeeping around such locks is not
/// written for an exception in the middle (nothing interrupts a thread there in practice): a kill that interrupted the
/// enter in <c>SemaphoreSlim.Release</c> under <c>BlockingCollection.Add</c> left the collection counting an adder that
/// had gone, so its items were stranded and <c>CompleteAdding</c> spun for ever. The caller is read from the stack, and
/// only when an interrupt came.</para>
/// <para>The interrupt of the greenlet's thread (<see cref="Thread.Interrupt"/>) interrupts the wait the same way, and is
/// kept out only of CoreLib's enters (its caller, or its lock): code that catches <see cref="ThreadInterruptedException"/>
/// around its enter gets it from the enter, as a thread's code does, since that is the exception its handler is written
/// for (a kill is not). Kept out there too, it came out of the greenlet's next wait instead, outside the handler.</para>
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
                if (!IsCoreLibLock(o) && !Cooperative.CallerKeepsInterruptsOut(typeof(Monitor), Parking.ReleasedCallMetThreadInterrupt)) throw;
                // A kill or timeout (or the thread's interrupt in an enter of CoreLib's), not raised inside CoreLib's own
                // bookkeeping nor past a retrying caller's handler (see the remarks): wait on. The handshake sends one
                // interrupt per wait; the kill stays pending for the next blocking point, and so does the thread's interrupt
                // (Hub.Blocking.cs).
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

    /// <summary>A released <c>Monitor.Wait</c>: what it waits on, for how long, and how many times the monitor was held
    /// (its recursion count) when the wait returned on the carrier and gave it back.</summary>
    private sealed class ReleasedWait(object obj, int millisecondsTimeout)
    {
        public readonly object Obj = obj;
        public readonly int Ms = millisecondsTimeout;
        public int Recursion;
    }

    // The runtime's wait returns (or throws) holding the monitor, re-acquired on the carrier; it is given back at once,
    // every recursion of it, and taken again once the baton is back (Wait below). Monitor.Exit is not patched.
    private static readonly Func<ReleasedWait, bool> s_wait = static w =>
    {
        try
        {
            return WaitInt.Call(w.Obj, w.Ms);
        }
        finally
        {
            while (Monitor.IsEntered(w.Obj))
            {
                Monitor.Exit(w.Obj);
                w.Recursion++;
            }
        }
    };

    /// <summary>Replaces <c>Monitor.Enter_Slowpath(object)</c>: the contended <c>lock</c>/<c>Monitor.Enter</c>.</summary>
    public static void Enter(object obj)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null)
        {
            EnterSlowpath.Call(obj);
            return;
        }
        if (TryEnterSlowpath.Call(obj, 0) || TryAgainAfterTheOthers(obj)) return;
        int timeout = Timeout.Infinite;
        if (WaitUntilFreeThenEnter(s_waitUntilFree, s_tryEnterNow, obj, ref timeout) == FreeWait.Entered) return;
        if (Parking.CanReleaseBaton)
            Parking.RunReleased(s_enter, obj, WaitReason.Lock, cancellationPoint: false, interruptible: true);
        else
            PollEnter(s_tryEnterNow, obj, Timeout.Infinite, typeof(Monitor), IsCoreLibLock(obj));
    }

    // Waits in the runtime until the monitor can be taken (false: the time ran out), takes it and gives it back at once.
    private static readonly Func<(object Obj, int Ms), bool> s_waitUntilFree = static s =>
    {
        if (s.Ms == Timeout.Infinite) s_enter(s.Obj);
        else if (!TryEnterSlowpath.Call(s.Obj, s.Ms)) return false;
        Monitor.Exit(s.Obj);
        return true;
    };

    /// <summary>How many times a contended enter waits in the runtime for the lock to be free, before it waits to own it.</summary>
    internal const int WaitsUntilFree = 3;

    /// <summary>
    /// A contended enter of a lock that only the calling thread may own (a monitor, a <see cref="Lock"/>), on a greenlet
    /// that may release the baton: the runtime's wait runs with the baton released, but the lock it acquires is given
    /// back at once (<paramref name="waitAndExit"/>, given the time left) and taken again with the baton held
    /// (<paramref name="tryEnterNow"/>), up to <see cref="WaitsUntilFree"/> times. A lock won in the released wait and
    /// kept stays held until the greenlet gets the baton back: behind whatever the hub runs meanwhile, a millisecond or
    /// more under load, while every other thread and greenlet that wants it (of this hub, of the other hubs, the pool's)
    /// waits, in the runtime, and each of those that is a greenlet holds it in turn the same way once it wins it. Behind
    /// YARP, whose every request re-arms a CancellationTokenSource timer several times under the runtime's timer-queue
    /// lock, that convoy held the lock away from the baton for about half of the time, and hundreds of greenlets waited
    /// for it at once. <see cref="FreeWait.StillTaken"/>: every try found it taken again, or the baton could not be
    /// released; the caller then waits to own it, for the time left in <paramref name="millisecondsTimeout"/>
    /// (<see cref="Timeout.Infinite"/> stays so). Bounded because <see cref="Lock"/>'s anti-starvation mode livelocks
    /// waiters that only ever give the lock back.
    /// </summary>
    internal static FreeWait WaitUntilFreeThenEnter<TState>(Func<(TState State, int Ms), bool> waitAndExit, Func<TState, bool> tryEnterNow, TState state, ref int millisecondsTimeout)
    {
        long start = Environment.TickCount64;
        int timeout = millisecondsTimeout;
        for (int i = 0; i < WaitsUntilFree; i++)
        {
            if (!Parking.CanReleaseBaton) break;
            if (!Parking.RunReleased(waitAndExit, (state, TimeLeft(timeout, start)), WaitReason.Lock, cancellationPoint: false, interruptible: true))
                return FreeWait.TimedOut;
            if (tryEnterNow(state)) return FreeWait.Entered;
        }
        millisecondsTimeout = TimeLeft(timeout, start);
        return millisecondsTimeout == 0 ? FreeWait.TimedOut : FreeWait.StillTaken;
    }

    /// <summary>What <see cref="WaitUntilFreeThenEnter"/> ended with.</summary>
    internal enum FreeWait
    {
        /// <summary>The lock is the caller's.</summary>
        Entered,
        /// <summary>The time ran out before the lock was free.</summary>
        TimedOut,
        /// <summary>Not entered; the caller waits to own it for the time left.</summary>
        StillTaken,
    }

    /// <summary>Milliseconds left of <paramref name="millisecondsTimeout"/> since <paramref name="start"/>
    /// (<see cref="Environment.TickCount64"/>); <see cref="Timeout.Infinite"/> stays so.</summary>
    internal static int TimeLeft(int millisecondsTimeout, long start) =>
        millisecondsTimeout == Timeout.Infinite ? Timeout.Infinite : (int)Math.Max(0, millisecondsTimeout - (Environment.TickCount64 - start));

    /// <summary>
    /// After a contended attempt to enter a lock that only the calling thread may own (a monitor, a <see cref="Lock"/>),
    /// before the caller waits in the runtime: when a greenlet of this hub has won a lock in a released wait and waits
    /// for the baton, the lock met is most likely its, so the ready greenlets run once (that one first) and the enter is
    /// tried again (<see cref="Parking.YieldToLockHolders"/>). An enter that went to the runtime's wait at once joined a
    /// queue of threads that each held the lock until its greenlet got the baton, so every later enter met the lock held
    /// for as long as the greenlets kept taking it: a convoy (64 greenlets logging through ASP.NET Core's console logger
    /// had 57 in that wait at any moment). With no such greenlet the lock is a plain thread's, and the pass through the
    /// ready queue would only cost. Not a cancellation point, as entering is not.
    /// </summary>
    private static bool TryAgainAfterTheOthers(object obj) => Parking.YieldToLockHolders() && TryEnterSlowpath.Call(obj, 0);

    /// <summary>Replaces <c>Monitor.TryEnter_Slowpath(object, int)</c>: a contended <c>TryEnter</c> with a timeout.</summary>
    public static bool TryEnter(object obj, int millisecondsTimeout)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout is 0 or < -1) // the original refuses < -1
            return TryEnterSlowpath.Call(obj, millisecondsTimeout);
        if (TryEnterSlowpath.Call(obj, 0) || TryAgainAfterTheOthers(obj)) return true;
        switch (WaitUntilFreeThenEnter(s_waitUntilFree, s_tryEnterNow, obj, ref millisecondsTimeout))
        {
            case FreeWait.Entered: return true;
            case FreeWait.TimedOut: return false;
        }
        return Parking.CanReleaseBaton
            ? Parking.RunReleased(s_tryEnter, (obj, millisecondsTimeout), WaitReason.Lock, cancellationPoint: false, interruptible: true)
            : PollEnter(s_tryEnterNow, obj, millisecondsTimeout, typeof(Monitor), IsCoreLibLock(obj));
    }

    /// <summary>Replaces <c>Monitor.Wait(object, int)</c>.</summary>
    /// <remarks>
    /// <para>The runtime's wait runs with the baton released. It returns having re-acquired the monitor on the carrier;
    /// the carrier gives it back at once (every recursion of it) and the greenlet takes it again once the baton is back, by
    /// the contended enter (<see cref="Enter"/>), so the monitor is not held while the greenlet waits for the baton. Kept
    /// through that wait, it was held away from every thread that wanted it (the consumer that dequeues, the producers that
    /// add), and a <c>PulseAll</c> woke every waiter into a chain: each re-acquired it in turn and held it across its own
    /// hand-off of the baton. 50 greenlets producing into a bounded queue (<c>lock</c> + <c>Wait</c> + <c>PulseAll</c>, the
    /// shape of the console logger's <c>QueueFullMode.Wait</c>) for one consumer thread held it that way for about a third of
    /// the time. Letting another thread in between the wake and the re-acquire is what the runtime's own re-acquire does
    /// too: callers re-check their condition in a loop.</para>
    /// <para>A kill or timeout that arrives meanwhile interrupts the wait (the greenlet's thread is woken with
    /// <see cref="Thread.Interrupt"/>) and is raised with the monitor held again: inside the caller's <c>lock</c> block,
    /// whose <c>finally</c> exits it — where an interrupted Monitor.Wait throws anyway. The re-acquire is shielded: one that
    /// comes while it waits stays pending for the next blocking point, as for any wait that had already returned.</para>
    /// </remarks>
    public static bool Wait(object obj, int millisecondsTimeout)
    {
        var hub = Cooperative.WaitingHub(); // Wait(obj, 0) in a loop never waits
        if (hub is null || millisecondsTimeout == 0)
            return WaitInt.Call(obj, millisecondsTimeout);
        if (!Parking.CanReleaseBatonToStandIn && !WaitForStandIn(hub, ref millisecondsTimeout))
            return false; // timed out holding the monitor, as a Wait that nobody pulsed returns
        // Per wait, not thread-static: while the greenlet waits for the baton its carrier may stand in for the hub and run
        // another released wait itself.
        var wait = new ReleasedWait(obj, millisecondsTimeout);
        bool pulsed;
        try
        {
            pulsed = Parking.RunReleased(s_wait, wait, WaitReason.Lock, cancellationPoint: true, interruptible: true, standIn: true);
        }
        catch
        {
            // The kill, the timeout or the wait's own exception leaves with the monitor held, as from the runtime's wait.
            EnterAgain(obj, wait.Recursion);
            throw;
        }
        EnterAgain(obj, wait.Recursion);
        return pulsed;
    }

    /// <summary>Takes the monitor <paramref name="recursion"/> times, as a released <c>Monitor.Wait</c> gave it back, with the
    /// baton held. Shielded: a <c>Monitor.Wait</c> returns, or throws, holding the monitor, so a kill or timeout must not
    /// interrupt the contended enter; it stays pending for the next blocking point.</summary>
    private static void EnterAgain(object obj, int recursion)
    {
        if (recursion == 0) return; // the wait threw before it waited (the monitor was not this thread's)
        using (Green.Shield()) Enter(obj);
        for (int i = 1; i < recursion; i++) Monitor.Enter(obj); // this thread's already: never contended
    }

    /// <summary>
    /// Parks, polling with <see cref="PollBackoff"/>, until the baton can be released for a <c>Monitor.Wait</c>: every
    /// carrier is taken and no other greenlet is parked in an ordinary park to stand in (the others are in released
    /// calls). A Wait cannot be polled itself (a pulse that comes while the waiter is not queued is lost), but this
    /// greenlet holds the monitor all along, so no pulse can come before it enters the real wait. A kill or timeout
    /// meanwhile is raised with the monitor held, as from an interrupted wait. Returns false when
    /// <paramref name="millisecondsTimeout"/> ran out first; otherwise lowers it by the time spent.
    /// </summary>
    private static bool WaitForStandIn(Hub hub, ref int millisecondsTimeout)
    {
        var time = hub.Options.TimeProvider;
        long start = time.GetTimestamp();
        if (!Parking.PollUntil(static () => Parking.CanReleaseBatonToStandIn, Cooperative.WaitTimeout(millisecondsTimeout)))
            return false;
        if (millisecondsTimeout != Timeout.Infinite)
            millisecondsTimeout = Math.Max(0, millisecondsTimeout - (int)time.GetElapsedTime(start).TotalMilliseconds);
        return true;
    }

    private static readonly Func<object, bool> s_tryEnterNow = static o => TryEnterSlowpath.Call(o, 0);

    /// <summary>
    /// A contended enter of a lock that only the calling thread may own (a monitor, a <see cref="Lock"/>) when no carrier
    /// is left to take over the hub: the greenlet parks between non-blocking attempts (<see cref="PollBackoff"/>, 1–20
    /// ms) made on its own thread, so ownership stays right. Waited for with the baton held, a lock that a parked
    /// greenlet of the same hub held was never released: the hub stopped for good.
    /// </summary>
    /// <remarks>Kills and timeouts as for the released wait: one already pending when the enter starts stays pending, and
    /// so does one that comes meanwhile to an enter that CoreLib makes; any other is raised from a pause, with nothing
    /// acquired. The interrupt of the greenlet's thread that comes meanwhile ends the enter from the pause it came in, with
    /// nothing acquired, also where a kill would stay pending, except in an enter of CoreLib's (its caller, or its lock),
    /// where it stays pending.</remarks>
    /// <param name="tryEnter">The non-blocking attempt; true when it acquired the lock.</param>
    /// <param name="state">Passed to <paramref name="tryEnter"/>.</param>
    /// <param name="millisecondsTimeout">How long to keep trying; <see cref="Timeout.Infinite"/>: until acquired.</param>
    /// <param name="callerApi">The API whose frames to look past when asking whether CoreLib is the caller (see the
    /// remarks of the class); null: the caller is not looked at.</param>
    /// <param name="coreLibLock">The lock is CoreLib's own: a kill never interrupts its enter.</param>
    internal static bool PollEnter<TState>(Func<TState, bool> tryEnter, TState state, int millisecondsTimeout, Type? callerApi, bool coreLibLock = false)
    {
        var time = Hub.Current.Options.TimeProvider;
        long start = time.GetTimestamp();
        var backoff = new PollBackoff();
        // Decided before the first pause: a kill that came during one would be raised from it at once, inside CoreLib's
        // bookkeeping for an enter of CoreLib's. (One stack walk per polled enter, which waits a millisecond at least.)
        var caller = callerApi != null ? Cooperative.CallerOf(callerApi) : InterruptCaller.Other;
        bool coreLibCaller = caller == InterruptCaller.CoreLib;
        bool keepPending = coreLibLock || Parking.CancellationPending || caller != InterruptCaller.Other;
        // The shield holds the thread's interrupt back with the kills; one that comes during a pause is thrown after it, as
        // from the released wait (CallerKeepsInterruptsOut's threadInterrupt). One pending before the enter stays so.
        bool interruptOut = keepPending && !coreLibLock && !coreLibCaller && !Parking.InterruptPending;
        while (true)
        {
            if (tryEnter(state)) return true;
            var left = millisecondsTimeout == Timeout.Infinite ? TimeSpan.MaxValue
                : TimeSpan.FromMilliseconds(millisecondsTimeout) - time.GetElapsedTime(start);
            if (left <= TimeSpan.Zero) return false;
            if (keepPending)
            {
                using (Green.Shield()) Green.Sleep(backoff.Next(left));
                if (interruptOut) Parking.ThrowIfInterrupted();
            }
            else
            {
                Green.Sleep(backoff.Next(left));
            }
            backoff.Grow();
        }
    }
}
