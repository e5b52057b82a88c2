namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>
    /// <see cref="Thread.Interrupt"/> for a thread that may be a greenlet's: when <paramref name="thread"/> is the carrier of a
    /// stackful greenlet, the interrupt goes to that greenlet, whose next interruptible wait (a sleep, a join, a wait for a
    /// task, an event, a lock or a thread primitive, the one it is parked in now included) throws
    /// <see cref="ThreadInterruptedException"/>, as its thread's would; socket, file and DNS calls are not interrupted, as on a
    /// thread. A pooled carrier that keeps no greenlet now is left alone (the greenlet whose thread it was has ended, as a
    /// thread that has exited). Any thread.
    /// </summary>
    /// <returns>True when the interrupt was taken care of; false when <paramref name="thread"/> is no greenlet's, and the
    /// caller must interrupt it as a thread (<see cref="Thread.Interrupt"/>'s own code).</returns>
    /// <remarks>Without this, a patched wait that parks its greenlet left the thread's interrupt pending on the carrier,
    /// where it hit the next greenlet that carrier ran, or the runtime's own code.</remarks>
    public static bool InterruptGreenletOf(Thread thread)
    {
        ArgumentNullException.ThrowIfNull(thread);
        return Hub.InterruptGreenletOf(thread);
    }

    /// <summary>Whether the current greenlet's thread has been interrupted (<see cref="InterruptGreenletOf"/>) and no wait has
    /// thrown it yet. False off a greenlet. Any thread.</summary>
    public static bool InterruptPending =>
        Hub.CurrentOrNull is { IsOnHubThread: true } hub && hub.CurrentGreenlet is var g && g != hub.HubGreenlet && g.InterruptPending;

    /// <summary>
    /// Inside a call that <see cref="RunReleased"/> runs, on its thread, once the call has met a
    /// <see cref="ThreadInterruptedException"/>: whether it is the interrupt of the greenlet's thread that someone asked for
    /// (<see cref="InterruptGreenletOf"/>, which patched <see cref="Thread.Interrupt"/> calls), rather than the one that
    /// stands for a kill or timeout (which <see cref="RunReleased"/> raises in its place). Code around the wait that catches
    /// <see cref="ThreadInterruptedException"/> is written for the first, as on a thread, and may be let have it; a kill
    /// is no exception it catches. False elsewhere.
    /// </summary>
    public static bool ReleasedCallMetThreadInterrupt => Scheduling.ReleasedInterrupt.OfThisThread is { ForThreadInterrupt: true };

    /// <summary>Throws the <see cref="ThreadInterruptedException"/> pending for the current greenlet's thread, if any, as an
    /// interruptible wait would; for a wait that does not park (a patched call that returns at once) and does not go
    /// through <see cref="BeginPark"/>. Nothing while a shield is open, nor inside a callback from native code (it
    /// stays pending, as a kill does there).</summary>
    public static void ThrowIfInterrupted()
    {
        if (Hub.CurrentOrNull is not { IsOnHubThread: true } hub) return;
        if (hub.CurrentGreenlet is var g && g != hub.HubGreenlet) hub.RaiseInterrupt(g);
    }
}
