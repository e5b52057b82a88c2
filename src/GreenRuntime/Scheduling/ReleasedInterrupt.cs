// Interrupting a released wait: how a kill or timeout reaches a greenlet whose carrier waits in Monitor.Wait
// with the baton released (Hub.Blocking.cs), instead of waiting for a pulse that may be seconds away.
//
// The carrier's thread is woken with Thread.Interrupt, which makes Monitor.Wait throw ThreadInterruptedException
// after it has re-acquired the monitor — the state the caller's lock block expects, so its finally exits the
// monitor as usual. The greenlet then raises its pending kill or timeout instead of that exception.
//
// Thread.Interrupt is sticky: if it lands when the thread is not in an alertable wait (the wait returned on its
// own just before), it stays pending and would break the thread's next wait — inside the runtime's own parking.
// So both sides go through one state word:
//   Waiting  --(hub: kill/timeout)-->  Requested --(hub: Interrupt() returned)--> Delivered
//   Waiting  --(carrier: call returned)--> Returned        (no interrupt will come)
// A carrier that finds Requested waits for Delivered, then either got the ThreadInterruptedException from the
// wait (it is ours: dropped, the pending exception is raised instead) or consumes the still-pending interrupt
// with Thread.Sleep(0), which throws it at once. A ThreadInterruptedException seen in state Returned was not
// ours and propagates unchanged.

namespace GreenRuntime.Scheduling;

/// <summary>The interrupt handshake of one released, interruptible wait (see the comment at the top of this file).</summary>
internal sealed class ReleasedInterrupt(Thread carrierThread)
{
    private const int Waiting = 0, Returned = 1, Requested = 2, Delivered = 3;

    private int _state;

    /// <summary>Hub side, on the baton holder: interrupts the wait if it has not returned yet. Never blocks.</summary>
    public void Request()
    {
        if (Interlocked.CompareExchange(ref _state, Requested, Waiting) != Waiting)
            return;
        carrierThread.Interrupt();
        Volatile.Write(ref _state, Delivered);
    }

    /// <summary>
    /// Carrier side, right after the wait returned or threw (no baton): leaves no interrupt pending on this
    /// thread and drops <paramref name="failure"/> if it is the interrupt this handshake delivered.
    /// </summary>
    public void Finish(ref Exception? failure)
    {
        if (Interlocked.CompareExchange(ref _state, Returned, Waiting) == Waiting)
            return;
        var spin = new SpinWait();
        while (Volatile.Read(ref _state) != Delivered)
            spin.SpinOnce(sleep1Threshold: -1); // Request is between its two writes: a few instructions away
        if (failure is ThreadInterruptedException)
        {
            failure = null;
            return;
        }
        try
        {
            // The interrupt landed after the wait had returned: still pending on this thread. Consume it (this
            // thread has no hub now, so a patched Sleep runs the original).
            Thread.Sleep(0);
        }
        catch (ThreadInterruptedException)
        {
        }
    }
}
