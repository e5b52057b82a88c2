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
            if (g.State != GreenletState.Dead) g.PendingException = null;
            LowLevel.KillLinkedSource.CancelQueued(g); // before unwinding
            throw g.Raising(pending);
        }
        // Level-triggered cancellation: a killed greenlet, or one inside an expired GreenTimeout scope, cannot block.
        if ((g.KillException != null || g.ExpiredTimeouts > 0) && g.StickyException() is { } sticky)
        {
            // Cleanup that the raised exception runs as it unwinds (a Dispose in a finally) waits, as on a thread.
            if (!g.IsStackless && ReferenceEquals(g.LastRaised, sticky) && UnwindingCleanup.RunsIn(sticky, g.LastRaisedAt)) return;
            // A loop that swallows what is raised here and blocks again (a driver's exception wraps the kill, and the
            // retry loop catches that) comes back at once, again and again, without ever parking: it gives way when
            // the blocking monitor asks, as a loop of calls that never wait does (GiveWay), or the hub stops for as
            // long as the loop lasts.
            if (!g.IsStackless) GiveWay();
            LowLevel.KillLinkedSource.CancelQueued(g);
            throw g.Raising(sticky);
        }
        if (interruptible && g.InterruptPending)
        {
            g.InterruptPending = false;
            throw new ThreadInterruptedException();
        }
    }

    /// <summary>Undoes <see cref="BeginPark"/> when registering the wakers failed.</summary>
    internal void CancelPark(in WakeToken token)
    {
        var g = token.Greenlet;
        if (token.IsCurrent || g.State == GreenletState.Ready)
        {
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
        // The scheduler runs on this thread meanwhile: without the greenlet's synchronization context (AmbientContext.cs, step 3).
        var sync = SynchronizationContext.Current;
        if (sync != null) SynchronizationContext.SetSynchronizationContext(null);
        Schedule(self);
        if (sync != null) SynchronizationContext.SetSynchronizationContext(sync);
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
        if (g.ShieldDepth == 0 && g.PendingException is { } pending)
        {
            if (g.State != GreenletState.Dead) g.PendingException = null;
            error = pending;
        }
        if (error != null)
        {
            LowLevel.KillLinkedSource.CancelQueued(g); // before unwinding
            throw g.Raising(error);
        }
        return value;
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
            return false;
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
        if (_callbackDepth > 0)
            throw new InvalidOperationException("Link callbacks, timer callbacks and Hub.Post actions run on the hub and must not block (no Sleep, Join, Wait or blocking I/O there). Spawn a greenlet from the callback to do blocking work.");
        if (_inScheduler)
            throw new InvalidOperationException($"Internal error: the scheduler of {this} tried to park (Invariant 2: scheduler code never blocks; a BCL method it calls must not be made cooperative there).");
        if (_closed)
            throw new ObjectDisposedException(ToString(), "The hub has been disposed.");
    }
}
