
namespace GreenRuntime.Cooperative;

/// <summary>Thread.Sleep and Thread.Yield on a greenlet: a hub timer and a yield instead of an OS sleep.</summary>
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
        return Parking.Yield();
    }

    private static void SleepOnHub(Hub hub, int milliseconds)
    {
        if (milliseconds == Timeout.Infinite)
        {
            // Thread.Sleep(Infinite) never returns; on a greenlet only a kill ends it.
            Parking.ParkForever(WaitReason.Sleep);
            return;
        }
        Green.Sleep(TimeSpan.FromMilliseconds(milliseconds));
    }
}
