using System.Diagnostics;
using GreenRuntime.Scheduling;

namespace GreenRuntime.LowLevel;

/// <summary>
/// The right to resume one particular park of one greenlet (trio's <c>reschedule</c> target), returned by
/// <see cref="Parking.BeginPark"/>. Every park has exactly one wake: the first wake through any copy of the
/// token wins, and every later one (a timer racing an event, a kill racing a completion) does nothing and
/// reports <c>false</c>.
/// </summary>
/// <remarks>
/// <para>A token is a small value; copy it freely into waiter lists, callbacks or other threads. It names one
/// park only: once that park has ended, waking through the token is a no-op (<see cref="TryWake"/>) or an error
/// (<see cref="Wake"/>), never a wake of a later park of the same greenlet.</para>
/// <para>Where each member may be called: <see cref="TryWake"/>, <see cref="Wake"/> and
/// <see cref="TryWakeWithError"/> on the parked greenlet's hub (its greenlets, timers, callbacks);
/// <see cref="PostWake"/> and <see cref="PostWakeWithError"/> from any thread.</para>
/// </remarks>
[DebuggerDisplay("{ToString(),nq}")]
public readonly struct ParkToken : IEquatable<ParkToken>
{
    internal readonly WakeToken Inner;

    /// <summary>The wake comes from outside the hub: the park counts as an outstanding operation (no LoopExit meanwhile).</summary>
    internal readonly bool ForeignWake;

    internal ParkToken(WakeToken inner, bool foreignWake)
    {
        Inner = inner;
        ForeignWake = foreignWake;
    }

    /// <summary>The parked greenlet.</summary>
    /// <exception cref="InvalidOperationException">A default token, not one from <see cref="Parking.BeginPark"/>.</exception>
    public Greenlet Greenlet => Inner.Greenlet ?? throw DefaultToken();

    /// <summary>Whether the park this token names has not been woken yet (still waiting for its one wake).</summary>
    /// <remarks>Read it on the greenlet's hub: from another thread the answer may be stale by the time it is used.</remarks>
    public bool IsPending => Inner.Greenlet != null && Inner.IsCurrent;

    /// <summary>
    /// Resumes the park: <see cref="Parking.EndPark(in ParkToken)"/> returns <paramref name="value"/>. Hub-only.
    /// </summary>
    /// <returns>False, doing nothing, when the park was already woken (or has ended).</returns>
    /// <exception cref="InvalidOperationException">Called off the greenlet's hub (use <see cref="PostWake"/>), or a default token.</exception>
    public bool TryWake(object? value = null) => HubForWake().TryWake(Inner, value);

    /// <summary>Resumes the park with an exception that <see cref="Parking.EndPark(in ParkToken)"/> throws. Hub-only.</summary>
    /// <returns>False, doing nothing, when the park was already woken (or has ended).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="error"/> is null.</exception>
    /// <exception cref="InvalidOperationException">Called off the greenlet's hub (use <see cref="PostWakeWithError"/>), or a default token.</exception>
    public bool TryWakeWithError(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return HubForWake().TryWake(Inner, null, error);
    }

    /// <summary>
    /// Resumes the park, which the caller knows is still pending (it is the park's only waker). Hub-only.
    /// </summary>
    /// <exception cref="InvalidOperationException">The park was already woken or has ended (a second wake: every park has
    /// exactly one), called off the greenlet's hub, or a default token.</exception>
    public void Wake(object? value = null)
    {
        if (!TryWake(value))
            throw new InvalidOperationException($"The park of {Inner.Greenlet} named by this token was already woken or has ended: every park has exactly one wake. Use TryWake where several wakers race.");
    }

    /// <summary>
    /// Resumes the park from any thread: the wake goes through the hub's inbox, and is dropped there if the park was
    /// woken first by someone else. This is how a completion on a foreign thread (a callback of a .NET API, a
    /// native library) wakes a greenlet.
    /// </summary>
    /// <exception cref="InvalidOperationException">A default token.</exception>
    public void PostWake(object? value = null) => Greenlet.Hub.PostWake(Inner, value);

    /// <summary>Resumes the park from any thread with an exception that <see cref="Parking.EndPark(in ParkToken)"/> throws; see <see cref="PostWake"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="error"/> is null.</exception>
    /// <exception cref="InvalidOperationException">A default token.</exception>
    public void PostWakeWithError(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        Greenlet.Hub.PostWake(Inner, null, error);
    }

    /// <summary>Whether both tokens name the same park.</summary>
    public bool Equals(ParkToken other) => ReferenceEquals(Inner.Greenlet, other.Inner.Greenlet) && Inner.Sequence == other.Inner.Sequence;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is ParkToken other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Inner.Greenlet, Inner.Sequence);

    /// <summary>Whether both tokens name the same park.</summary>
    public static bool operator ==(ParkToken left, ParkToken right) => left.Equals(right);

    /// <summary>Whether the tokens name different parks.</summary>
    public static bool operator !=(ParkToken left, ParkToken right) => !left.Equals(right);

    /// <summary>Names the greenlet and the park.</summary>
    public override string ToString() => Inner.Greenlet is { } g ? $"<ParkToken {g} park #{Inner.Sequence}>" : "<ParkToken (default)>";

    private Hub HubForWake()
    {
        var hub = Greenlet.Hub;
        if (!hub.IsOnHubThread)
            throw new InvalidOperationException($"TryWake and Wake run on {hub} (its greenlets, timers and callbacks); from another thread use PostWake, which queues the wake in the hub's inbox.");
        return hub;
    }

    private static InvalidOperationException DefaultToken() =>
        new("This ParkToken is a default value; tokens come from Parking.BeginPark.");
}
