namespace GreenRuntime.Scheduling;

/// <summary>
/// The right to resume one particular park of one greenlet. Every park has exactly one wake: whoever
/// calls Hub.TryWake first with the token wins, and every
/// later attempt (a timeout racing an event, a kill racing a completion) returns false and does nothing.
/// </summary>
internal readonly struct WakeToken
{
    public readonly Greenlet Greenlet;
    public readonly int Sequence;

    public WakeToken(Greenlet greenlet, int sequence)
    {
        Greenlet = greenlet;
        Sequence = sequence;
    }

    /// <summary>Whether this is the default token, which names no park.</summary>
    public bool IsEmpty => Greenlet is null;

    /// <summary>Whether both tokens name the same park.</summary>
    public bool Names(in WakeToken other) => ReferenceEquals(Greenlet, other.Greenlet) && Sequence == other.Sequence;

    /// <summary>Whether this token still names the greenlet's current park.</summary>
    public bool IsCurrent => Greenlet.State == GreenletState.Parked && Greenlet.ParkSequence == Sequence;

    /// <summary>Whether a kill, timeout or interrupt ended this park and the greenlet has not run since: inside a native
    /// callback it parks again with this token (Hub.Parking.cs), so a waker of this park is not stale yet.</summary>
    public bool AwaitsCancellationVerdict =>
        Greenlet.CancellationWoke != CancellationWake.None && Greenlet.State == GreenletState.Ready && Greenlet.ParkSequence == Sequence;
}
