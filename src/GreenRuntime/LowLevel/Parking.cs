// The declared low-level API: what an extension (the patch sets, the servers, a user's driver) needs to make a
// blocking operation cooperative, modelled on trio's trio.lowlevel.
//
// Glossary: to *park* is to give up the hub's baton until exactly one *wake* names the park's ParkToken; the
// *parking hub* is the calling thread's hub when the caller is greenlet code that may park there (not a hub
// callback, not the scheduler, not a hub that has stopped after its disposal, not inside SuppressCooperation).
//
// The protocol every cooperative operation follows (the same one the core's own primitives use):
//   1. hub = Parking.ParkingHub(); if null, do the ordinary blocking thing (off a hub nothing may park);
//   2. try the operation without blocking; done if it completes;
//   3. token = Parking.BeginPark(reason); hand the token to every waker (a callback, a waiter list, a timer);
//      code between steps 3 and 4 must not block (not even on a lock another thread may hold: under
//      Patch.All() a contended lock parks), and calls Parking.CancelPark if it throws;
//   4. value = Parking.EndPark(token): other greenlets run until one waker calls token.TryWake (hub) or
//      token.PostWake (any thread); a kill or an expired timeout is thrown from here instead;
//   5. on an exception from step 4, cancel what the wakers were waiting for: the park is over.
//
// Everything here is a thin, checked face over the hub's own internals: misuse (parking off a greenlet or in
// a callback, ending someone else's park, waking twice) gets an InvalidOperationException that says what to do.

using System.Runtime.CompilerServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime.LowLevel;

/// <summary>
/// Parks the current greenlet and says where parking is allowed: the building blocks of cooperative
/// operations (trio's <c>wait_task_rescheduled</c> and <c>reschedule</c>).
/// </summary>
/// <remarks>
/// <para>The park/wake protocol: <see cref="BeginPark"/> returns a <see cref="ParkToken"/>; the caller hands the
/// token to whatever will end the wait and calls <see cref="EndPark(in ParkToken)"/>, which runs the hub's other
/// greenlets until the token is woken, then returns the value the waker passed (or throws the exception it
/// passed, or a kill or timeout of the greenlet). Every park has exactly one wake.</para>
/// <para>Hub-only: every member but <see cref="CurrentHub"/>, <see cref="ParkingHub"/>, <see cref="ParkingHubSilent"/>,
/// <see cref="CanPark"/> and <see cref="SuppressCooperation"/> is called by the greenlet that parks.</para>
/// </remarks>
/// <example>
/// A gate that greenlets of one hub wait at until one of them opens it (hub-only state needs no lock):
/// <code>
/// sealed class Gate
/// {
///     private readonly List&lt;ParkToken&gt; _waiters = new();
///     private bool _open;
///
///     public void Wait()
///     {
///         if (_open) return;
///         var token = Parking.BeginPark(WaitReason.Event);
///         _waiters.Add(token);
///         try { Parking.EndPark(token); }          // other greenlets run meanwhile
///         finally { _waiters.Remove(token); }
///     }
///
///     public void Open()
///     {
///         _open = true;
///         foreach (var token in _waiters.ToArray()) token.TryWake();
///     }
/// }
/// </code>
/// </example>
public static partial class Parking
{
    [ThreadStatic] private static int t_suppressed;

    /// <summary>The value <see cref="EndPark(in ParkToken, TimeSpan?)"/> returns when its timeout ended the park.</summary>
    public static object TimedOut => Hub.TimedOut;

    /// <summary>The hub of the calling thread (the baton holder or a greenlet of it), or null; unlike
    /// <see cref="Hub.Current"/> it never creates one. Any thread.</summary>
    public static Hub? CurrentHub => Hub.CurrentOrNull;

    /// <summary>
    /// The hub the caller may park on, or null when a cooperative operation must do the ordinary blocking thing:
    /// no hub on this thread, inside a hub callback (which must not block: the hub logs a warning once per
    /// callback, event 6), a disposed hub that has stopped (one still running greenlets that outlived its
    /// <see cref="Hub.Dispose()"/> lets them park), inside <see cref="SuppressCooperation"/>, or between the current
    /// greenlet's <see cref="BeginPark"/> and <see cref="EndPark(in ParkToken)"/> (code registering a park's wakers must
    /// not block, and a blocking call made there blocks the thread, as the original does). Any thread.
    /// </summary>
    /// <remarks>One thread-static read when the thread has no hub: cheap enough for the entry of every replaced
    /// BCL call.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Hub? ParkingHub()
    {
        var hub = Hub.CurrentOrNull;
        if (hub is null) return null;
        if (t_suppressed == 0 && hub.CanBlockHere && !hub.IsClosed) return hub;
        if (t_suppressed == 0) hub.NoteNotCooperative();
        return null;
    }

    /// <summary>
    /// <see cref="ParkingHub"/> without its warning inside hub callbacks, and so without side effects: for code that
    /// anything may reach, the logging code included (class initialisation), which must not allocate, log or
    /// initialise a class before deciding. Any thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Hub? ParkingHubSilent()
    {
        var hub = Hub.CurrentOrNull;
        return hub is not null && t_suppressed == 0 && hub.CanBlockHere && !hub.IsClosed ? hub : null;
    }

    /// <summary>Whether the caller may park now (<see cref="ParkingHubSilent"/> is not null). Any thread.</summary>
    public static bool CanPark => ParkingHubSilent() is not null;

    /// <summary>
    /// Whether the current greenlet's next cancellation point (a park outside every <see cref="CancellationShield"/>)
    /// would raise a kill or an expired <see cref="GreenTimeout"/>. False off a greenlet. For a call that is no
    /// cancellation point itself (it parks shielded) and decides afterwards whether to raise now, with <see cref="Yield"/>,
    /// or leave it to the greenlet's next blocking call. Any thread.
    /// </summary>
    public static bool CancellationPending
    {
        get
        {
            if (Hub.CurrentOrNull is not { IsOnHubThread: true } hub) return false;
            var g = hub.CurrentGreenlet;
            return g != hub.HubGreenlet && g.CancellationPending;
        }
    }

    /// <summary>
    /// Where a read that completes without waiting, but could have waited for the other side — a socket receive that
    /// finds data, a pipe's read — gives way, before it moves any byte: it raises a kill or an expired
    /// <see cref="GreenTimeout"/> that has not been raised in the greenlet yet, and yields (shielded) when the hub's
    /// blocking monitor has seen the greenlet hold the baton for a sample or more while others wait. Such calls are
    /// otherwise no blocking point, so a loop of them (streaming a database result) neither let the other greenlets run
    /// nor could be killed. Once the kill or timeout has been raised, later calls go through: clean-up that unwinds from
    /// it still reads, as on a thread. Writes and regular files' reads, which nothing interrupts on a thread, use
    /// <see cref="GiveWay"/>. Nothing off a greenlet that may park, or inside a <see cref="CancellationShield"/> (for
    /// the raise).
    /// </summary>
    public static void YieldPoint() => ParkingHubSilent()?.YieldPoint();

    /// <summary>
    /// <see cref="YieldPoint"/> for a call that writes: it gives way when the hub's blocking monitor asks, but raises no
    /// kill or timeout, as a thread's write is never interrupted. A library may have committed to the data before the
    /// call (SSH.NET encrypts a packet under a counter-mode cipher, then sends it; Lucene and LiteDB write a commit's
    /// pages in turn), and a write dropped at its start then breaks what every later write builds on. The kill or
    /// timeout is raised at the greenlet's next blocking point that is no write. Nothing off a greenlet that may park.
    /// </summary>
    public static void GiveWay() => ParkingHubSilent()?.GiveWay();

    /// <summary>
    /// For a lock enter that met the lock held, before it waits in the runtime: when a greenlet of this hub has won a lock
    /// in a released wait and waits for the baton (<see cref="RunReleased"/> with <see cref="WaitReason.Lock"/>), lets the
    /// ready greenlets run once, that one first, and returns true: the lock met is most likely its. Otherwise returns
    /// false at once, so a lock held by a plain thread costs no pass through the ready queue. Raises no kill or timeout.
    /// </summary>
    public static bool YieldToLockHolders() => ParkingHubSilent()?.YieldToLockHolders() ?? false;

    /// <summary>
    /// A token for an operation the current greenlet starts and waits for: cancelled when <paramref name="token"/> is,
    /// when the greenlet is killed, or when a <see cref="GreenTimeout"/> open on it now expires. A wait the kill
    /// interrupts abandons its operation; an operation that holds a shared resource for its caller (a pooled connection
    /// it is queued for) must see the cancellation too, or it keeps the resource for a caller that is gone. Off a
    /// greenlet it is <paramref name="token"/>.
    /// </summary>
    /// <param name="token">The caller's own token.</param>
    /// <param name="linked">The source made to combine them; dispose it once the operation is over. Null when none was
    /// needed.</param>
    /// <remarks>A kill or timeout cancels the token from a thread of the runtime's, not from the hub: the operation's
    /// cancellation callbacks may take locks (SemaphoreSlim's does), which hub code could only wait for with the baton
    /// held. One that comes while the greenlet is shielded cancels nothing (see KillLinkedSource.cs).</remarks>
    public static CancellationToken LinkCancellation(CancellationToken token, out CancellationTokenSource? linked)
    {
        linked = null;
        if (Hub.CurrentOrNull is not { IsOnHubThread: true } hub || hub.CurrentGreenlet == hub.HubGreenlet) return token;
        linked = new KillLinkedSource(hub.CurrentGreenlet, token);
        return linked.Token;
    }

    /// <summary>
    /// Ties <paramref name="linked"/>, a source <see cref="LinkCancellation"/> made, to the operation its token was given
    /// to. Once a greenlet other than the one that started the operation waits for it (<see cref="WaitingFor"/>), the
    /// operation is shared — a single-flight cache's task, which the first caller starts and the others wait for — and
    /// the starter's kill or timeout no longer cancels it: the other waiters get its result, as threads would. Any thread.
    /// </summary>
    public static void TieCancellation(Task operation, CancellationTokenSource? linked)
    {
        ArgumentNullException.ThrowIfNull(operation);
        if (linked is KillLinkedSource source) source.Tie(operation);
    }

    /// <summary>For a wait on <paramref name="task"/> the current greenlet is about to make: see <see cref="TieCancellation"/>.
    /// Cheap (one weak-table lookup); nothing off a greenlet.</summary>
    public static void WaitingFor(Task task)
    {
        if (task is null || Hub.CurrentOrNull is not { IsOnHubThread: true } hub || hub.CurrentGreenlet == hub.HubGreenlet) return;
        KillLinkedSource.WaitingFor(hub.CurrentGreenlet, task);
    }

    /// <summary>
    /// For a wait on <paramref name="awaited"/> that a kill or timeout of the current greenlet has just ended, before the
    /// exception unwinds: waits, shielded from further kills and timeouts, until <paramref name="awaited"/> completes or
    /// the cancellations of the greenlet's <see cref="LinkCancellation"/> tokens that another thread has begun have ended.
    /// Their callbacks may be what completes <paramref name="awaited"/> (a queue that hands out pooled connections cancels
    /// its waiter's task): unwinding first would unregister them before they ran, and a thread, which can leave such a
    /// wait only through the callback, never loses one. After a kill that cancelled the greenlet's own
    /// <see cref="Greenlet.CancellationToken"/>, which the greenlet asked for, it then waits for <paramref name="awaited"/>
    /// itself, at most 5 seconds: an operation given that token (a database query) may still be reading the connection
    /// that the greenlet's cleanup is about to use, and a thread whose token is cancelled stays in its wait until the
    /// operation ends. The same holds for the <see cref="GreenTimeout.Token"/> of an expired scope that was asked for: its
    /// cancel begun on another thread is waited for, then <paramref name="awaited"/>, so that an operation that completed
    /// anyway (an item a channel read took) is not lost. Returns at once when none applies; nothing off a greenlet that
    /// may park.
    /// </summary>
    /// <param name="awaited">The task the interrupted wait was for.</param>
    /// <returns>Whether <paramref name="awaited"/> has completed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="awaited"/> is null.</exception>
    public static bool SettleCancellation(Task awaited)
    {
        ArgumentNullException.ThrowIfNull(awaited);
        if (!awaited.IsCompleted && ParkingHubSilent() is { } hub)
            KillLinkedSource.Settle(hub, hub.CurrentGreenlet, awaited);
        return awaited.IsCompleted;
    }

    /// <summary>Whether the calling thread is inside <see cref="SuppressCooperation"/>.</summary>
    public static bool IsCooperationSuppressed => t_suppressed != 0;

    /// <summary>
    /// Until the returned scope is disposed, <see cref="ParkingHub"/> returns null on this thread, so cooperative
    /// operations (the patched BCL methods among them) run their ordinary blocking forms, and
    /// <see cref="BeginPark"/> refuses. For short cleanup waits that must not park (a kill may already be
    /// pending) and must not come back into the cooperative code that started them.
    /// </summary>
    /// <example>
    /// <code>
    /// using (Parking.SuppressCooperation())
    ///     pending.Wait();          // a real (short) blocking wait, even with Patch.All() applied
    /// </code>
    /// </example>
    public static SuppressedCooperation SuppressCooperation()
    {
        t_suppressed++;
        return new SuppressedCooperation(true);
    }

    internal static void EndSuppression()
    {
        if (t_suppressed <= 0)
            throw new InvalidOperationException("A SuppressCooperation scope was disposed twice, or on another thread than the one that opened it.");
        t_suppressed--;
    }

    /// <summary>
    /// Step 1 of a park: marks the current greenlet parked (reason <paramref name="reason"/>, reported by run-info and
    /// metrics) and returns the token that resumes it. Throws the greenlet's pending kill or expired timeout instead, so
    /// a killed greenlet cannot park.
    /// </summary>
    /// <param name="reason">What the greenlet waits for (not <see cref="WaitReason.None"/>).</param>
    /// <param name="foreignWake">True when the wake will come from outside the hub's greenlets and timers (another thread,
    /// a callback of a .NET or native API, through <see cref="ParkToken.PostWake"/>): the park then counts as an
    /// outstanding operation, so the hub does not declare <see cref="LoopExitException"/> ("this would block forever")
    /// while nothing else is left to run. False: the hub's own greenlets or timers wake it, and a park nothing can wake
    /// is reported as LoopExit.</param>
    /// <remarks>Between this call and <see cref="EndPark(in ParkToken)"/> the caller only registers wakers: it must not
    /// block (not even on a lock another thread may hold), and if registering throws it calls <see cref="CancelPark"/>.</remarks>
    /// <exception cref="ArgumentException"><paramref name="reason"/> is <see cref="WaitReason.None"/>.</exception>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park: a hub callback, the scheduler, a thread
    /// that released its hub's baton (<see cref="Green.RunBlocking(Action)"/>), inside <see cref="SuppressCooperation"/>,
    /// or between a BeginPark and its EndPark (one park at a time).</exception>
    /// <exception cref="ObjectDisposedException">The hub has been disposed.</exception>
    public static ParkToken BeginPark(WaitReason reason, bool foreignWake = false)
    {
        if (reason == WaitReason.None)
            throw new ArgumentException("A park needs a reason other than None (run-info reports it).", nameof(reason));
        if (t_suppressed != 0)
            throw new InvalidOperationException("Cannot park inside Parking.SuppressCooperation(): that scope is for short waits that must really block. Park outside it.");
        var hub = Hub.Current;
        if (hub.IsOnHubThread && hub.CurrentGreenlet is { State: GreenletState.Parked or GreenletState.Ready } g)
            throw new InvalidOperationException($"{g} began a park that has not ended: end it (EndPark) or undo it (CancelPark) before beginning another. Nothing between BeginPark and EndPark may block.");
        return new ParkToken(hub.BeginPark(reason), foreignWake);
    }

    /// <summary>Undoes <see cref="BeginPark"/> when registering the wakers failed: the greenlet runs on, and the token is dead.</summary>
    /// <exception cref="InvalidOperationException">The token is not a park of the current greenlet, or that park already ended.</exception>
    public static void CancelPark(in ParkToken token)
    {
        var hub = CheckOwnPark(token, nameof(CancelPark));
        hub.CancelPark(token.Inner);
    }

    /// <summary>
    /// Step 2 of a park: gives the baton away until the token is woken, then returns the value the waker passed (or
    /// throws the exception it passed). A kill or an expired timeout of the greenlet is thrown here too.
    /// </summary>
    /// <exception cref="InvalidOperationException">The token is not a park of the current greenlet (a park is ended by the
    /// greenlet that began it), or that park already ended (EndPark is called once per BeginPark).</exception>
    public static object? EndPark(in ParkToken token)
    {
        var hub = CheckOwnPark(token, nameof(EndPark));
        return Suspend(hub, token);
    }

    /// <summary>
    /// <see cref="EndPark(in ParkToken)"/> with a limit: when <paramref name="timeout"/> elapses first, the park is
    /// woken with <see cref="TimedOut"/>, which this returns. Null or <see cref="Timeout.InfiniteTimeSpan"/>: no limit.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="timeout"/> is negative (other than infinite).</exception>
    /// <exception cref="InvalidOperationException">As for <see cref="EndPark(in ParkToken)"/>.</exception>
    public static object? EndPark(in ParkToken token, TimeSpan? timeout)
    {
        var hub = CheckOwnPark(token, nameof(EndPark));
        if (timeout is not { } limit || limit == Timeout.InfiniteTimeSpan) return Suspend(hub, token);
        if (limit < TimeSpan.Zero)
        {
            hub.CancelPark(token.Inner);
            throw new ArgumentOutOfRangeException(nameof(timeout), limit, "The timeout must not be negative (use null or Timeout.InfiniteTimeSpan for none).");
        }
        var timer = hub.AddWakeTimer(limit, token.Inner, Hub.TimedOut);
        try
        {
            return Suspend(hub, token);
        }
        finally
        {
            timer.Cancel();
        }
    }

    /// <summary>Parks until the token is woken: <see cref="BeginPark"/> and <see cref="EndPark(in ParkToken)"/> with the
    /// token handed out through <paramref name="register"/> (which must not block).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="register"/> is null.</exception>
    /// <param name="reason">What the greenlet waits for.</param>
    /// <param name="register">Hands the token to the wakers; must not block.</param>
    /// <param name="foreignWake">The wake comes from outside the hub (see <see cref="BeginPark"/>).</param>
    public static object? Park(WaitReason reason, Action<ParkToken> register, bool foreignWake = false)
    {
        ArgumentNullException.ThrowIfNull(register);
        var token = BeginPark(reason, foreignWake);
        try
        {
            register(token);
        }
        catch
        {
            CancelPark(token);
            throw;
        }
        return EndPark(token);
    }

    /// <summary>Parks until the greenlet is killed (or its timeout expires): what a blocking call that never returns
    /// (<c>Thread.Sleep(Timeout.Infinite)</c>) becomes on a greenlet.</summary>
    public static void ParkForever(WaitReason reason)
    {
        var token = BeginPark(reason);
        EndPark(token);
    }

    /// <summary>Lets every other ready greenlet run once, then continues (gevent's <c>sleep(0)</c>).</summary>
    /// <returns>Whether another greenlet was ready to run.</returns>
    public static bool Yield()
    {
        if (t_suppressed != 0)
            throw new InvalidOperationException("Cannot yield inside Parking.SuppressCooperation().");
        var hub = Hub.Current;
        bool others = hub.ReadyCount > 0;
        hub.YieldCurrent();
        return others;
    }

    /// <summary>The hub's step 3; a park woken from outside counts as outstanding meanwhile, so LoopExit waits for it.</summary>
    private static object? Suspend(Hub hub, in ParkToken token)
    {
        if (!token.ForeignWake) return hub.EndPark(token.Inner);
        hub.BeginExternalWait();
        try
        {
            return hub.EndPark(token.Inner);
        }
        finally
        {
            hub.EndExternalWait();
        }
    }

    private static Hub CheckOwnPark(in ParkToken token, string operation)
    {
        var g = token.Greenlet;
        var hub = g.Hub;
        if (!hub.IsOnHubThread || hub.CurrentGreenlet != g)
            throw new InvalidOperationException($"{operation} must be called by the greenlet that began the park ({g}), not by {(hub.IsOnHubThread ? hub.CurrentGreenlet.ToString() : "another thread")}; other code wakes it with TryWake or PostWake.");
        if (g.ParkSequence != token.Inner.Sequence || g.State is not (GreenletState.Parked or GreenletState.Ready))
            throw new InvalidOperationException($"The park of {g} named by this token has already ended: {operation} is called once per BeginPark.");
        return hub;
    }
}
