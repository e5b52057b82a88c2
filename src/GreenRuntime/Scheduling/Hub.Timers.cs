using GreenRuntime.Scheduling;

namespace GreenRuntime;

public sealed partial class Hub
{
    private readonly TimerHeap _timers = new();

    internal int TimerCount => _timers.Count;

    /// <summary>A timer of this hub was cancelled (HubTimer.Cancel): see TimerHeap's sweep.</summary>
    internal void NoteTimerCancelled() => _timers.NoteCancelled();

    /// <summary>Runs <paramref name="callback"/> on the hub after <paramref name="delay"/>. Hub-only.</summary>
    internal HubTimer AddTimer(TimeSpan delay, Action<object?> callback, object? state)
    {
        AssertOnHub();
        long ticks = delay <= TimeSpan.Zero ? 0 : (long)Math.Min(long.MaxValue / 4, delay.TotalSeconds * _time.TimestampFrequency);
        return _timers.Add(_time.GetTimestamp() + ticks, callback, state);
    }

    /// <summary>A timer that wakes <paramref name="token"/>'s park with <paramref name="value"/> (used for timeouts).</summary>
    internal HubTimer AddWakeTimer(TimeSpan delay, WakeToken token, object? value = null, Exception? error = null) =>
        AddTimer(delay, s_wakeFromTimer, new TimerWake(token, value, error));

    private sealed record TimerWake(WakeToken Token, object? Value, Exception? Error);

    private static readonly Action<object?> s_wakeFromTimer = static state =>
    {
        var w = (TimerWake)state!;
        w.Token.Greenlet.Hub.TryWake(w.Token, w.Value, w.Error);
    };

    private void FireDueTimers()
    {
        long now = _time.GetTimestamp();
        HubTimer? timer;
        while ((timer = _timers.PopDue(now)) != null)
            RunCallback(static t => ((HubTimer)t!).Fire(), timer);
    }

    /// <summary>Marker value a timeout timer passes to the park it ends.</summary>
    internal static readonly object TimedOut = new();
}
