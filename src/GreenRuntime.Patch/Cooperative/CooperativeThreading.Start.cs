using System.Runtime.CompilerServices;

namespace GreenRuntime.Cooperative;

// Thread.Start on a greenlet: the original with the hub's baton released.
internal static partial class CooperativeThreading
{
    internal static readonly OriginalSlot<Action<Thread>> StartCoreSlot = new(static t => CallStartCore(t));

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "StartCore")]
    private static extern void CallStartCore(Thread thread);

    private static readonly Func<Thread, bool> s_startReleased = static t =>
    {
        StartCoreSlot.Call(t);
        return true;
    };

    /// <summary>Replaces <c>Thread.StartCore</c> (private: every <c>Start</c> and <c>UnsafeStart</c> ends there). The
    /// runtime creates the thread and waits until it runs, 0.2–0.4 ms, with the hub stopped when a greenlet starts it: a
    /// client library that starts a thread per subscription (NATS.Client) stopped a 5 ms ticker for 68–160 ms over 200
    /// starts. Run with the baton released on the greenlet's own thread, so the caller's execution context and the
    /// original's exceptions (a thread started twice) are as on a thread. No cancellation point: a thread's interrupt does
    /// not stop a start either. A start CoreLib makes itself keeps the baton: the thread pool starts a wait thread
    /// holding its wait-thread lock, a <c>LowLevelLock</c> that greenlets wait for with the baton held, so the next
    /// greenlet to register a wait took the baton and waited for a lock whose holder waited for the baton (SSH.NET's SFTP
    /// transfers, a registered wait per request, hung the process). CoreLib's starts are rare (the pool's own threads, a
    /// long-running task's), and the stack walk that tells them costs far less than a start.</summary>
    public static void StartCore(Thread thread)
    {
        if (Cooperative.ParkingHub() is null || !Parking.CanReleaseBaton || Cooperative.CalledByCoreLib(typeof(Thread)))
            StartCoreSlot.Call(thread);
        else
            Parking.RunReleased(s_startReleased, thread, WaitReason.Blocking, cancellationPoint: false);
    }
}
