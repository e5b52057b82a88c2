namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>
    /// Whether the current greenlet can run a call with the hub's baton released (<see cref="RunReleased"/>): greenlet
    /// code that may park, on a stackful greenlet, with a carrier left to take over the hub meanwhile. Any thread.
    /// </summary>
    public static bool CanReleaseBaton => Hub.CurrentOrNull is { } hub && t_suppressed == 0 && hub.CanReleaseBaton;

    /// <summary>
    /// Whether the current greenlet can run a call with the baton released when a stand-in may run the hub meanwhile
    /// (<see cref="RunReleased"/> with <c>standIn: true</c>): <see cref="CanReleaseBaton"/>, or every carrier the hub may use
    /// (<see cref="HubOptions.MaxCarriers"/>) is taken but another greenlet is parked in an ordinary park, whose thread then
    /// runs the hub until that greenlet is resumed. Any thread.
    /// </summary>
    /// <remarks>For a wait that cannot be polled and that a greenlet of the same hub may end (<c>Monitor.Wait</c>, whose
    /// pulse is lost if it comes while nobody waits). A wait that can be polled should poll instead when
    /// <see cref="CanReleaseBaton"/> is false: it then keeps no thread blocked, whereas a stand-in's greenlet may be the one
    /// the blocked call waits for, and greenlets blocked in lock waits that took every stand-in leave none for the lock's
    /// holder when it must wait.</remarks>
    public static bool CanReleaseBatonToStandIn => Hub.CurrentOrNull is { } hub && t_suppressed == 0 && hub.CanReleaseBatonToStandIn;

    /// <summary>
    /// Runs a call that must really block (a contended lock, a native library's I/O) on the current greenlet's own
    /// thread with the hub's baton given away, so the other greenlets run meanwhile; the greenlet then queues for the
    /// baton like any woken one. Thread identity, thread-static state and lock ownership are kept (the GIL-release
    /// pattern). <see cref="Green.RunBlocking(Action)"/> is the everyday form.
    /// </summary>
    /// <param name="call">The blocking call. It runs concurrently with the hub's greenlets: it must only touch state it
    /// owns, and cannot use greenlet operations (they throw).</param>
    /// <param name="state">Passed to <paramref name="call"/>, so callers need no closure.</param>
    /// <param name="reason">What run-info reports the greenlet as waiting for meanwhile.</param>
    /// <param name="cancellationPoint">True (default): a kill or timeout already pending is thrown before the call starts,
    /// and one that arrives meanwhile as soon as it returns. False (entering a lock, whose holder must reach the code
    /// that releases it): both stay pending for the greenlet's next blocking point.</param>
    /// <param name="interruptible">A kill or timeout interrupts the call with <see cref="Thread.Interrupt"/>. Only for
    /// calls whose interrupted form leaves a consistent state (<see cref="Monitor.Wait(object, int)"/> throws after
    /// re-acquiring the monitor); never for arbitrary code.</param>
    /// <param name="standIn">When no carrier is free, hand the hub to the thread of a parked greenlet (see
    /// <see cref="CanReleaseBatonToStandIn"/>, which must then be true).</param>
    /// <returns>What <paramref name="call"/> returned; an exception it threw is rethrown.</returns>
    /// <exception cref="InvalidOperationException"><see cref="CanReleaseBaton"/> (with <paramref name="standIn"/>,
    /// <see cref="CanReleaseBatonToStandIn"/>) is false (check it first, and run the call directly when it is).</exception>
    public static TResult RunReleased<TState, TResult>(Func<TState, TResult> call, TState state, WaitReason reason, bool cancellationPoint = true, bool interruptible = false, bool standIn = false)
    {
        ArgumentNullException.ThrowIfNull(call);
        if (standIn ? !CanReleaseBatonToStandIn : !CanReleaseBaton)
            throw new InvalidOperationException("The baton cannot be released here (off a greenlet that may park, inside SuppressCooperation, or no carrier is left): check Parking.CanReleaseBaton and run the call directly when it is false.");
        return Hub.CurrentOrNull!.RunReleased(call, state, reason == WaitReason.None ? WaitReason.Blocking : reason, cancellationPoint, interruptible, standIn);
    }

    /// <summary>
    /// Makes a kill or an expired <see cref="GreenTimeout"/> that <see cref="RunReleased"/> raised as its call returned
    /// pending again, so that the current greenlet raises it at its next blocking point instead. For a call that acquired
    /// something just as the kill came and cannot give it back exactly: the caller returns what it acquired, as if the kill
    /// had come a moment later. A timeout that has ended meanwhile (its scope disposed) is not raised at all.
    /// </summary>
    /// <param name="exception">The exception <see cref="RunReleased"/> threw.</param>
    /// <exception cref="ArgumentNullException"><paramref name="exception"/> is null.</exception>
    /// <exception cref="InvalidOperationException">Not on a greenlet of a hub.</exception>
    public static void KeepPending(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var hub = Hub.CurrentOrNull ?? throw new InvalidOperationException("Parking.KeepPending is for greenlet code on a hub's thread.");
        hub.KeepPending(exception);
    }
}
