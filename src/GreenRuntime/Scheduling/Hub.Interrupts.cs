// Thread.Interrupt of a greenlet's thread: the old way of cancelling a worker (keep its Thread, call Interrupt from
// elsewhere) keeps its meaning when the worker is a greenlet.
//
// A stackful greenlet's Thread is its carrier. A patched wait parks the greenlet instead of waiting in the OS, so the
// runtime's interrupt of that thread has nothing to wake: the wait ran its full length, and the interrupt stayed
// pending on the carrier until its next real wait — in whichever greenlet the carrier ran next, or in the pool's own
// lock as the carrier went back to it, where the exception ended the process. So the interrupt of a carrier that keeps
// a greenlet is the greenlet's (Parking.InterruptGreenletOf, which patched Thread.Interrupt calls), and the runtime
// never interrupts that thread for it except through a released wait's handshake (ReleasedInterrupt.cs):
//   - parked in an interruptible wait (BeginPark at a cancellation point, for a wait a thread's interrupt ends: a
//     sleep, a join, a task, an event, a queue, a lock, a thread primitive): woken with ThreadInterruptedException;
//   - in an interruptible released wait (Monitor.Wait, a WaitHandle's, Thread.Join): the handshake interrupts it, and
//     the exception comes out of the wait as on a thread; where the wait does not end with it (it returned by itself
//     as the interrupt came, or it is a lock enter of CoreLib's, which waits on: CooperativeMonitor), it is pending
//     again once the baton is back (Hub.Blocking.cs). An enter whose caller catches the exception gets it, as on a
//     thread: unlike a kill's, it is what that handler is written for (Parking.ReleasedCallMetThreadInterrupt);
//   - otherwise (running, ready, parked in a socket, file or DNS call, which a thread's interrupt does not end either,
//     or in a released call that is no wait): pending, one-shot, and thrown by its next interruptible wait.
// Kills and timeouts go first. A shield holds the interrupt back, as it holds kills: the code it protects expects no
// exception from its waits. A carrier that keeps no greenlet is a thread of the pool's: the greenlet the caller knew
// has ended, and the interrupt is dropped, as for a thread that has exited.

using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    /// <summary>Whether a thread's interrupt ends a wait of this kind (on a thread, an alertable wait in the runtime).</summary>
    private static bool IsInterruptible(WaitReason reason) =>
        reason is WaitReason.Sleep or WaitReason.Join or WaitReason.Task or WaitReason.Event or WaitReason.Queue or WaitReason.Lock or WaitReason.Thread;

    /// <summary>Delivers the interrupt of <paramref name="g"/>'s thread to it (see the top of this file). Hub-only.</summary>
    internal void InterruptGreenlet(Greenlet g)
    {
        AssertOnHub();
        if (g.State == GreenletState.Dead || g.IsStackless) return;
        if (g.ShieldDepth == 0)
        {
            if (g.State == GreenletState.Parked && !g.OutsideBaton && g.ParkInterruptible
                && TryWakeCancelling(g, new ThreadInterruptedException(), CancellationWake.Interrupt))
                return;
            if (g.OutsideBaton && g.ReleasedInterrupt is { } released && released.Request(new ThreadInterruptedException(), threadInterrupt: true))
                return;
        }
        g.InterruptPending = true;
    }

    /// <summary>See <see cref="LowLevel.Parking.InterruptGreenletOf"/>.</summary>
    internal static bool InterruptGreenletOf(Thread thread)
    {
        if (ReleasedInterrupt.Delivering || Carrier.Of(thread) is not { } carrier) return false;
        var g = carrier.Owner; // read once: written by the baton holder, checked again on the hub
        if (g is null) return carrier.IsPooled; // a pooled carrier between greenlets: the one the caller knew has ended
        if (g.IsStackless) return false;
        var hub = g.Hub;
        if (hub.IsOnHubThread)
        {
            hub.InterruptGreenlet(g);
            return true;
        }
        try
        {
            hub.PostAction(() => hub.InterruptGreenlet(g));
        }
        catch (ObjectDisposedException)
        {
            return false; // the hub has ended: its thread is a plain thread again
        }
        return true;
    }
}
