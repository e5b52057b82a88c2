using GreenRuntime.Scheduling;

namespace GreenRuntime;

public static partial class Green
{
    /// <summary>
    /// Runs a call that really blocks (a native library's I/O, an unpatched wait) without stopping the hub:
    /// the calling greenlet gives the hub's baton away, runs <paramref name="action"/> on its own thread, and
    /// then queues for the baton again like any woken greenlet. Other greenlets run meanwhile.
    /// </summary>
    /// <remarks>
    /// <para><paramref name="action"/> runs concurrently with the hub's greenlets, on the greenlet's own carrier
    /// thread (thread identity, thread-static state and lock ownership are kept; on a hub pinned to one CPU it runs with
    /// the process's CPU mask meanwhile, so it does not take the hub's CPU). It must not touch state the
    /// greenlets share without synchronisation, and it cannot use greenlet operations (Spawn, Sleep, Join,
    /// waits on primitives: they throw <see cref="InvalidOperationException"/>). Patched BCL methods it calls
    /// run their blocking originals.</para>
    /// <para>A kill or timeout that arrives meanwhile cannot interrupt the call, nor take away what it did: a call that
    /// returned returns its value, and the kill or timeout stays pending, raised at the greenlet's next blocking point,
    /// as a thread's <see cref="Thread.Interrupt"/> during a native call is raised at its next wait. So
    /// <c>using var c = Green.RunBlocking(() => Open());</c> disposes the connection when the kill unwinds from the next
    /// call that blocks. <paramref name="action"/> follows the same rule: it has no value to lose, but it may have stored
    /// what it made (<c>Green.RunBlocking(() => conn = Open())</c>), and one rule for both forms means that choosing one
    /// never moves where a kill lands. One already pending when the call would start (a killed greenlet, an expired
    /// <see cref="GreenTimeout"/>) is raised instead, before anything starts. A call that throws throws its own
    /// exception.</para>
    /// <para>When every carrier the hub may use is taken (<see cref="HubOptions.MaxCarriers"/>), the thread of a parked
    /// greenlet runs the hub meanwhile; with none, the greenlet waits, parked and in arrival order, until a carrier comes
    /// back or one can, and a kill or timeout ends that wait (nothing has started). Only when the kernel refuses a thread
    /// and no parked greenlet's can stand in does the call run with the baton held.</para>
    /// <para>Off a hub, or where the hub cannot be given away (a link or timer callback), the call simply runs.
    /// On a stackless greenlet it runs on the thread pool and is waited for cooperatively: a kill or timeout ends that
    /// wait at once, and what the call returns afterwards is dropped.</para>
    /// </remarks>
    /// <example>
    /// <code>
    /// var bytes = Green.RunBlocking(() => NativeDriver.Read(handle));   // other greenlets keep running
    /// </code>
    /// </example>
    public static void RunBlocking(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        RunBlocking(static a => { a(); return true; }, action);
    }

    /// <summary>Runs <paramref name="func"/> with the hub's baton released and returns its value; see <see cref="RunBlocking(Action)"/>.</summary>
    public static T RunBlocking<T>(Func<T> func)
    {
        ArgumentNullException.ThrowIfNull(func);
        return RunBlocking(static f => f(), func);
    }

    private static TResult RunBlocking<TState, TResult>(Func<TState, TResult> call, TState state)
    {
        var hub = Hub.CurrentOrNull;
        if (hub is null || !hub.MayReleaseHere)
            return call(state);
        if (hub.CurrentGreenlet.IsStackless)
            return Wait(Task.Run(() => call(state)));
        // At the carrier cap: a stand-in, or a cooperative wait for one. Run with the baton held, as it used to be there,
        // the call stopped every greenlet, and for good when it waited for one of them.
        hub.WaitForReleasedCallRunner();
        return hub.RunReleased(static s => OffTheHubsCpu(s.call, s.state), (call, state), WaitReason.Blocking, raisePending: true, standIn: true, keepResult: true);
    }

    /// <summary>The call, on the greenlet's carrier, with the process's CPU mask when the hub is pinned to one CPU: it runs
    /// beside the hub's greenlets, which keep that CPU; the carrier is pinned again before it queues for the baton.</summary>
    private static TResult OffTheHubsCpu<TState, TResult>(Func<TState, TResult> call, TState state)
    {
        var carrier = Carrier.ForCurrentThread();
        int cpu = carrier.PinnedCpu;
        if (cpu < 0) return call(state);
        carrier.PinTo(-1);
        try
        {
            return call(state);
        }
        finally
        {
            carrier.PinTo(cpu);
        }
    }
}
