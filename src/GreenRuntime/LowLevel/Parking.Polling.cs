namespace GreenRuntime.LowLevel;

public static partial class Parking
{
    /// <summary>
    /// Parks with growing pauses (<see cref="PollBackoff"/>: 1 ms doubling to 20 ms) until <paramref name="done"/> returns true or
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
        var backoff = new PollBackoff();
        while (true)
        {
            if (done()) return true;
            var left = timeout is { } t ? t - time.GetElapsedTime(start) : TimeSpan.MaxValue;
            if (left <= TimeSpan.Zero) return false;
            Green.Sleep(backoff.Next(left));
            backoff.Grow();
        }
    }
}
