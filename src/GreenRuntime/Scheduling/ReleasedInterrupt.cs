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
//
// The wait for Delivered must itself be ready to meet the interrupt: Interrupt() makes it pending before it
// returns, and a spin that backs off with Thread.Sleep(0) (SpinWait does) throws it right there. Escaping
// Finish, that exception left RunReleased between giving the baton away and parking for it, so the greenlet went
// on running without the baton (a kill racing a Monitor.Wait that returned by itself, on a loaded machine).
// Finish therefore catches it while it waits and counts the interrupt as consumed.
//
// A wait that was interrupted has no outcome of its own: its result is not a result. The exception that asked for the
// interrupt (Reason) is therefore kept here and raised by RunReleased even when the greenlet's pending exception is
// gone by the time the baton is back — a GreenTimeout cancelled meanwhile withdraws it, a shield holds it back —
// exactly as a park woken with an exception raises it whatever happens to the timeout afterwards. Returning the
// wait's default instead told the caller that an Infinite wait had timed out, or that WaitAny had acquired handle 0.

namespace GreenRuntime.Scheduling;

/// <summary>The interrupt handshake of one released, interruptible wait (see the comment at the top of this file).</summary>
/// <param name="carrierThread">The thread that waits.</param>
/// <param name="interrupt">How the interrupt is delivered: <see cref="Thread.Interrupt"/> (tests slow it down to hold the
/// handshake in state Requested).</param>
/// <param name="forKills">Whether a kill or timeout interrupts the wait; when false, only the interrupt of the greenlet's
/// thread that someone asked for does (Hub.Interrupts.cs): a wait that a thread's interrupt ends, whose interrupted form
/// a kill must not rely on (SemaphoreSlim's, see CooperativeThreading).</param>
internal sealed class ReleasedInterrupt(Thread carrierThread, Action<Thread>? interrupt = null, bool forKills = true)
{
    /// <summary>See the constructor's <c>forKills</c>.</summary>
    public bool ForKills => forKills;

    private const int Waiting = 0, Returned = 1, Requested = 2, Delivered = 3;

    private int _state;

    /// <summary>The kill or timeout that interrupted the wait (set on the hub; read once the baton is back).</summary>
    public Exception? Reason { get; private set; }

    /// <summary>Whether what was requested is the interrupt of the greenlet's thread (Hub.Interrupts.cs), not a kill or
    /// timeout: unlike those, it has nowhere else to stay pending, so one the wait did not end with is made the greenlet's
    /// pending interrupt again once the baton is back (Hub.Blocking.cs). Set on the hub; read once the baton is back.</summary>
    public bool ForThreadInterrupt { get; private set; }

    /// <summary>Hub side, on the baton holder: interrupts the wait if it has not returned yet. Never blocks.</summary>
    /// <param name="reason">The kill or timeout the interrupt stands for (or the interrupt of the greenlet's thread that
    /// someone asked for: Hub.Interrupts.cs).</param>
    /// <param name="threadInterrupt">It is the interrupt of the greenlet's thread (see <see cref="ForThreadInterrupt"/>).</param>
    /// <returns>False when the wait has returned already, or was interrupted before.</returns>
    public bool Request(Exception reason, bool threadInterrupt = false)
    {
        if (Interlocked.CompareExchange(ref _state, Requested, Waiting) != Waiting)
            return false;
        Reason = reason;
        ForThreadInterrupt = threadInterrupt;
        t_delivering = true; // the real interrupt, not one for a greenlet (Hub.Interrupts.cs)
        try
        {
            if (interrupt is null) carrierThread.Interrupt();
            else interrupt(carrierThread);
        }
        finally
        {
            t_delivering = false;
        }
        Volatile.Write(ref _state, Delivered);
        return true;
    }

    [ThreadStatic] private static bool t_delivering;

    /// <summary>The handshake of the released call the calling thread runs now (Hub.Blocking.cs sets it around the call),
    /// or null.</summary>
    internal static ReleasedInterrupt? OfThisThread
    {
        get => t_ofThisThread;
        set => t_ofThisThread = value;
    }

    [ThreadStatic] private static ReleasedInterrupt? t_ofThisThread;

    /// <summary>Whether the calling thread is inside <see cref="Request"/>: its <see cref="Thread.Interrupt"/> is this
    /// handshake's, for the carrier's own thread, even where Thread.Interrupt is patched to reach greenlets instead.</summary>
    public static bool Delivering => t_delivering;

    /// <summary>
    /// Carrier side, right after the wait returned or threw (no baton): leaves no interrupt pending on this
    /// thread and drops <paramref name="failure"/> if it is the interrupt this handshake delivered.
    /// </summary>
    /// <returns>True when the wait itself was interrupted (the dropped failure): it has no outcome, and the caller must
    /// raise <see cref="Reason"/>. False when it returned or failed by itself.</returns>
    public bool Finish(ref Exception? failure)
    {
        if (Interlocked.CompareExchange(ref _state, Returned, Waiting) == Waiting)
            return false;
        bool interrupted = failure is ThreadInterruptedException;
        if (interrupted) failure = null;
        bool consumed = interrupted;
        var spin = new SpinWait();
        while (Volatile.Read(ref _state) != Delivered)
        {
            // Request is inside Interrupt(): usually a few instructions away, longer when its thread is preempted.
            try
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
            catch (ThreadInterruptedException)
            {
                consumed = true; // ours, landed while we waited (see the top of this file)
            }
        }
        if (consumed) return interrupted;
        try
        {
            // The interrupt landed after the wait had returned: still pending on this thread. Consume it (this
            // thread has no hub now, so a patched Sleep runs the original).
            Thread.Sleep(0);
        }
        catch (ThreadInterruptedException)
        {
        }
        return false;
    }
}
