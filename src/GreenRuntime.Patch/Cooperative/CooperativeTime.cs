
namespace GreenRuntime.Cooperative;

/// <summary>Thread.Sleep and Thread.Yield on a greenlet: a hub timer and a yield instead of an OS sleep. The shortest
/// of them (0 and 1 ms, and Yield) are no cancellation points when CoreLib's spin loops call them.</summary>
internal static class CooperativeTime
{
    internal static readonly OriginalSlot<Action<int>> SleepInt = new(static ms => Thread.Sleep(ms));
    internal static readonly OriginalSlot<Action<TimeSpan>> SleepTimeSpan = new(static t => Thread.Sleep(t));
    internal static readonly OriginalSlot<Func<bool>> YieldSlot = new(static () => Thread.Yield());

    /// <summary>Replaces <see cref="Thread.Sleep(int)"/>: <c>Sleep(0)</c> yields, <c>Sleep(-1)</c> parks until killed.</summary>
    public static void Sleep(int millisecondsTimeout)
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null || millisecondsTimeout < -1)
        {
            SleepInt.Call(millisecondsTimeout); // also throws the original's ArgumentOutOfRangeException
            return;
        }
        SleepOnHub(hub, millisecondsTimeout);
    }

    /// <summary>Replaces <see cref="Thread.Sleep(TimeSpan)"/>.</summary>
    public static void Sleep(TimeSpan timeout)
    {
        var hub = Cooperative.ParkingHub();
        double ms = timeout.TotalMilliseconds;
        if (hub is null || ms < -1 || ms > int.MaxValue)
        {
            SleepTimeSpan.Call(timeout);
            return;
        }
        SleepOnHub(hub, (int)ms);
    }

    /// <summary>Replaces <see cref="Thread.Yield"/>: lets the other ready greenlets run once.</summary>
    /// <returns>Whether another greenlet was ready to run (the original reports whether another thread ran).</returns>
    public static bool Yield()
    {
        var hub = Cooperative.ParkingHub();
        if (hub is null) return YieldSlot.Call();
        bool others;
        using (Green.Shield())
            others = Parking.Yield();
        RaiseUnlessBackingOff(interruptible: false); // a thread's Yield is no wait: its interrupt waits for the next one
        return others;
    }

    private static void SleepOnHub(Hub hub, int milliseconds)
    {
        if (milliseconds == Timeout.Infinite)
        {
            // Thread.Sleep(Infinite) never returns; on a greenlet only a kill ends it.
            Parking.ParkForever(WaitReason.Sleep);
            return;
        }
        if (milliseconds > 1)
        {
            Green.Sleep(TimeSpan.FromMilliseconds(milliseconds));
            return;
        }
        using (Green.Shield())
            Green.Sleep(TimeSpan.FromMilliseconds(milliseconds));
        RaiseUnlessBackingOff(interruptible: true);
    }

    // Thread.Sleep(0), Thread.Sleep(1) and Thread.Yield are how CoreLib's spin loops back off (SpinWait, and so
    // SpinLock, SemaphoreSlim's and ManualResetEventSlim's spins; ReaderWriterLockSlim's internal lock), often in the
    // middle of bookkeeping that no exception is expected from: on a thread only Thread.Interrupt could throw there.
    // A kill raised in one (a kill is raised again at every cancellation point, docs/core.md) left a
    // ReaderWriterLockSlim's read lock held and its counters corrupted for good, so such a short wait parks shielded,
    // and afterwards raises a pending kill or timeout only when other code called it: a polling loop of Sleep(1) stays
    // killable, a back-off inside CoreLib raises at the greenlet's next blocking call instead. A SpinWait counts as its
    // caller's: SpinLock's spins are CoreLib's, SpinWait.SpinUntil in user code or NamedPipeClientStream.Connect's wait
    // for its pipe are polling loops (a kill or timeout of either was ignored until the condition came true). The stack
    // is looked at only when something is pending. The interrupt of the greenlet's thread (Parking.InterruptGreenletOf)
    // follows the same rule: a thread's short sleep throws it, CoreLib's back-off leaves it for the next wait.
    private static void RaiseUnlessBackingOff(bool interruptible)
    {
        bool interrupted = interruptible && Parking.InterruptPending;
        if ((Parking.CancellationPending || interrupted) && !Cooperative.CalledByCoreLib(typeof(Thread)))
        {
            Parking.Yield(); // a cancellation point: raises what is pending
            if (interrupted) Parking.ThrowIfInterrupted();
        }
    }
}
