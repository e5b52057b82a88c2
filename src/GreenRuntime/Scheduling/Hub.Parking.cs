// Parking: how a greenlet gives up the baton and how exactly one waker gets it back.
//
// A blocking operation on a greenlet is always the same three steps, all on the hub:
//   1. token = BeginPark(reason)  — the greenlet is marked Parked with a fresh sequence number.
//   2. register wakers            — hand the token to whatever will end the wait: a timer, an event's waiter
//                                   list, a task continuation (PostWake from any thread), Kill.
//   3. EndPark(token)             — run the scheduler until the greenlet is resumed, then return the value
//                                   the winning waker passed, or throw the exception it passed.
// Every park has exactly one wake: TryWake succeeds only for the current token of a Parked greenlet, so a
// timeout racing an event, or a kill racing a completion, is decided by whichever comes first, and the
// losers are told (false) so they can clean up. Code between steps 1 and 3 must not block; if it throws,
// it calls CancelPark.
//
// Cancellation inside a native callback. Code that a native library called back (a comparer given to qsort, a progress
// callback of LibGit2Sharp) is no cancellation point of a stackful greenlet (ForeignCalls.cs): an exception leaving it
// would unwind through the library's frames, and the runtime ends the process. Kills, timeouts and a thread's interrupt
// stay pending there and are raised at the first blocking point after the native call has returned. Parking inside the
// callback stays allowed. The check costs a walk of the thread's Frame chain, paid only where something would be raised:
//   - RaisePending (BeginPark, RunReleased's return) leaves it pending;
//   - a park that a kill, timeout or interrupt woke (CancellationWoke, set only by those wakes) resumes, keeps it
//     pending and parks again with the same token, so the park's own wakers (its timer, its waiter, its task) still
//     end it. One that came while the greenlet was ready with the cancellation and was refused (TryWake's false) is
//     kept (RefuseWake) and taken instead of parking again; a primitive's waiter is not dropped meanwhile
//     (Waiter.AwaitsVerdict);
//   - a Task-form wait (Blocking.TakePendingException) does not fault its task.

using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>Step 1: marks the current greenlet parked. Throws an exception pending for it (kill, timeout) instead,
    /// unless <paramref name="raise"/> is false (a wait that is not a cancellation point: a lock being entered).</summary>
    internal WakeToken BeginPark(WaitReason reason, bool raise = true)
    {
        AssertMayBlock();
        var g = _current;
        bool interruptible = raise && IsInterruptible(reason);
        if (raise) RaisePending(g, interruptible);
        // A stackless greenlet's steps may block at once: each parks an identity of its own (Hub.Steps.cs). Switch is
        // the exception: whoever switches back resumes the greenlet that switched away.
        if (g.IsStackless && reason != WaitReason.Switch) g = BeginStep(g);
        // One park at a time: a second BeginPark before the first one's EndPark (code between the steps that blocked)
        // would overwrite the first park's token, and its waker would never resume anyone.
        Debug.Assert(g.State is not (GreenletState.Parked or GreenletState.Ready),
            $"Invariant broken: {g} began a park ({reason}) while its park for {g.WaitReason} had not ended; code between BeginPark and EndPark must not block.");
        g.State = GreenletState.Parked;
        g.WaitReason = reason;
        g.ParkInterruptible = interruptible;
        g.ParkedAt = _time.GetTimestamp();
        _waitCounts[(int)reason]++;
        return new WakeToken(g, ++g.ParkSequence);
    }

    /// <summary>At a cancellation point of <paramref name="g"/>: throws the kill or timeout pending for it, if any, and
    /// at an <paramref name="interruptible"/> one then the interrupt of its thread (Hub.Interrupts.cs).</summary>
    private void RaisePending(Greenlet g, bool interruptible = false)
    {
        if (g.ShieldDepth > 0) return; // a shield holds kills and timeouts back (CancellationShield)
        if (g.PendingException is { } pending)
        {
            if (HeldInForeignCall(g)) return; // raised after the native call returns (see the top of this file)
            if (g.State != GreenletState.Dead) g.PendingException = null;
            LowLevel.KillLinkedSource.CancelQueued(g); // before unwinding
            throw g.Raising(pending);
        }
        // Level-triggered cancellation: a killed greenlet, or one inside an expired GreenTimeout scope, cannot block.
        if ((g.KillException != null || g.ExpiredTimeouts > 0) && g.StickyException() is { } sticky)
        {
            // Cleanup that the raised exception runs as it unwinds (a Dispose in a finally) waits, as on a thread.
            if (!g.IsStackless && ReferenceEquals(g.LastRaised, sticky) && UnwindingCleanup.RunsIn(sticky, g.LastRaisedAt)) return;
            if (HeldInForeignCall(g)) return;
            // A loop that swallows what is raised here and blocks again (a driver's exception wraps the kill, and the
            // retry loop catches that) comes back at once, again and again, without ever parking: it gives way when
            // the blocking monitor asks, as a loop of calls that never wait does (GiveWay), or the hub stops for as
            // long as the loop lasts.
            if (!g.IsStackless) GiveWay();
            LowLevel.KillLinkedSource.CancelQueued(g);
            throw g.Raising(sticky);
        }
        if (interruptible) RaiseInterrupt(g);
    }

    /// <summary>Throws the interrupt of <paramref name="g"/>'s thread that waits for an interruptible wait (Hub.Interrupts.cs),
    /// if any: not under a shield, nor inside a native call's callback, where it stays pending as a kill does.</summary>
    internal void RaiseInterrupt(Greenlet g)
    {
        if (!g.InterruptPending || g.ShieldDepth > 0 || HeldInForeignCall(g)) return;
        g.InterruptPending = false;
        throw new ThreadInterruptedException();
    }

    /// <summary>Undoes <see cref="BeginPark"/> when registering the wakers failed. A waker may already have woken the park
    /// (a registration that woke it, then threw): its resume is withdrawn, so the greenlet runs on with nothing queued for
    /// it (Hub.Order.cs, WithdrawResume).</summary>
    internal void CancelPark(in WakeToken token)
    {
        var g = token.Greenlet;
        g.CancellationWoke = CancellationWake.None;
        if (token.IsCurrent || g.State == GreenletState.Ready)
        {
            if (g.State == GreenletState.Ready) WithdrawResume(g);
            g.ParkSequence++;
            g.State = GreenletState.Running;
            g.WaitReason = WaitReason.None;
            g.ResumeError = null;
            g.ResumeValue = null;
        }
        EndStep(g);
    }

    /// <summary>Step 3: gives the baton away until a waker resumes this park.</summary>
    /// <returns>The value the waker passed.</returns>
    internal object? EndPark(in WakeToken token)
    {
        var g = token.Greenlet;
        if (g != _current)
            throw new InvalidOperationException($"Internal error: {_current} tried to suspend a park of {g}.");
        var self = Carrier.ForCurrentThread();
        var previousOwner = self.Owner;
        self.Owner = g;
        g.Carrier = self;
        _standInEpoch++; // g, parked on its own carrier, may stand in from here (Hub.Blocking.cs)
        ScheduleOnGreenletsThread(self); // the scheduler runs on this thread meanwhile
        // Resumed: Schedule returns only when this greenlet was picked from the ready queue.
        if (_current != g || g.State != GreenletState.Running)
            throw new InvalidOperationException($"Internal error: {g} resumed while {_current} holds the baton (every park has exactly one wake).");
        self.Owner = previousOwner;
        if (previousOwner != g) g.Carrier = null;
        g.WaitReason = WaitReason.None;
        var error = g.ResumeError;
        var value = g.ResumeValue;
        g.ResumeError = null;
        g.ResumeValue = null;
        EndStep(g);
        g = _current; // the stackless greenlet again, after a step's park
        var woke = error;
        if (g.ShieldDepth == 0 && g.PendingException is { } pending)
        {
            if (g.State != GreenletState.Dead) g.PendingException = null;
            error = pending;
        }
        if (error != null)
        {
            if (!ReferenceEquals(error, woke) || g.CancellationWoke != CancellationWake.None)
            {
                // A pending kill or timeout, or a wake by one: inside a native callback it stays pending.
                var wokeBy = g.CancellationWoke;
                g.CancellationWoke = CancellationWake.None;
                if (HeldInForeignCall(g))
                {
                    if (!ReferenceEquals(error, woke) && g.State != GreenletState.Dead) g.PendingException ??= error;
                    if (wokeBy == CancellationWake.None)
                    {
                        // Woken by the park's own end: its value, or its error, is the wait's outcome.
                        if (woke != null) throw g.Raising(woke);
                        return value;
                    }
                    return ParkAgainInForeignCall(g, woke!, wokeBy);
                }
                g.TakeRefusedWake(out _, out _);
            }
            LowLevel.KillLinkedSource.CancelQueued(g); // before unwinding
            throw g.Raising(error);
        }
        return value;
    }

    /// <summary>Whether <paramref name="g"/>, the current greenlet, runs inside a native call's callback, where nothing may be
    /// raised (see the top of this file). A Frame-chain walk: call it only when something would be raised.</summary>
    internal bool HeldInForeignCall(Greenlet g) => !g.IsStackless && g == _current && ForeignCalls.Inside();

    /// <summary>The rest of <see cref="EndPark"/> for a park that a kill, timeout or interrupt (<paramref name="wokeBy"/>)
    /// woke inside a native callback: that stays pending, and the park goes on for its own wakers, or ends with the one
    /// that came meanwhile and was refused.</summary>
    private object? ParkAgainInForeignCall(Greenlet g, Exception cancellation, CancellationWake wokeBy)
    {
        if (wokeBy == CancellationWake.Interrupt) g.InterruptPending = true;
        else if (g.State != GreenletState.Dead) g.PendingException ??= cancellation;
        // The tokens the kill or timeout cancels are cancelled now, as for a thread, though nothing is raised: an
        // operation the callback waits for with one of them (a timeout's Token) ends, and so does this park.
        if (wokeBy != CancellationWake.Interrupt) LowLevel.KillLinkedSource.CancelQueued(g);
        if (g.TakeRefusedWake(out var value, out var error))
        {
            if (error != null) throw g.Raising(error);
            return value;
        }
        // The same token: ParkSequence is not advanced, so the timer, waiter or task continuation that holds it ends
        // this park as it would have ended the first.
        g.State = GreenletState.Parked;
        g.WaitReason = g.HeldWaitReason;
        g.ParkedAt = _time.GetTimestamp();
        return EndPark(new WakeToken(g, g.ParkSequence));
    }

    /// <summary>Wakes the park of the stackful or stackless greenlet <paramref name="g"/> with a kill or timeout (or a
    /// thread's interrupt), noting that this is what woke it (<see cref="Greenlet.CancellationWoke"/>). Hub-only.</summary>
    internal bool TryWakeCancelling(Greenlet g, Exception error, CancellationWake kind = CancellationWake.KillOrTimeout)
    {
        var reason = g.WaitReason;
        if (!TryWake(new WakeToken(g, g.ParkSequence), null, error)) return false;
        if (!g.IsStackless)
        {
            g.CancellationWoke = kind;
            g.HeldWaitReason = reason;
        }
        return true;
    }

    /// <summary>Parks the current greenlet with no waker but <see cref="TryWake"/> by its token (for callers that register first).</summary>
    internal object? Park(WaitReason reason) => EndPark(BeginPark(reason));

    /// <summary>
    /// Resumes the park named by <paramref name="token"/> with a value or an exception to throw in it.
    /// Hub-only. Returns false, doing nothing, if that park already ended.
    /// </summary>
    internal bool TryWake(in WakeToken token, object? value = null, Exception? error = null, bool first = false)
    {
        if (!token.IsCurrent)
        {
            // The park's own end, after a kill or timeout woke it and before the greenlet has seen that: kept, in case
            // the greenlet is inside a native callback and goes on waiting (see the top of this file).
            if (token.AwaitsCancellationVerdict) token.Greenlet.RefuseWake(value, error);
            return false;
        }
        var g = token.Greenlet;
        if (g.OutsideBaton)
        {
            // Its thread is inside a blocking call (Hub.Blocking.cs): a kill or timeout waits for the call's return,
            // which an interruptible wait (Monitor.Wait) is made to do at once (ReleasedInterrupt.cs).
            if (error != null)
            {
                g.PendingException ??= error;
                if (g.ReleasedInterrupt is { ForKills: true } interrupt) interrupt.Request(error);
            }
            return false;
        }
        g.State = GreenletState.Ready;
        g.ResumeValue = value;
        g.ResumeError = error;
        Enqueue(RunItem.ForResume(g), first);
        return true;
    }

    /// <summary><see cref="TryWake"/> from any thread: the wake is queued in the inbox.</summary>
    internal void PostWake(in WakeToken token, object? value = null, Exception? error = null) =>
        PostItem(RunItem.ForWake(token, value, error));

    /// <summary>Puts the current greenlet at the back of the ready queue and parks it.</summary>
    internal void YieldCurrent()
    {
        var token = BeginPark(WaitReason.Yield);
        TryWake(token);
        EndPark(token);
    }

    /// <summary>Throws when the caller may not park: off the hub, or inside a callback.</summary>
    internal void AssertMayBlock()
    {
        AssertOnHub();
        AssertBatonHeld(); // DEBUG: a thread of the hub waiting for the baton is not on it (CanBlockHere)
        if (_callbackDepth > 0)
            throw new InvalidOperationException("Link callbacks, timer callbacks and Hub.Post actions run on the hub and must not block (no Sleep, Join, Wait or blocking I/O there). Spawn a greenlet from the callback to do blocking work.");
        if (_inScheduler)
            throw new InvalidOperationException($"Internal error: the scheduler of {this} tried to park (Invariant 2: scheduler code never blocks; a BCL method it calls must not be made cooperative there).");
        if (_closed)
            throw new ObjectDisposedException(ToString(), "The hub has been disposed.");
    }
}
