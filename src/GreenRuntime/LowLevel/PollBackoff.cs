namespace GreenRuntime.LowLevel;

/// <summary>
/// The pauses between polls of a wait that .NET gives no completion signal for (<c>Thread.Join</c>,
/// <c>Socket.Poll</c>/<c>Select</c>, the rounds of <c>WaitHandle.WaitAll</c>): 1 ms, doubling up to 20 ms.
/// <see cref="Parking.PollUntil"/> is built on it; use it directly for a poll loop of your own.
/// </summary>
/// <remarks>
/// Why these bounds: the first pauses are short so that a wait that ends soon ends soon; the cap keeps what a long
/// wait adds after its condition came true to at most 20 ms while bounding its cost to about 50 polls a second.
/// </remarks>
public struct PollBackoff
{
    /// <summary>The first pause.</summary>
    public static readonly TimeSpan First = TimeSpan.FromMilliseconds(1);

    /// <summary>The longest pause.</summary>
    public static readonly TimeSpan Max = TimeSpan.FromMilliseconds(20);

    private TimeSpan _pause;

    /// <summary>Starts at <see cref="First"/>.</summary>
    public PollBackoff() => _pause = First;

    /// <summary>The pause for this round: the current one, or <paramref name="left"/> if that is shorter.</summary>
    public readonly TimeSpan Next(TimeSpan left) => left < _pause ? left : _pause;

    /// <summary>Doubles the pause, up to <see cref="Max"/>.</summary>
    public void Grow() => _pause = _pause * 2 < Max ? _pause * 2 : Max;
}
