namespace GreenRuntime.Cooperative;

// Thread.Interrupt of a greenlet's thread: the greenlet's (LowLevel/Parking.Interrupts.cs).
internal static partial class CooperativeThreading
{
    internal static readonly OriginalSlot<Action<Thread>> InterruptSlot = new(static t => t.Interrupt());

    /// <summary>Replaces <see cref="Thread.Interrupt"/>. Legacy code cancels a worker by interrupting the thread it kept; a
    /// greenlet's thread is its carrier, and a patched wait parks the greenlet rather than waiting on that thread, so the
    /// runtime's interrupt reached no wait: a <c>Thread.Sleep(2000)</c> ran its 2 s, and the interrupt stayed pending on the
    /// carrier, thrown by the next real wait made there — by another greenlet (50 of 50 rounds), or by the carrier pool's
    /// lock as the carrier went back to it, which ended the process. Now it is the greenlet's: its interruptible waits throw
    /// <see cref="ThreadInterruptedException"/> at once, whether they park or wait on the thread. Any other thread is
    /// interrupted by the original.</summary>
    public static void Interrupt(Thread thread)
    {
        if (!Parking.InterruptGreenletOf(thread)) InterruptSlot.Call(thread);
    }
}
