// Baton release: running a call that must really block without stopping the hub.
//
// A greenlet that runs on a carrier owns that OS thread while it is suspended. A call that cannot be made
// cooperative (a contended Monitor, Monitor.Wait, a Mutex, a native library's own I/O, another greenlet's
// class initialiser) can therefore block on that very thread — keeping thread identity, so lock ownership
// stays right — provided the thread first gives the baton away. This is how CPython releases its GIL around
// a blocking system call.
//
// The protocol (RunReleased), run by the baton holder on the greenlet G's own carrier C:
//   1. Park G (reason Blocking) and mark it OutsideBaton. It counts as an outstanding operation, so the hub
//      does not declare LoopExit while C is away.
//   2. Hand the baton to a free pooled carrier, which runs the scheduler: other greenlets go on. At the carrier cap a
//      call that asks for it (standIn: a Monitor.Wait, which cannot be polled; Green.RunBlocking) hands the baton
//      instead to the carrier of a greenlet parked in an ordinary park: that thread runs the scheduler until its own
//      greenlet is resumed, then goes on with it, and the next baton holder runs the hub from there. Without it such a
//      wait had to hold the baton, or wait for a carrier that the greenlets waiting for its monitor kept for ever.
//      Green.RunBlocking that finds neither waits for one before step 1 (WaitForReleasedCallRunner): parked, in
//      arrival order, a cancellation point, since nothing has started. Run with the baton held instead, a call that
//      waited for a greenlet parked on the same hub (a row lock it held across a sleep) stopped the hub until the
//      call's own timeout.
//   3. C runs the call with no baton. Its thread has no hub meanwhile (Hub.CurrentOrNull is null), so every
//      patched method it reaches behaves exactly like the original and nothing it does can touch the hub.
//   4. C posts "G's call returned" to the hub's inbox and parks on its own Parker.
//   5. The baton holder drains the inbox, makes G ready; G is resumed on C like any other park.
// Every park has exactly one wake: while G is OutsideBaton, TryWake refuses every other waker. A kill or an
// expired timeout is stored in PendingException instead and raised when the call has returned (a blocking
// call cannot be interrupted halfway; Monitor.Wait is the exception, woken by Thread.Interrupt, see
// ReleasedInterrupt.cs), except where the caller asks to keep it pending: a lock that was just acquired must
// reach the code that releases it, and what Green.RunBlocking's call returned (a connection it opened) must reach
// the code that disposes it (keepResult).
//
// Invariant 1 holds throughout: between steps 2 and 5 C runs only the call, which is not greenlet code of
// the hub; it touches no hub state (the comments below mark the one line after which it may not).
//
// On a stackless greenlet, what parks in step 1 is a step of it (Hub.Steps.cs): several steps of one greenlet may each
// run a released call at once.

using System.Runtime.ExceptionServices;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>Tests only: runs on the thread of a released call that has returned, before it queues for the baton.</summary>
    internal static Action? ReturningFromReleasedCallForTesting;

    /// <summary>The hub this thread gave its baton away from, while it runs a released call (step 3).</summary>
    [ThreadStatic] private static Hub? t_released;

    /// <summary>
    /// Whether the current greenlet can run a call with the baton released: code of a greenlet (not a
    /// callback or the scheduler), and a free carrier is allowed to take over the hub meanwhile.
    /// </summary>
    internal bool CanReleaseBaton => MayReleaseHere && _carriersInUse < MaxCarriers;

    /// <summary>The part of <see cref="CanReleaseBaton"/> that does not depend on carriers: code of a greenlet, on an open
    /// hub, not inside a park.</summary>
    internal bool MayReleaseHere => CanBlockHere && !_closed;

    /// <summary>Whether the current stackful greenlet is between <see cref="BeginPark"/> and <see cref="EndPark"/>: code
    /// there must not block (Invariant), yet CoreLib may run a patched call in it (the thread pool starts a worker thread
    /// from whichever thread queues work, this park's own registration included). Such a call runs as the original
    /// (<see cref="CanBlockHere"/> is false).</summary>
    private bool ParkInProgress => _current is { IsStackless: false, State: GreenletState.Parked or GreenletState.Ready };

    /// <summary>
    /// <see cref="CanReleaseBaton"/>, or every carrier is taken but a greenlet parked in an ordinary park keeps one that
    /// can run the hub meanwhile (step 2 with a stand-in).
    /// </summary>
    internal bool CanReleaseBatonToStandIn =>
        MayReleaseHere && (_carriersInUse < MaxCarriers || ParkedCarrier(Carrier.ForCurrentThread()) != null);

    /// <summary>The carrier of a stackful greenlet parked in an ordinary park (not itself in a released call), other than
    /// <paramref name="self"/>: parked in <see cref="ParkUntilOwnerResumes"/>, so it can take the baton and run the hub until its
    /// own greenlet is resumed. The main greenlet's thread first: it counts against no cap, and it usually waits (in a join)
    /// for the others. Null if there is none. Baton holder only.</summary>
    private Carrier? ParkedCarrier(Carrier self)
    {
        // A walk that found none holds until _standInEpoch moves. While a Green.RunBlocking waiter waits, the scheduler
        // asks at every step (WakeReleaseWaiter), and the walk over every greenlet alive made each step O(greenlets):
        // 20 000 callbacks took 1.6-2.9 s with 10 000 greenlets alive (stackless ones awaiting, or spawned ones waiting
        // for a carrier), 10-50 ms without the waiter.
        if (_noStandInAt == _standInEpoch && _noStandInFor == self) return null;
        if (MayStandIn(MainGreenlet, self) is { } main) return main;
        for (var g = _aliveHead; g != null; g = g.NextAlive)
        {
            if (MayStandIn(g, self) is { } c) return c;
        }
        _noStandInAt = _standInEpoch;
        _noStandInFor = self;
        return null;
    }

    /// <summary>
    /// Moves whenever a greenlet may have become a stand-in (<see cref="MayStandIn"/>), which only two things do: a park
    /// suspending a greenlet on its own carrier (<see cref="EndPark"/>, after which it is parked, owns that carrier and is
    /// not outside the baton), and a stand-in's carrier taking the baton to run the hub (its <see cref="Carrier.StandIn"/>
    /// cleared, its greenlet still parked). Everything else only takes stand-ins away: a greenlet woken, resumed, in a
    /// released call (it is made ready as that call's return clears <see cref="Greenlet.OutsideBaton"/>) or dead, a carrier
    /// marked a stand-in. So a walk of <see cref="ParkedCarrier"/> that found none stays true while it does not move.
    /// Baton holder only.
    /// </summary>
    private long _standInEpoch;

    /// <summary>The <see cref="_standInEpoch"/> at which <see cref="ParkedCarrier"/> for <see cref="_noStandInFor"/> found
    /// none (-1: never).</summary>
    private long _noStandInAt = -1;

    private Carrier? _noStandInFor;

    /// <summary>
    /// Greenlets whose <see cref="Green.RunBlocking(Action)"/> found every carrier taken and no stand-in, parked in
    /// <see cref="WaitForReleasedCallRunner"/>, in arrival order. A token whose park a kill or timeout ended is stale and
    /// dropped where it is met (<see cref="DropStaleReleaseWaiters"/>). Baton holder only.
    /// </summary>
    private readonly Deque<WakeToken> _releaseWaiters = new(4);

    /// <summary>
    /// Before <see cref="Green.RunBlocking(Action)"/> releases the baton: raises a kill or timeout already pending (a
    /// cancellation point), and when every carrier the hub may use is taken and no parked greenlet's carrier can stand
    /// in, parks until one can (in arrival order; the scheduler wakes the first waiter, <see cref="WakeReleaseWaiter"/>).
    /// Returns with <see cref="RunReleased"/>'s <c>standIn</c> form able to release, or with the kernel refusing threads,
    /// where the call runs with the baton held (event 7 said so once).
    /// </summary>
    internal void WaitForReleasedCallRunner()
    {
        RaisePending(_current);
        bool woken = false; // taken off the queue by the scheduler: first in line, so it goes back to the front
        while (true)
        {
            DropStaleReleaseWaiters();
            if ((woken || _releaseWaiters.Count == 0) && ReleasedCallRunnerAtHand(Carrier.ForCurrentThread())) return;
            var token = BeginPark(WaitReason.Blocking); // raises a kill or timeout that ended the last turn's wait first
            if (woken) _releaseWaiters.PushFront(token);
            else _releaseWaiters.PushBack(token);
            EndPark(token);
            woken = true;
        }
    }

    /// <summary>Whether a released call of the greenlet on <paramref name="self"/> finds a carrier to run the hub (a free
    /// one, or a stand-in: <see cref="ReleasedCallRunner"/> with <c>standIn</c>), or must run with the baton held because
    /// the kernel refuses threads (waiting would not bring one: a LoopExit, where the call used to run).</summary>
    private bool ReleasedCallRunnerAtHand(Carrier self) =>
        _carriersInUse < MaxCarriers || _carriersRefusedAt >= 0 || ParkedCarrier(self) != null;

    private void DropStaleReleaseWaiters()
    {
        while (_releaseWaiters.Count > 0 && !_releaseWaiters.PeekFront().IsCurrent) _releaseWaiters.PopFront();
    }

    /// <summary>
    /// Scheduler step (Hub.Scheduler.cs, before a carrier waiter or a ready item is taken): resumes the first greenlet
    /// waiting in <see cref="WaitForReleasedCallRunner"/> when a carrier can now run the hub for it, ahead of everything
    /// queued, so that nothing changes before it looks again. <paramref name="self"/> counts when it is a free pooled
    /// carrier: it goes back to the pool as it hands the baton over. One waiter per step: the next is looked at once
    /// this one has taken its carrier.
    /// </summary>
    private bool WakeReleaseWaiter(Carrier self)
    {
        DropStaleReleaseWaiters();
        if (_releaseWaiters.Count == 0) return false;
        var next = _releaseWaiters.PeekFront();
        if (!(self is { Owner: null, IsPooled: true } || ReleasedCallRunnerAtHand(next.Greenlet.Carrier!))) return false;
        _releaseWaiters.PopFront();
        return TryWake(next, first: true);
    }

    private static Carrier? MayStandIn(Greenlet g, Carrier self) =>
        g is { State: GreenletState.Parked, OutsideBaton: false, IsStackless: false, Carrier: { } c } && c != self && c.Owner == g && !c.StandIn ? c : null;

    /// <summary>
    /// Runs <paramref name="call"/> on the current greenlet's own thread with the baton given away, so the
    /// other greenlets of the hub run meanwhile (see the protocol at the top of this file).
    /// </summary>
    /// <param name="call">The blocking call; it runs without the baton.</param>
    /// <param name="state">Passed to <paramref name="call"/> (so callers need no closure).</param>
    /// <param name="reason">What run-info reports the greenlet as waiting for meanwhile.</param>
    /// <param name="raisePending">Whether the call is a cancellation point: a kill or timeout already pending is raised
    /// before it starts, and one that arrived meanwhile as soon as it has returned (but see <paramref name="keepResult"/>).
    /// False (entering a lock) leaves both for the greenlet's next blocking point.</param>
    /// <param name="interruptible">A kill or timeout interrupts the call with <see cref="Thread.Interrupt"/>
    /// (ReleasedInterrupt.cs): only for calls whose interrupted form leaves a consistent state (Monitor.Wait
    /// throws after re-acquiring the monitor); never for arbitrary user code.</param>
    /// <param name="standIn">With no free carrier left, a parked greenlet's carrier runs the hub meanwhile (step 2;
    /// <see cref="CanReleaseBatonToStandIn"/> must be true).</param>
    /// <param name="keepResult">A call that returned is returned, and a kill or timeout that arrived meanwhile stays pending
    /// for the greenlet's next blocking point (<see cref="Green.RunBlocking(Action)"/>: what the call made, a connection
    /// it opened, must reach the code that disposes it). With <paramref name="raisePending"/>, one already pending is still
    /// raised before the call starts.</param>
    internal TResult RunReleased<TState, TResult>(Func<TState, TResult> call, TState state, WaitReason reason, bool raisePending, bool interruptible = false, bool standIn = false, bool keepResult = false)
    {
        // A cancellation point raises a kill already pending before the call starts; entering a lock is not one (legacy
        // cleanup takes locks in finally blocks after a kill, and a thread's Monitor.Enter does not fail either).
        var owner = _current;
        AssertMayBlock();
        // A wait that a thread's interrupt ends (Hub.Interrupts.cs), whether or not kills interrupt it.
        bool alertable = interruptible || IsInterruptible(reason);
        if (raisePending) RaisePending(owner, alertable);
        var self = Carrier.ForCurrentThread();
        // The carrier that runs the hub meanwhile is found before anything changes: with none (the kernel refused a
        // thread), the call runs with the baton held, as the original would. An idle carrier lent to this thread's last
        // return (Hub.IdleLending.cs) runs it, with no carrier rented.
        bool toIdler = IdlerLent;
        var runner = toIdler ? null : ReleasedCallRunner(self, standIn);
        if (runner is null && !toIdler) return call(state);
        var token = BeginPark(reason, raise: false);
        var g = token.Greenlet; // a step of owner when owner is stackless (Hub.Steps.cs)
        if (g.OutsideBaton)
            throw new InvalidOperationException($"Internal error: {g} released the baton again from inside a released call.");
        var previousOwner = self.Owner;
        self.Owner = g;
        g.Carrier = self;
        g.OutsideBaton = true;
        var interrupt = alertable ? new ReleasedInterrupt(Thread.CurrentThread, forKills: interruptible) : null;
        g.ReleasedInterrupt = interrupt;
        _pendingExternal++;
        _inScheduler = true;
        t_current = null;
        t_released = this;
        if (toIdler) HandBackToIdler();
        else HandBaton(runner!);
        // No baton from here to ParkUntilOwnerResumes: nothing below may touch the hub's state.

        TResult result = default!;
        ExceptionDispatchInfo? failure = null;
        ReleasedInterrupt.OfThisThread = interrupt; // for the call to tell a thread's interrupt from a kill's (Parking.ReleasedCallMetThreadInterrupt)
        try
        {
            result = call(state);
        }
        catch (Exception e)
        {
            failure = ExceptionDispatchInfo.Capture(e);
        }
        ReleasedInterrupt.OfThisThread = null;
        bool interrupted = false;
        if (interrupt != null)
        {
            var error = failure?.SourceException;
            interrupted = interrupt.Finish(ref error);
            if (error is null) failure = null;
        }
        // A lock's released wait returns owning the lock, and every other thread that wants it waits until this greenlet
        // runs and releases it: it goes ahead of the ready queue, or a convoy of such holders forms.
        if (reason == WaitReason.Lock) Interlocked.Increment(ref _lockHoldersQueued); // counted from here: a return still in the inbox counts
        t_released = null;
        t_current = this; // a thread of the hub again, though without the baton until below (Hub.CanBlockHere)
        ReturningFromReleasedCallForTesting?.Invoke();
        // Through the inbox: this thread is not the baton holder. When the hub idles, its baton is taken here and this
        // thread runs the scheduler step that the idle carrier would have woken for (Hub.IdleLending.cs): it drains the
        // return and resumes g, on this very thread unless something goes first.
        if (PostReturnTakingIdleBaton(RunItem.ForCallback(s_returnFromBlocking, g)))
        {
            if (!ScheduleOnGreenletsThread(self))
                throw new InvalidOperationException($"Internal error: the carrier of {g} left the scheduler without its greenlet resumed.");
        }
        else
        {
            ParkUntilOwnerResumes(self, self, spin: false);
        }

        // The baton is back (step 5).
        _pendingExternal--;
        if (reason == WaitReason.Lock) Interlocked.Decrement(ref _lockHoldersQueued);
        g.ReleasedInterrupt = null;
        self.Owner = previousOwner;
        if (previousOwner != g) g.Carrier = null;
        g.WaitReason = WaitReason.None;
        g.ResumeValue = null;
        g.ResumeError = null;
        EndStep(g);
        // The interrupt of the greenlet's thread, handed to the call, that the call did not end with: it had returned by
        // itself as the interrupt came (Finish consumed it on the carrier), or caught it to wait on (a lock enter of
        // CoreLib's: CooperativeMonitor). On a thread it stays pending for the
        // next wait, or comes out of the enter; here it had nowhere else to be kept and was lost. Pending again, one-shot,
        // for the greenlet's next interruptible wait (Hub.Interrupts.cs).
        if (interrupt is { ForThreadInterrupt: true } && !interrupted && owner.State != GreenletState.Dead) owner.InterruptPending = true;
        LowLevel.KillLinkedSource.CancelQueued(owner); // a kill or timeout came meanwhile: before unwinding (KillLinkedSource.cs)
        if (failure != null)
        {
            owner.Raising(failure.SourceException);
            failure.Throw();
        }
        // Inside a native callback nothing is raised: it stays pending for the first blocking point after the native call
        // (Hub.Parking.cs); the walk that tells is paid only when something is pending.
        if (raisePending && !keepResult && owner.ShieldDepth == 0 && (owner.PendingException != null || g.PendingException != null)
            && !HeldInForeignCall(owner))
        {
            if (g != owner && g.PendingException is { } killed) throw owner.Raising(killed); // the step was failed for the greenlet
            if (owner.PendingException is { } pending)
            {
                if (owner.State != GreenletState.Dead) owner.PendingException = null;
                throw owner.Raising(pending);
            }
        }
        if (interrupted)
        {
            // The call has no result to return; what interrupted it is raised, though a cancelled timeout took it back
            // from the pending exception or a shield holds that back (ReleasedInterrupt.cs).
            var interruptedBy = interrupt!.Reason!;
            if (ReferenceEquals(owner.PendingException, interruptedBy) && owner.State != GreenletState.Dead) owner.PendingException = null;
            throw owner.Raising(interruptedBy);
        }
        return result;
    }

    /// <summary>
    /// The carrier to hand the baton to for a released call of the greenlet on <paramref name="self"/>: a free pooled
    /// one given this hub as its job, or at the cap, for a call that asks for it, a parked greenlet's carrier marked as a
    /// stand-in. Null when the kernel refused a new thread and no stand-in may take over.
    /// </summary>
    private Carrier? ReleasedCallRunner(Carrier self, bool standIn)
    {
        Carrier? runner = null;
        if (_carriersInUse < MaxCarriers)
        {
            // Scheduler code (Invariant 2): the pool's own lock, if contended, must be waited for as the original
            // wait, not released around again (that recursed until the stack ran out).
            _inScheduler = true;
            runner = TryRentCarrier();
            _inScheduler = false;
            if (runner != null)
            {
                runner.Job = this;
                return runner;
            }
        }
        if (standIn) runner = ParkedCarrier(self);
        if (runner != null) runner.StandIn = true;
        else if (_carriersRefusedAt < 0)
            throw new InvalidOperationException($"Internal error: {_current} released the baton of {this} with no carrier left to run it.");
        return runner;
    }

    private static readonly Action<object?> s_returnFromBlocking = static state =>
    {
        var g = (Greenlet)state!;
        g.OutsideBaton = false;
        // Still parked for the reason its released call gave: a lock's return goes first (see RunReleased).
        if (!g.Hub.TryWake(new WakeToken(g, g.ParkSequence), first: g.WaitReason == WaitReason.Lock))
            throw new InvalidOperationException($"Internal error: {g} returned from a blocking call but was no longer parked (every park has exactly one wake).");
    };

    /// <summary>Parking.KeepPending: the exception a released call's return raised becomes the current greenlet's pending
    /// one again (a newer one, already pending, wins). Hub-only.</summary>
    internal void KeepPending(Exception exception)
    {
        var g = _current;
        if (g == HubGreenlet)
            throw new InvalidOperationException("Parking.KeepPending is for greenlet code, not hub callbacks.");
        if (g.State != GreenletState.Dead) g.PendingException ??= exception;
    }

    /// <summary>The message for Green calls made on a thread that has released its hub's baton.</summary>
    private static InvalidOperationException ReleasedThreadMisuse(Hub hub) =>
        new($"This code runs inside Green.RunBlocking (or a lock wait) with the baton of {hub} released: it runs concurrently with that hub's greenlets and cannot use greenlet operations (Spawn, Sleep, Join, waits on primitives). Do greenlet work before or after the blocking call.");
}
