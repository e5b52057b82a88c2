namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>The first pause of <see cref="PollUntil"/>; it doubles after every try.</summary>
    private static readonly TimeSpan FirstPollPause = TimeSpan.FromMilliseconds(1);

    /// <summary>The longest pause of <see cref="PollUntil"/>: a bound on the latency it adds, at about 50 tries a second.</summary>
    private static readonly TimeSpan LongestPollPause = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Parks with growing pauses (1 ms doubling to 20 ms) until <paramref name="done"/> returns true or
    /// <paramref name="timeout"/> elapses: for waits that .NET offers no completion signal for (<c>Thread.Join</c>,
    /// <c>Socket.Poll</c>). Other greenlets run during the pauses. Time is read from the hub's
    /// <see cref="HubOptions.TimeProvider"/>.
    /// </summary>
    /// <param name="done">Asked first at once, then after each pause; must not block.</param>
    /// <param name="timeout">How long to keep asking; null: until <paramref name="done"/> returns true (or a kill).</param>
    /// <returns>Whether <paramref name="done"/> returned true.</returns>
    /// <exception cref="InvalidOperationException">Not on a greenlet that may park.</exception>
    public static bool PollUntil(Func<bool> done, TimeSpan? timeout)
    {
        ArgumentNullException.ThrowIfNull(done);
        var time = Hub.Current.Options.TimeProvider;
        long start = time.GetTimestamp();
        var pause = FirstPollPause;
        while (true)
        {
            if (done()) return true;
            var left = timeout is { } t ? t - time.GetElapsedTime(start) : TimeSpan.MaxValue;
            if (left <= TimeSpan.Zero) return false;
            Green.Sleep(left < pause ? left : pause);
            if (pause < LongestPollPause) pause *= 2;
        }
    }
}
