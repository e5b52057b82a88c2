namespace GreenRuntime.Scheduling;

/// <summary>Starts the runtime's own threads (carriers, the pool's refill, blocking monitors, the cancellation thread, a
/// disposed hub's driver) with the original <see cref="Thread.UnsafeStart()"/>, never a cooperative one.</summary>
/// <remarks>Under <c>Patch.All()</c> a thread started on a greenlet starts with the hub's baton released (the runtime
/// creates the thread and waits until it runs). The runtime starts some of its threads where that cannot be done: a
/// disposed hub's thread has just given the baton away but is still bound to the hub (DriveSurvivorsInBackground in
/// Hub.cs: released there, the start parked that hub's scheduler), a hub under construction, the carrier pool, which a
/// released start itself needs.</remarks>
internal static class RuntimeThread
{
    public static void Start(Thread thread)
    {
        using (LowLevel.Parking.SuppressCooperation())
            thread.UnsafeStart();
    }
}
